"""Gemma 3 1B (text) at 8192 tokens on one NVIDIA H100/H200 GPU (`:8` for eight, FSDP).

The Gemma 2B GPU launch (configs/train/gpu_2b.py: cuDNN flash attention in its packed
layout, scanned layers, 4 rows of 8192 per GPU, fp32 master weights, bf16 compute) with
the Gemma 3 1B model: cuDNN's sliding_window_length (512) on the local layers, on the
packed and the dense-mask path; the 262,144-row vocabulary through 8 vocabulary chunks.
Not run on a GPU yet (no GPU in the session that wrote it): bench/RESULTS.md.
XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 as for gpu_2b.
"""

import ml_collections

from configs.models import gemma3_1b
from configs.train import gpu_2b


def get_config(gpus: str = "1") -> ml_collections.ConfigDict:
    c = gpu_2b.get_config(gpus)
    execution = {
        k: c.model[k] for k in ("attention", "remat_policy", "scan_layers", "vocab_chunks", "max_documents")
    }
    c.model = gemma3_1b.get_config()
    c.model.update(execution)
    c.train.total_steps = 477_000
    return c
