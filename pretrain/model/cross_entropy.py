"""Per-token cross-entropy of the tied output layer, with or without full-vocabulary logits.

`token_losses(logits, targets)` is the reference: it needs the [B, T, V] float32 logits,
8.4 GB per 8192-token row at Gemma's 256,128-entry vocabulary. `chunked_token_losses`
computes the same (cross-entropy, log-normaliser) pair from the final hidden states and
the embedding without ever holding more than one vocabulary chunk of logits: forward
keeps a running log-sum-exp over chunks; backward recomputes each chunk's logits from
the saved log-normaliser (custom VJP), so the softmax gradient is also built chunk by
chunk. Chunk j holds vocabulary rows j, j + n, j + 2n, ... (strided), which keeps a
vocabulary axis sharded over a mesh axis sharded within each chunk: no gather.
Cost: the output layer's matmuls run 4 times instead of 3 (the recomputation).
A final-logit soft-cap (Gemma 2: logits -> cap * tanh(logits / cap)) is applied to each
chunk, and its derivative in the backward pass.

`token_chunked_objective` is the other memory-light form: it walks the sequence in
chunks of full-vocabulary logits and, because the training objective's cotangent of each
token is known in the forward pass (its loss weight), computes the gradients with respect
to the hidden states and the embedding right there (the approach of Liger Kernel's fused
linear cross-entropy). The backward pass only scales them: 3 output-layer matmuls, as with
full logits, with one [B, T/n, V] chunk of logits alive at a time.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def token_losses(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(cross-entropy, log-normaliser) per token, in float32, from full logits."""
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return log_z - target_logit, log_z


def weighted_objective(ce: jax.Array, log_z: jax.Array, weights: jax.Array, z_loss: float) -> jax.Array:
    """The training objective from per-token losses: sum((ce + z_loss * log_z**2) * weights)."""
    per_token = ce + z_loss * jnp.square(log_z) if z_loss else ce
    return jnp.sum(per_token * weights)


