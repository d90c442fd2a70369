"""Gemma 7B at 8192 tokens on one node of 8 NVIDIA H100/H200 GPUs, FSDP over the node:
`--config=configs/train/gpu_7b.py`.

Same choices as configs/train/gpu_2b.py (packed cuDNN attention, scanned layers, chunked
loss, fp32 master weights, bf16 compute) with 2 rows of 8192 tokens per GPU, keeping the
attention's projections and the MLP's output and recomputing the MLP's two input matmuls
(`remat_policy="matmul_outputs_but_mlp_inputs"`). Not yet run on GPUs; CI runs its sharded
step, model shrunk, on 8 simulated CPU devices (tests/pretrain/test_gpu_configs.py).

Per-GPU memory (estimate): 8.5B parameters sharded 8 ways: weights 4.3 GB fp32 + AdamW
moments 8.5 GB + gradients 4.3 GB; kept activations ~43 KB per token and layer in bf16
(MHA: 16 query and 16 key/value heads of 256), 28 x 16384 tokens = 20 GB; one layer's MLP
recompute 1.6 GB and one 32k-column float32 logits chunk 2.1 GB. About 42 GB per GPU, so an
80 GB H100 holds it. `--config.model.remat_policy=auto` chooses by compiling instead.
"""

import ml_collections

from configs.models import gemma_7b
from configs.train import gpu_2b

GPUS, ROWS_PER_GPU = 8, 2


def get_config() -> ml_collections.ConfigDict:
    c = gpu_2b.get_config(str(GPUS))
    c.model = gemma_7b.get_config()
    c.model.update(
        dict(
            attention="cudnn",
            remat_policy="matmul_outputs_but_mlp_inputs",
            scan_layers=True,
            vocab_chunks=8,
            max_documents=16,
        )
    )
    c.data.global_batch_size = GPUS * ROWS_PER_GPU
    c.train.total_steps = 1_430_000
    c.optim.peak_lr = 2e-4
    return c
