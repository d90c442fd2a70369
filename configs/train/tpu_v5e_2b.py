"""Gemma 2B on a TPU v5e pod slice (v5litepod-256: 256 chips, 16 GiB HBM each).

Mesh: pure FSDP (data=1, fsdp=256, tensor=1). 2.5B fp32 params + AdamW moments are ~30 GB,
~120 MB per chip once sharded; MQA's single key/value head gives tensor parallelism
nothing to split, so every chip holds a batch shard instead (2 rows of 8192). 512 x 8192 =
4.2M tokens per step; 715k steps is ~3T tokens as in the report. Splash attention (no
8192 x 8192 scores), the chunked cross-entropy (no 8.4 GB of float32 logits per row),
scanned layers, and the remat policy `--config.model.remat_policy=auto` picks on this slice:
"matmul_outputs_but_mlp_inputs" (keep the attention projections and the MLP output,
recompute the MLP's input matmuls): 9.64 GiB per chip, 61% of HBM, 7% fewer executed
FLOPs than full remat (5.24 GiB); keeping the MLP's input pair too does not fit
(`python -m pretrain.tools.aot --config=configs/train/tpu_v5e_2b.py`; bench/RESULTS.md).
Launch with `python -m pretrain.launch` (README).
"""

import ml_collections

from configs.mixtures import gemma_anneal
from configs.models import gemma_2b
from configs.train import base


def get_config() -> ml_collections.ConfigDict:
    c = base.get_config()
    c.model = gemma_2b.get_config()
    c.model.update(
        dict(
            remat_policy="matmul_outputs_but_mlp_inputs",
            attention="splash",
            scan_layers=True,
            vocab_chunks=32,
        )
    )  # 32 chunks of 8004 rows: 0.5 GB of logits per chip
    c.mixture = gemma_anneal.get_config()
    c.data.packed_dir = "/mnt/disks/data/packed"  # mixtures.pack output, copied to each host's local disk
    c.data.tokenizer = "gs://YOUR_BUCKET/tokenizer/tokenizer.model"
    c.data.seq_len = 8192
    c.data.global_batch_size = 512
    c.train.total_steps = 715_000
    c.train.log_every = 50
    c.train.z_loss = 1e-4
    c.train.compilation_cache_dir = "gs://YOUR_BUCKET/xla_cache"
    c.optim.schedule = "wsd"
    c.optim.decay_start = "anneal"  # decay over the high-quality annealing stage
    c.optim.peak_lr = 3e-4
    c.optim.warmup_steps = 2_000
    c.checkpoint.every_steps = 1_000
    c.checkpoint.keep_last = 3
    c.checkpoint.keep_every = 50_000
    c.metrics.peak_flops = 197e12  # v5e bf16
    c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
    c.aot.topology = "v5e:16x16"  # python -m pretrain.tools.aot --config=configs/train/tpu_v5e_2b.py
    c.distributed.initialize = True
    return c
