"""Gemma 7B on a TPU v5e pod slice (v5litepod-256: 256 chips, 16 GiB HBM each).

Mesh: pure FSDP, fsdp=256. 8.5B fp32 params + AdamW moments are ~100 GB, ~0.4 GB per chip
once sharded. Each chip holds 2 of the 512 rows; with splash attention, the chunked loss,
scanned layers and full rematerialisation the compiled step needs 12.1 GiB per chip (77%
of 15.75 GiB; `python -m pretrain.tools.aot --config=configs/train/tpu_v5e_7b.py`, figures in
bench/RESULTS.md). tensor=4 would put 8 rows on each chip group and its 28 saved
[8, 8192, 3072] bf16 residuals alone would take 10.5 GiB. 512 x 8192 = 4.2M tokens per step;
1.43M steps is ~6T tokens as in the report. Launch with `python -m pretrain.launch` (README).
"""

import ml_collections

from configs.models import gemma_7b
from configs.train import tpu_v5e_2b


def get_config() -> ml_collections.ConfigDict:
    c = tpu_v5e_2b.get_config()
    c.model = gemma_7b.get_config()
    c.model.update(dict(remat_policy="full", attention="splash", scan_layers=True, vocab_chunks=32))
    c.train.total_steps = 1_430_000
    c.optim.peak_lr = 2e-4
    c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
    return c
