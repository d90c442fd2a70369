"""Training FLOPs per token and the per-device peak used for MFU.

Counting follows PaLM (Chowdhery et al. 2022, appendix B) as MaxText does: 6 FLOPs per
matmul parameter per token (forward 2 + backward 4) plus causal self-attention,
QK^T and AV each 2*L*H*hd per token forward, halved by the causal mask, times 3 for
training. A local (sliding-window) layer of Gemma 2/3 attends to at most W keys: its
tokens see W - W^2 / (2L) keys on average instead of L / 2 (the same integral over the
row), so MFU counts only the attention a window leaves. Embedding lookups are not
matmuls; the tied output projection is.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp

# Dense bf16 peak FLOP/s per device, from the vendors' data sheets.
PEAK_FLOPS = {
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v4": 275e12,
    "TPU v6 lite": 918e12,  # Trillium
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
}


@dataclasses.dataclass(frozen=True)
class Shape:
    """The dimensions that decide the FLOP count of a Gemma-style decoder."""

    num_layers: int
    embed_dim: int
    hidden_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    local_layers: int = 0  # of num_layers, those with sliding-window attention
    sliding_window: int = 0


def shape_of(model_config: Any) -> Shape:
    """The Shape of a pretrain.model TransformerConfig (or anything with the same fields)."""
    fields = [f.name for f in dataclasses.fields(Shape) if f.name != "local_layers"]
    kinds = getattr(model_config, "layer_kinds", ())
    return Shape(
        **{name: getattr(model_config, name, 0) for name in fields},
        local_layers=sum(kind == "local" for kind in kinds),
    )


def attended_keys(s: Shape, seq_len: int) -> float:
    """Keys per query token summed over the layers: L / 2 per global layer (causal), and
    W - W^2 / (2L) per local layer with window W < L (the mean of min(t, W) over the row)."""
    window = min(s.sliding_window, seq_len) if s.local_layers else seq_len
    local = window - window**2 / (2 * seq_len)
    return (s.num_layers - s.local_layers) * seq_len / 2 + s.local_layers * local


def matmul_params(s: Shape) -> int:
    """Parameters that take part in a matmul per token (attention, GeGLU MLP, logits)."""
    attn = s.embed_dim * s.head_dim * (2 * s.num_heads + 2 * s.num_kv_heads)
    mlp = 3 * s.embed_dim * s.hidden_dim
    return s.num_layers * (attn + mlp) + s.embed_dim * s.vocab_size


def train_flops_per_token(s: Shape, seq_len: int) -> float:
    """Forward + backward FLOPs for one token in a causal sequence of `seq_len`."""
    attention = 12 * s.num_heads * s.head_dim * attended_keys(s, seq_len)  # 3 * 4 H hd keys
    return 6 * matmul_params(s) + attention


def executed_train_flops_per_token(s: Shape, seq_len: int, remat_policy: str, vocab_chunks: int) -> float:
    """`train_flops_per_token` plus the recomputation the step actually runs.

    Rematerialisation reruns the blocks' forward pass ("full"), their attention core
    ("matmul_outputs": the core's residuals are not among the kept names), or that and the
    MLP's two input matmuls ("matmul_outputs_but_mlp_inputs"); the chunked
    cross-entropy recomputes the output layer's logits in the backward pass. Used by
    pretrain.tools.aot because XLA's cost analysis counts a loop body (nn.scan over layers, the
    vocabulary-chunk scan) once and a Pallas kernel as nothing.
    """
    attention_forward = 4 * s.num_heads * s.head_dim * attended_keys(s, seq_len)
    blocks_forward = 2 * (matmul_params(s) - s.embed_dim * s.vocab_size) + attention_forward
    mlp_inputs_forward = 2 * s.num_layers * 2 * s.embed_dim * s.hidden_dim
    recompute = {
        "full": blocks_forward,
        "matmul_outputs": attention_forward,
        "matmul_outputs_but_mlp_inputs": attention_forward + mlp_inputs_forward,
    }
    extra = recompute.get(remat_policy, 0)
    if vocab_chunks:
        extra += 2 * s.embed_dim * s.vocab_size
    return train_flops_per_token(s, seq_len) + extra


def peak_flops_per_device(dtype: jnp.dtype = jnp.bfloat16) -> tuple[float, str]:
    """(peak FLOP/s, where it came from) for jax.devices()[0].

    Accelerators use the table; a CPU has no meaningful data-sheet peak, so square
    matmuls accumulating in float32, as the model's do (pretrain.model.layers.einsum),
    are timed once in the activation dtype and in float32, and the faster stands in for
    the peak.
    """
    device = jax.devices()[0]
    kind = device.device_kind
    for name, peak in PEAK_FLOPS.items():
        if name in kind:
            return peak, f"table[{name}]"
    if device.platform != "cpu":
        raise ValueError(
            f"no peak FLOP/s known for device kind {kind!r}; add it to "
            "pretrain.flops.PEAK_FLOPS or set config.metrics.peak_flops"
        )
    return max(matmul_probe(dtype), matmul_probe(jnp.float32)), "cpu matmul probe"


def matmul_probe(dtype: jnp.dtype, n: int = 2048, repeats: int = 12) -> float:
    """Best observed FLOP/s of an n x n x n matmul, float32-accumulated, on the first device.

    The best of many short trials: on a shared machine a few trials can all land on a
    busy moment, making the "peak" too low and MFU above 100% (it happened with 3).
    """
    a = jnp.ones((n, n), dtype)
    matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best
