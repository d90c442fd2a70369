"""The CPU demo run with the tiny Gemma 2 (configs/models/tiny.py): local layers with a
64-token window alternate with global ones over 256-token rows, attention and final
logits soft-capped, post-norms. Same as `--config=configs/train/demo_tiny_cpu.py:gemma2`.
"""

import ml_collections

from configs.train import demo_tiny_cpu


def get_config() -> ml_collections.ConfigDict:
    return demo_tiny_cpu.get_config("gemma2")
