"""Gemma 3 1B (text) on a TPU v5e pod slice (v5litepod-256: 256 chips, 16 GiB HBM each).

The Gemma 2B launch (configs/train/tpu_v5e_2b.py: 2 rows of 8192 per chip, 4.2M tokens per
step) with the Gemma 3 1B model, on a (data=2, fsdp=128) mesh: d_model 1152 is not a
multiple of 256, so pure FSDP over 256 chips cannot shard the weights' embed axis
(pretrain.sharding drops it) and every chip would hold all the weights, gradients and
AdamW moments (the compile needs 19.2 GiB of temporaries that way: RESOURCE_EXHAUSTED);
1152 = 9 x 128 shards over 128. The model: splash attention with a 512-token local
mask on 5 of every 6 layers (blocks outside the window are not visited), the 262,144-row
vocabulary through the chunked loss (32 chunks of 8192 rows: no [rows, 8192, 262144]
float32 logits), the 4 full repeats of the 6-layer pattern scanned and the 2 remaining
local layers unrolled. 2T tokens as in the Gemma 3 report: 477k steps.
`python -m pretrain.tools.aot --config=configs/train/tpu_v5e_gemma3_1b.py`: 9.83 GiB per
chip, 62.4% of HBM (bench/RESULTS.md, 2026-12-07).
"""

import ml_collections

from configs.models import gemma3_1b
from configs.train import tpu_v5e_2b


def get_config() -> ml_collections.ConfigDict:
    c = tpu_v5e_2b.get_config()
    c.model = gemma3_1b.get_config()
    c.model.update(dict(remat_policy="full", attention="splash", scan_layers=True, vocab_chunks=32))
    c.train.total_steps = 477_000
    c.mesh.update(dict(data=2, fsdp=-1, tensor=1))
    return c
