"""Gemma 3 4B (text) on a TPU v5e pod slice (v5litepod-256: 256 chips, 16 GiB HBM each).

The Gemma 2B launch (configs/train/tpu_v5e_2b.py: pure FSDP, 2 rows of 8192 per chip,
4.2M tokens per step) with the Gemma 3 4B language model: splash attention with a
1024-token local mask on 5 of every 6 layers, linear RoPE scaling (8) on the global ones,
the 262,208-row vocabulary through the chunked loss (32 chunks of 8194 rows), 5 scanned
repeats of the 6-layer pattern and 4 unrolled local layers, full remat. 4T tokens as in
the Gemma 3 report: 954k steps. `python -m pretrain.tools.aot
--config=configs/train/tpu_v5e_gemma3_4b.py` (2026-12-07): fits, 12.74 GiB of 15.75 GiB per
chip at the peak (bench/RESULTS.md).
"""

import ml_collections

from configs.models import gemma3_4b
from configs.train import tpu_v5e_2b


def get_config() -> ml_collections.ConfigDict:
    c = tpu_v5e_2b.get_config()
    c.model = gemma3_4b.get_config()
    c.model.update(dict(remat_policy="full", attention="splash", scan_layers=True, vocab_chunks=32))
    c.train.total_steps = 954_000
    c.optim.peak_lr = 2e-4
    return c
