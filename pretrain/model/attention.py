"""Causal, document-masked attention cores, one per backend, selected by `config.model.attention`.

All take query [B, T, N, H] (already scaled and rotated), key and value [B, S, K, H]
with K dividing N (query head i reads key/value head i // (N/K)) and segment ids [B, T]
(packed documents; a token attends only to earlier tokens of its own document), and
return [B, T, N, H] in the value dtype. Two options every core honours (Gemma 2/3):
`window` > 0 (a local layer: a token sees itself and the window - 1 tokens before it,
Hugging Face's `sliding_window`) and `softcap` > 0 (attention logits become
softcap * tanh(logits / softcap) before the mask, Gemma 2).

- "xla": the reference. Materialises [B, T, K, G, S] float32 scores: fine on CPU and for
  short rows, 4 GiB per sequence and layer for Gemma 2B at 8192 tokens.
- "splash": the Pallas TPU splash-attention kernel (flash attention with block-sparse
  masks): the causal mask is static, the document mask comes from the segment ids, and
  no T x S array exists forward or backward. A window is splash's LocalMask (left
  window - 1, right 0: causal), so blocks wholly outside it are not visited. Runs inside `shard_map` over the mesh axes
  the logical rules give the batch and heads. Off TPU (the mesh's platform, or the default
  backend without a mesh) it runs in Pallas interpret mode: slow, for tests on CPU.
- "cudnn": cuDNN's fused flash attention on NVIDIA GPUs in its packed (ragged) layout:
  each row's documents become (offset, length) pairs and cuDNN's causal mask applies per
  document, so the kernel visits only the blocks on or below each document's diagonal
  (Hopper and later). Rows holding more than `max_documents` documents, and older GPUs,
  take `jax.nn.dot_product_attention` with a dense boolean [B, 1, T, S] document mask,
  which cuDNN turns into a bias it reads for every block (bench/RESULTS.md, GPU: one
  layer's forward + backward at 4 x 8192 tokens takes 19.6 ms that way, 10.4 ms packed
  with one document per row, 4.8 ms with ~1.2k-token documents).
  A window is cuDNN's sliding_window_length on both paths (jax.nn's local_window_size
  on the dense one). jax.nn.dot_product_attention has no logit soft-cap, so `softcap`
  (Gemma 2) takes the "xla" core under "cudnn".
  The dense call with `implementation=None` is the XLA path, which is how the dense
  branch is tested on CPU; the packed branch is tested on CPU against `ragged_reference`,
  an XLA statement of what cuDNN computes from the same offsets and lengths.

Decoding (pretrain.model.kv_cache) attends a step's queries to a KV cache with the "xla"
core's maths (`masked_attention`) under `cache_mask`; its prefill takes the selected core.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from pretrain.model import layers

# Large negative logit for masked positions; finite so fully masked rows cannot make NaNs.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
IMPLEMENTATIONS = ("xla", "splash", "cudnn")
SPLASH_LANES = 128  # splash tiles are multiples of this; other lengths take the dense path


def attention_mask(segment_ids: jax.Array, window: int = 0) -> jax.Array:
    """[B, L, L] boolean: causal by index, only within the same document (segment), and
    with `window` > 0 only the last `window` positions (the query's own included)."""
    length = segment_ids.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))
    if window:
        causal = causal & ~jnp.tril(jnp.ones((length, length), dtype=jnp.bool_), -window)
    same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
    return causal[None] & same_segment


def attend(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    segment_ids: jax.Array,
    implementation: str,
    dtype: jnp.dtype,
    max_documents: int = 16,
    window: int = 0,
    softcap: float = 0.0,
) -> jax.Array:
    """Dispatches to the selected core; see the module docstring."""
    if implementation == "xla" or (implementation == "cudnn" and softcap):
        return xla_attention(query, key, value, segment_ids, dtype, window, softcap)
    if implementation == "splash":
        if query.shape[1] % SPLASH_LANES:  # e.g. the 8-token rows that init traces: same maths
            return xla_attention(query, key, value, segment_ids, dtype, window, softcap)
        return splash_attention(query, key, value, segment_ids, window=window, softcap=softcap)
    if implementation == "cudnn":
        return cudnn_attention(query, key, value, segment_ids, max_documents, window=window)
    raise ValueError(f"unknown attention implementation {implementation!r} (known: {IMPLEMENTATIONS})")


