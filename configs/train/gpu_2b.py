"""Gemma 2B at 8192 tokens on NVIDIA H100/H200 GPUs of one node: `--config=configs/train/gpu_2b.py`
for one GPU, `--config=configs/train/gpu_2b.py:8` for eight (FSDP over the node, one process).

cuDNN flash attention in its packed layout (only each document's causal blocks are
computed), scanned layers, every projection's output kept for the backward pass
(`remat_policy="matmul_outputs"`: only norms, RoPE, the activation and the attention core
are recomputed), the chunked loss in 8 vocabulary chunks, fp32 master weights, bf16
compute, 4 rows of 8192 tokens per GPU. On one H200 (bench/RESULTS.md, GPU, 2026-12-04):
30.2k tokens/s, 51.4% MFU on rows packed with ~1.2k-token documents; 26.9k tokens/s on one
document per row; 1.42x transformers' GemmaForCausalLM in the same runs.

Per-GPU memory at 4 rows: weights 10.2 GB fp32 + AdamW moments 20.5 GB + gradients 10.2 GB
(each divided by the GPU count under FSDP), kept activations ~79 KB per token and layer in
bf16 (18 x 32768 tokens: 46 GB), one 32k-column float32 logits chunk 4.3 GB. Measured peak
on one H200: 93.2 GiB. An 80 GB H100 does not hold that: pass
`--config.model.remat_policy=auto` (the least recomputation that fits, chosen by compiling;
here "matmul_outputs_but_mlp_inputs", 56.7 GiB and 27.5k tokens/s on the H200) or fewer rows.
Eight GPUs hold 4 rows each with the state sharded: ~57 GB per GPU (estimate, not measured).
JAX preallocates 75% of GPU memory unless told otherwise: run with
XLA_PYTHON_CLIENT_MEM_FRACTION=0.95.
"""

import ml_collections

from configs.train import tpu_v5e_2b

ROWS_PER_GPU = 4


def get_config(gpus: str = "1") -> ml_collections.ConfigDict:
    c = tpu_v5e_2b.get_config()
    c.model.update(
        dict(
            attention="cudnn",
            remat_policy="matmul_outputs",
            scan_layers=True,
            vocab_chunks=8,
            max_documents=16,
        )
    )
    c.data.packed_dir = ""  # --config.data.packed_dir=PACKED (or --config.data.synthetic=True)
    c.data.tokenizer = ""
    c.data.global_batch_size = ROWS_PER_GPU * int(gpus)
    c.train.compilation_cache_dir = ""
    c.metrics.peak_flops = 989e12  # H100/H200 SXM dense bf16, data sheet
    c.mesh.update(dict(data=1, fsdp=-1, tensor=1))  # one process sees every GPU of the node
    c.aot.topology = ""
    c.distributed.initialize = False
    return c