def fused_objective(
    hidden: jax.Array,
    embedding: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    z_loss: float,
    dtype: jnp.dtype,
    *,
    vocab_chunks: int = 0,
    token_chunks: int = 0,
    softcap: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(objective, ce, log_z) of the tied output layer without full-vocabulary logits, in the
    form one of the two chunk counts (TransformerConfig fields of those names) asks for;
    `softcap` (final_logit_softcap) only with vocab_chunks."""
    if token_chunks:
        if softcap:
            raise ValueError("token_chunks has no final-logit soft-cap; use vocab_chunks")
        return token_chunked_objective(hidden, embedding, targets, weights, z_loss, token_chunks, dtype)
    if not vocab_chunks:
        raise ValueError("fused_objective needs vocab_chunks or token_chunks > 0 (0, 0: full logits)")
    ce, log_z = chunked_token_losses(hidden, embedding, targets, vocab_chunks, dtype, softcap)
    return weighted_objective(ce, log_z, weights, z_loss), ce, log_z


def form_fields(form: str) -> dict[str, int]:
    """A loss form by the name the benchmarks take ("logits", "vocab:N", "token:N") as the
    TransformerConfig fields that select it: "vocab:16" -> {"vocab_chunks": 16, "token_chunks": 0}."""
    kind, _, chunks = form.partition(":")
    fields = dict(vocab_chunks=0, token_chunks=0)
    if kind == "logits" and not chunks:
        return fields
    if kind in ("vocab", "token") and chunks.isdigit() and int(chunks) > 0:
        return fields | {f"{kind}_chunks": int(chunks)}
    raise ValueError(f"loss form {form!r} is not logits, vocab:N or token:N")


def chunked_token_losses(
    hidden: jax.Array,
    embedding: jax.Array,
    targets: jax.Array,
    num_chunks: int,
    dtype: jnp.dtype,
    softcap: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """`token_losses(einsum("BTD,VD->BTV", hidden, embedding), targets)` in `num_chunks` pieces
    (the logits soft-capped first when `softcap` > 0).

    hidden [B, T, D], embedding [V, D] (V divisible by num_chunks), targets int [B, T].
    Both matmul operands are cast to `dtype` and accumulate in float32, as the model's
    `Embedder.decode` does; gradients flow to `hidden` and `embedding` for any cotangent
    of either output (z-loss uses the log-normaliser's).
    """
    vocab = embedding.shape[0]
    if num_chunks < 1 or vocab % num_chunks:
        raise ValueError(f"num_chunks={num_chunks} must be >= 1 and divide the vocabulary ({vocab})")
    return _chunked(hidden, embedding, targets, num_chunks, jnp.dtype(dtype), float(softcap))


def _chunks(embedding: jax.Array, num_chunks: int, dtype) -> jax.Array:
    """[V, D] -> [n, V/n, D], chunk j holding rows j, j + n, ... (row r = i * n + j)."""
    vocab, dim = embedding.shape
    return embedding.astype(dtype).reshape(vocab // num_chunks, num_chunks, dim).swapaxes(0, 1)


def _logits(hidden, chunk, dtype, softcap: float = 0.0):
    logits = jnp.einsum("BTD,CD->BTC", hidden.astype(dtype), chunk, preferred_element_type=jnp.float32)
    return softcap * jnp.tanh(logits / softcap) if softcap else logits


def _target_mask(targets, j, num_chunks, width):
    """[B, T, C] one-hot of each target within chunk j (all-zero where the target is elsewhere)."""
    in_chunk = (targets % num_chunks) == j
    return in_chunk[..., None] & (jnp.arange(width) == (targets // num_chunks)[..., None])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _chunked(hidden, embedding, targets, num_chunks, dtype, softcap):
    return _forward(hidden, embedding, targets, num_chunks, dtype, softcap)[0]


def _forward(hidden, embedding, targets, num_chunks, dtype, softcap):
    chunks = _chunks(embedding, num_chunks, dtype)
    width = chunks.shape[1]
    shape = targets.shape

    def step(carry, xs):
        running_max, running_sum, target_logit = carry
        j, chunk = xs
        logits = _logits(hidden, chunk, dtype, softcap)
        new_max = jnp.maximum(running_max, jnp.max(logits, axis=-1))
        running_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(
            jnp.exp(logits - new_max[..., None]), axis=-1
        )
        target_logit = target_logit + jnp.sum(
            jnp.where(_target_mask(targets, j, num_chunks, width), logits, 0.0), axis=-1
        )
        return (new_max, running_sum, target_logit), None

    init = (
        jnp.full(shape, -jnp.inf, jnp.float32),
        jnp.zeros(shape, jnp.float32),
        jnp.zeros(shape, jnp.float32),
    )
    (running_max, running_sum, target_logit), _ = jax.lax.scan(step, init, (jnp.arange(num_chunks), chunks))
    log_z = running_max + jnp.log(running_sum)
    return (log_z - target_logit, log_z), (hidden, embedding, targets, log_z)


def _backward(num_chunks, dtype, softcap, residuals, cotangents):
    hidden, embedding, targets, log_z = residuals
    grad_ce, grad_log_z = (g.astype(jnp.float32) for g in cotangents)
    chunks = _chunks(embedding, num_chunks, dtype)
    width = chunks.shape[1]
    # d(ce)/d(logit_v) = p_v - [v == target]; d(log_z)/d(logit_v) = p_v.
    grad_p = (grad_ce + grad_log_z)[..., None]

    def step(grad_hidden, xs):
        j, chunk = xs
        logits = _logits(hidden, chunk, dtype, softcap)
        probs = jnp.exp(logits - log_z[..., None])
        grad_logits = grad_p * probs - jnp.where(
            _target_mask(targets, j, num_chunks, width), grad_ce[..., None], 0.0
        )
        if softcap:  # d(cap * tanh(z / cap))/dz = 1 - tanh^2
            grad_logits = grad_logits * (1.0 - jnp.square(logits / softcap))
        grad_logits = grad_logits.astype(dtype)
        grad_hidden = grad_hidden + jnp.einsum(
            "BTC,CD->BTD", grad_logits, chunk, preferred_element_type=jnp.float32
        )
        grad_chunk = jnp.einsum(
            "BTC,BTD->CD", grad_logits, hidden.astype(dtype), preferred_element_type=jnp.float32
        )
        return grad_hidden, grad_chunk

    grad_hidden, grad_chunks = jax.lax.scan(
        step, jnp.zeros(hidden.shape, jnp.float32), (jnp.arange(num_chunks), chunks)
    )
    grad_embedding = grad_chunks.swapaxes(0, 1).reshape(embedding.shape)
    return grad_hidden.astype(hidden.dtype), grad_embedding.astype(embedding.dtype), None


_chunked.defvjp(_forward, _backward)


def token_chunked_objective(
    hidden: jax.Array,
    embedding: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    z_loss: float,
    num_chunks: int,
    dtype: jnp.dtype,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(objective, cross-entropy, log-normaliser) of the tied output layer, by sequence chunks.

    objective = sum((ce + z_loss * log_z**2) * weights) over all tokens, the cross-entropy
    and log-normaliser being `token_losses` of einsum("BTD,VD->BTV", hidden, embedding)
    (operands cast to `dtype`, float32 accumulation). Only the objective is differentiable
    (with respect to `hidden` and `embedding`); the per-token losses come back with their
    gradients stopped, for metrics. T must be divisible by `num_chunks`.
    """
    length = hidden.shape[1]
    if num_chunks < 1 or length % num_chunks:
        raise ValueError(f"num_chunks={num_chunks} must be >= 1 and divide the sequence length ({length})")
    objective, ce, log_z = _token_chunked(
        hidden, embedding, targets, weights.astype(jnp.float32), float(z_loss), num_chunks, jnp.dtype(dtype)
    )
    return objective, jax.lax.stop_gradient(ce), jax.lax.stop_gradient(log_z)


def _by_tokens(x: jax.Array, num_chunks: int) -> jax.Array:
    """[B, T, ...] -> [n, B, T/n, ...]: the scan axis first, rows kept whole (and sharded)."""
    rows, length = x.shape[:2]
    return x.reshape(rows, num_chunks, length // num_chunks, *x.shape[2:]).swapaxes(0, 1)


def _from_tokens(x: jax.Array) -> jax.Array:
    """Inverse of `_by_tokens`."""
    chunks, rows, width = x.shape[:3]
    return x.swapaxes(0, 1).reshape(rows, chunks * width, *x.shape[3:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _token_chunked(hidden, embedding, targets, weights, z_loss, num_chunks, dtype):
    table = embedding.astype(dtype)

    def chunk_losses(xs):
        h, t = xs
        return token_losses(_logits(h, table, dtype), t)

    ce, log_z = jax.lax.map(chunk_losses, (_by_tokens(hidden, num_chunks), _by_tokens(targets, num_chunks)))
    ce, log_z = _from_tokens(ce), _from_tokens(log_z)
    return weighted_objective(ce, log_z, weights, z_loss), ce, log_z


def _token_chunked_forward(hidden, embedding, targets, weights, z_loss, num_chunks, dtype):
    table = embedding.astype(dtype)

    def step(grad_table, xs):
        h, t, w = xs
        logits = _logits(h, table, dtype)
        ce, log_z = token_losses(logits, t)
        # d/d(logit_v) of w * (ce + z * log_z^2) = w * ((1 + 2 z log_z) * p_v - [v == target]).
        probs = jnp.exp(logits - log_z[..., None])
        is_target = jnp.arange(logits.shape[-1]) == t[..., None]
        grad_logits = (w * (1.0 + 2.0 * z_loss * log_z))[..., None] * probs - jnp.where(
            is_target, w[..., None], 0.0
        )
        grad_logits = grad_logits.astype(dtype)
        grad_h = jnp.einsum("BCV,VD->BCD", grad_logits, table, preferred_element_type=jnp.float32)
        grad_table = grad_table + jnp.einsum(
            "BCV,BCD->VD", grad_logits, h.astype(dtype), preferred_element_type=jnp.float32
        )
        return grad_table, (ce, log_z, grad_h)

    chunks = (
        _by_tokens(hidden, num_chunks),
        _by_tokens(targets, num_chunks),
        _by_tokens(weights, num_chunks),
    )
    grad_embedding, (ce, log_z, grad_hidden) = jax.lax.scan(
        step, jnp.zeros(embedding.shape, jnp.float32), chunks
    )
    ce, log_z, grad_hidden = _from_tokens(ce), _from_tokens(log_z), _from_tokens(grad_hidden)
    outputs = (weighted_objective(ce, log_z, weights, z_loss), ce, log_z)
    return outputs, (grad_hidden.astype(hidden.dtype), grad_embedding.astype(embedding.dtype))


def _token_chunked_backward(z_loss, num_chunks, dtype, residuals, cotangents):
    grad_hidden, grad_embedding = residuals
    scale = cotangents[0]  # the per-token outputs are stop_gradient'ed: only the objective's counts
    return (
        (scale * grad_hidden).astype(grad_hidden.dtype),
        (scale * grad_embedding).astype(grad_embedding.dtype),
        None,
        None,
    )


_token_chunked.defvjp(_token_chunked_forward, _token_chunked_backward)
