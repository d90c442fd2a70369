"""Gemma 2 2B at 8192 tokens on one NVIDIA H100/H200 GPU (`:8` for eight, FSDP).

The Gemma 2B GPU launch (configs/train/gpu_2b.py) with the Gemma 2 2B model. cuDNN (through
jax.nn.dot_product_attention) has no attention-logit soft-cap, so Gemma 2's attention runs
on the "xla" core: [rows, 8192, heads, 8192] float32 scores per layer, which only fit with
fewer rows; this config takes 1 row of 8192 per GPU and full remat. The final-logit
soft-cap goes through the chunked loss (8 chunks). Not run on a GPU yet: bench/RESULTS.md.
"""

import ml_collections

from configs.models import gemma2_2b
from configs.train import gpu_2b


def get_config(gpus: str = "1") -> ml_collections.ConfigDict:
    c = gpu_2b.get_config(gpus)
    c.model = gemma2_2b.get_config()
    c.model.update(dict(attention="xla", remat_policy="full", scan_layers=True, vocab_chunks=8))
    c.data.global_batch_size = int(gpus)
    c.train.total_steps = 477_000
    return c
