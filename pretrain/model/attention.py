"""Causal, document-masked attention cores, one per backend, selected by `config.model.attention`.

All take query [B, T, N, H] (already scaled by 1/sqrt(H) and rotated), key and value
[B, S, K, H] with K dividing N (query head i reads key/value head i // (N/K)) and
segment ids [B, T] (packed documents; a token attends only to earlier tokens of its own
document), and return [B, T, N, H] in the value dtype.

- "xla": the reference. Materialises [B, T, K, G, S] float32 scores: fine on CPU and for
  short rows, 4 GiB per sequence and layer for Gemma 2B at 8192 tokens.
- "splash": the Pallas TPU splash-attention kernel (flash attention with block-sparse
  masks): the causal mask is static, the document mask comes from the segment ids, and
  no T x S array exists forward or backward. Runs inside `shard_map` over the mesh axes
  the logical rules give the batch and heads. Off TPU (the mesh's platform, or the default
  backend without a mesh) it runs in Pallas interpret mode: slow, for tests on CPU.
- "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, cuDNN's fused flash
  attention on NVIDIA GPUs; documents are separated by a boolean [B, 1, T, S] mask
  (one byte per pair, not float scores). The same call with `implementation=None` is the
  XLA path, which is how it is tested on CPU.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from pretrain.model import layers

# Large negative logit for masked positions; finite so fully masked rows cannot make NaNs.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
IMPLEMENTATIONS = ("xla", "splash", "cudnn")
SPLASH_LANES = 128  # splash tiles are multiples of this; other lengths take the dense path


def attention_mask(segment_ids: jax.Array) -> jax.Array:
    """[B, L, L] boolean: causal by index and only within the same document (segment)."""
    length = segment_ids.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))
    same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
    return causal[None] & same_segment


def attend(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    segment_ids: jax.Array,
    implementation: str,
    dtype: jnp.dtype,
) -> jax.Array:
    """Dispatches to the selected core; see the module docstring."""
    if implementation == "xla":
        return xla_attention(query, key, value, segment_ids, dtype)
    if implementation == "splash":
        if query.shape[1] % SPLASH_LANES:  # e.g. the 8-token rows that init traces: same maths
            return xla_attention(query, key, value, segment_ids, dtype)
        return splash_attention(query, key, value, segment_ids)
    if implementation == "cudnn":
        return cudnn_attention(query, key, value, segment_ids)
    raise ValueError(f"unknown attention implementation {implementation!r} (known: {IMPLEMENTATIONS})")


def xla_attention(query, key, value, segment_ids, dtype):
    """Dense attention: grouped einsums accumulating in float32, softmax in float32."""
    b, t, n, h = query.shape
    k = key.shape[2]
    grouped = query.reshape(b, t, k, n // k, h)
    logits = layers.einsum("BTKGH,BSKH->BTKGS", grouped, key, dtype, jnp.float32)
    logits = jnp.where(attention_mask(segment_ids)[:, :, None, None, :], logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
    return layers.einsum("BTKGS,BSKH->BTKGH", probs, value, dtype).reshape(b, t, n, h)


def cudnn_attention(query, key, value, segment_ids, implementation: str | None = "cudnn"):
    """jax.nn.dot_product_attention with causal + document masking (query pre-scaled)."""
    same_document = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    return jax.nn.dot_product_attention(
        query, key, value, mask=same_document, scale=1.0, is_causal=True, implementation=implementation
    )


def splash_attention(query, key, value, segment_ids, *, interpret: bool | None = None, block: int = 512):
    """Pallas splash attention, sharded over batch (and heads) with shard_map.

    The mesh is the one set by `jax.set_mesh` (the train step compiles under it); without
    one (a single device) the kernel runs unsharded. The query/key tile is the largest
    multiple of 128 up to `block` that divides the sequence length. `interpret` None: see
    the module docstring.
    """
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    t, n, k = query.shape[1], query.shape[2], key.shape[2]
    tiles = [b for b in range(SPLASH_LANES, block + 1, SPLASH_LANES) if t % b == 0]
    if not tiles:
        raise ValueError(
            f"splash attention needs the sequence length ({t}) to be a multiple of {SPLASH_LANES}"
        )
    tile = tiles[-1]
    sizes = splash.BlockSizes(
        block_q=tile,
        block_kv=tile,
        block_kv_compute=tile,
        block_q_dkv=tile,
        block_kv_dkv=tile,
        block_kv_dkv_compute=tile,
        block_q_dq=tile,
        block_kv_dq=tile,
    )
    mesh = jax.sharding.get_abstract_mesh()
    if interpret is None:  # the compile target's platform: TPU even when compiling on a CPU host
        platform = (
            None if mesh.empty else getattr(mesh.abstract_device, "platform", None)
        ) or jax.default_backend()
        interpret = platform != "tpu"
    batch_axes, head_axes = nn.logical_to_mesh_axes(("activation_batch", "activation_heads"))
    if mesh.empty:
        batch_axes = head_axes = None
    elif head_axes is not None and k % _axis_size(mesh, head_axes):
        head_axes = None  # e.g. one key/value head: heads stay whole on every device
    local_heads = n // (_axis_size(mesh, head_axes) if head_axes else 1)
    local_kv = k // (_axis_size(mesh, head_axes) if head_axes else 1)

    def local(q, kk, v, seg):
        # One kernel per (row, key/value head) over that head's group of query heads.
        group = local_heads // local_kv
        mask = splash.MultiHeadMask([splash.CausalMask((t, t))] * group)
        kernel = splash.make_splash_mqa(
            mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret
        )
        b = q.shape[0]
        qg = q.reshape(b, t, local_kv, group, q.shape[-1]).transpose(0, 2, 3, 1, 4)  # B K G T H
        kt, vt = kk.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # B K S H
        ids = splash.SegmentIds(q=seg, kv=seg)

        def one(qh, kh, vh, s):
            return kernel(qh, kh, vh, segment_ids=s)

        per_head = jax.vmap(one, in_axes=(0, 0, 0, None))  # over key/value heads
        out = jax.vmap(per_head, in_axes=(0, 0, 0, 0))(qg, kt, vt, ids)  # over rows
        return out.transpose(0, 3, 1, 2, 4).reshape(q.shape).astype(v.dtype)

    if mesh.empty:
        return local(query, key, value, segment_ids)
    qkv_spec = P(batch_axes, None, head_axes, None)
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(qkv_spec, qkv_spec, qkv_spec, P(batch_axes, None)),
        out_specs=qkv_spec,
        check_vma=False,
    )(query, key, value, segment_ids)


def _axis_size(mesh, axes) -> int:
    names = axes if isinstance(axes, tuple) else (axes,)
    return functools.reduce(lambda a, name: a * mesh.shape[name], names, 1)