def cache_mask(
    segment_ids: jax.Array,
    positions: jax.Array,
    cache_segment_ids: jax.Array,
    cache_positions: jax.Array,
    column: jax.Array,
    window: int = 0,
) -> jax.Array:
    """[B, T, S] boolean for T query tokens at buffer columns [column, column + T) over a
    cache of S columns (decoding): causal by column, only within the same segment (so left
    padding, segment 0, is never read by a prompt), and with `window` > 0 only keys fewer
    than `window` positions back (within a segment the same as `attention_mask`'s by index)."""
    columns = column + jnp.arange(segment_ids.shape[1])
    causal = jnp.arange(cache_segment_ids.shape[1])[None, :] <= columns[:, None]
    mask = causal[None] & (segment_ids[:, :, None] == cache_segment_ids[:, None, :])
    if window:
        mask &= positions[:, :, None] - cache_positions[:, None, :] < window
    return mask


def xla_attention(query, key, value, segment_ids, dtype, window: int = 0, softcap: float = 0.0):
    """Dense attention: grouped einsums accumulating in float32, softmax in float32."""
    return masked_attention(query, key, value, attention_mask(segment_ids, window), dtype, softcap)


def masked_attention(query, key, value, mask, dtype, softcap: float = 0.0):
    """`xla_attention` under any [B, T, S] boolean mask: the training core's maths, and the
    decoding one's over a KV cache (`cache_mask`)."""
    b, t, n, h = query.shape
    k = key.shape[2]
    grouped = query.reshape(b, t, k, n // k, h)
    logits = layers.einsum("BTKGH,BSKH->BTKGS", grouped, key, dtype, jnp.float32)
    if softcap:
        logits = softcap * jnp.tanh(logits / softcap)
    logits = jnp.where(mask[:, :, None, None, :], logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
    return layers.einsum("BTKGS,BSKH->BTKGH", probs, value, dtype).reshape(b, t, n, h)


def cudnn_attention(
    query,
    key,
    value,
    segment_ids,
    max_documents: int = 16,
    packed_kernel: Callable | None = None,
    dense_implementation: str | None = "cudnn",
    window: int = 0,
):
    """cuDNN flash attention over packed documents; see the module docstring.

    `packed_kernel` is the ragged-layout call, (q, k, v, offsets, lengths, window) -> out
    (default: cuDNN's when the GPU supports it, else none and every row takes the
    dense-mask call); tests on CPU pass `ragged_reference` and `dense_implementation=None` (XLA).
    """
    packed_kernel = packed_kernel or _cudnn_packed_kernel()

    def dense(q, k, v):
        return dense_mask_attention(q, k, v, segment_ids, dense_implementation, window)

    if packed_kernel is None or max_documents < 2:
        return dense(query, key, value)
    offsets, lengths, counts = document_layout(segment_ids, max_documents)

    def packed(q, k, v):
        return packed_kernel(q, k, v, offsets, lengths, window)

    return jax.lax.cond(jnp.all(counts <= max_documents), packed, dense, query, key, value)


def document_layout(segment_ids: jax.Array, max_documents: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Each row's runs of equal segment ids as cuDNN's packed layout wants them.

    Returns offsets int32 [B, M + 1] (the first position of each run, -1 after the last),
    lengths int32 [B, M] (each run's length, -1 after the last) and the number of runs per
    row [B]; M = `max_documents`, and a row with more runs than M is not described (the
    caller checks the counts). A run of padding (id 0) is a document of its own, exactly
    as the segment-id mask treats it.
    """
    b, t = segment_ids.shape
    starts = jnp.concatenate([jnp.ones((b, 1), jnp.bool_), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    counts = jnp.sum(starts, axis=1, dtype=jnp.int32)

    def row(is_start):
        first = jnp.nonzero(is_start, size=max_documents + 1, fill_value=t)[0].astype(jnp.int32)
        lengths = first[1:] - first[:-1]
        used = first[:-1] < t
        return jnp.where(used, first[:-1], -1), jnp.where(used, lengths, -1)

    offsets, lengths = jax.vmap(row)(starts)
    offsets = jnp.concatenate([offsets, jnp.full((b, 1), -1, jnp.int32)], axis=1)
    return offsets, lengths, counts


def ragged_reference(query, key, value, offsets, lengths, window: int = 0):
    """What cuDNN's packed causal call computes from (offsets, lengths), in dense XLA.

    Position s is visible from t when one run holds both and s <= t; positions in no run
    see nothing (cuDNN leaves them unwritten: they do not occur in `document_layout`'s
    output, which covers every position of a described row).
    """
    t = query.shape[1]
    pos = jnp.arange(t)
    starts, ends = offsets[:, :-1], offsets[:, :-1] + lengths
    valid = offsets[:, :-1] >= 0
    member = valid[:, :, None] & (pos >= starts[:, :, None]) & (pos < ends[:, :, None])  # [B, M, T]
    run = jnp.argmax(member, axis=1) + jnp.where(jnp.any(member, axis=1), 0, -t)  # [B, T]; < 0: none
    segment = jnp.where(run >= 0, run + 1, -(pos + 1))  # positions in no run see only themselves
    return xla_attention(query, key, value, segment, value.dtype, window)


def dense_mask_attention(
    query, key, value, segment_ids, implementation: str | None = "cudnn", window: int = 0
):
    """jax.nn.dot_product_attention with causal + document masking (query pre-scaled) and,
    with `window`, its local window (left window - 1, right 0; cuDNN: sliding_window_length)."""
    same_document = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    return jax.nn.dot_product_attention(
        query,
        key,
        value,
        mask=same_document,
        scale=1.0,
        is_causal=True,
        local_window_size=(window - 1, 0) if window else None,
        implementation=implementation,
    )


@functools.cache
def _cudnn_packed_kernel() -> Callable | None:
    """cuDNN's packed-layout attention, or None where it cannot run (no CUDA, pre-Hopper).

    `jax.nn.dot_product_attention` does not expose the packed layout; the module it
    dispatches to does (jax._src.cudnn.fused_attention_stablehlo, the same call JAX's
    own sequence-packing tests make).
    """
    device = jax.devices()[0]
    if device.platform != "gpu" or float(getattr(device, "compute_capability", "0")) < 9.0:
        return None
    from jax._src.cudnn import fused_attention_stablehlo as cudnn

    def kernel(query, key, value, offsets, lengths, window):
        return cudnn.dot_product_attention(
            query,
            key,
            value,
            q_seqlen=lengths,
            kv_seqlen=lengths,
            q_offsets=offsets,
            kv_offsets=offsets,
            scale=1.0,
            mask_type=cudnn.MaskType.PADDING_CAUSAL,
            sliding_window_length=window or None,
        )

    return kernel


def splash_attention(
    query,
    key,
    value,
    segment_ids,
    *,
    interpret: bool | None = None,
    block: int = 512,
    window: int = 0,
    softcap: float = 0.0,
):
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
        kernel = splash.make_splash_mqa(
            splash.MultiHeadMask([splash_mask(t, window)] * group),
            block_sizes=sizes,
            head_shards=1,
            q_seq_shards=1,
            attn_logits_soft_cap=softcap or None,
            interpret=interpret,
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


def splash_mask(length: int, window: int = 0):
    """Splash's causal mask, or with `window` its LocalMask (window - 1 back, none ahead),
    which is causal too and whose block mask omits the blocks wholly outside the window."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    if window:
        return splash.LocalMask((length, length), window_size=(window - 1, 0), offset=0)
    return splash.CausalMask((length, length))


def _axis_size(mesh, axes) -> int:
    names = axes if isinstance(axes, tuple) else (axes,)
    return functools.reduce(lambda a, name: a * mesh.shape[name], names, 1)
