"""Gemma 2 2B on a TPU v5e pod slice (v5litepod-256: 256 chips, 16 GiB HBM each).

The Gemma 2B launch (configs/train/tpu_v5e_2b.py: pure FSDP over 256 chips, 2 rows of
8192 per chip, 512 x 8192 = 4.2M tokens per step, WSD schedule, the anneal mixture) with
the Gemma 2 2B model: splash attention with its local mask on the 13 sliding-window layers
(4096 of 8192 tokens) and the attention-logit soft-cap in the kernel, the final-logit
soft-cap inside the chunked loss (32 chunks of 8000 rows), scanned over the 13 repeats of
(local, global). 2T tokens as in the Gemma 2 report: 477k steps.
`python -m pretrain.tools.aot --config=configs/train/tpu_v5e_gemma2_2b.py`: 6.53 GiB per
chip, 41.5% of HBM (bench/RESULTS.md, 2026-12-07).
"""

import ml_collections

from configs.models import gemma2_2b
from configs.train import tpu_v5e_2b


def get_config() -> ml_collections.ConfigDict:
    c = tpu_v5e_2b.get_config()
    c.model = gemma2_2b.get_config()
    c.model.update(dict(remat_policy="full", attention="splash", scan_layers=True, vocab_chunks=32))
    c.train.total_steps = 477_000
    return c
