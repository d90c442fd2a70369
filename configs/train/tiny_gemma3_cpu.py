"""The CPU demo run with the tiny Gemma 3 (configs/models/tiny.py): 6 layers, 5 local
(64-token window over 256-token rows) then 1 global, query/key norms, post-norms, RoPE
bases 10k (local) and 1M with linear scaling 8 (global). Same as
`--config=configs/train/demo_tiny_cpu.py:gemma3`.
"""

import ml_collections

from configs.train import demo_tiny_cpu


def get_config() -> ml_collections.ConfigDict:
    return demo_tiny_cpu.get_config("gemma3")
