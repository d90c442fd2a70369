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


def chunked_token_losses(
    hidden: jax.Array, embedding: jax.Array, targets: jax.Array, num_chunks: int, dtype: jnp.dtype
) -> tuple[jax.Array, jax.Array]:
    """`token_losses(einsum("BTD,VD->BTV", hidden, embedding), targets)` in `num_chunks` pieces.

    hidden [B, T, D], embedding [V, D] (V divisible by num_chunks), targets int [B, T].
    Both matmul operands are cast to `dtype` and accumulate in float32, as the model's
    `Embedder.decode` does; gradients flow to `hidden` and `embedding` for any cotangent
    of either output (z-loss uses the log-normaliser's).
    """
    vocab = embedding.shape[0]
    if num_chunks < 1 or vocab % num_chunks:
        raise ValueError(f"num_chunks={num_chunks} must be >= 1 and divide the vocabulary ({vocab})")
    return _chunked(hidden, embedding, targets, num_chunks, jnp.dtype(dtype))


def _chunks(embedding: jax.Array, num_chunks: int, dtype) -> jax.Array:
    """[V, D] -> [n, V/n, D], chunk j holding rows j, j + n, ... (row r = i * n + j)."""
    vocab, dim = embedding.shape
    return embedding.astype(dtype).reshape(vocab // num_chunks, num_chunks, dim).swapaxes(0, 1)


def _logits(hidden, chunk, dtype):
    return jnp.einsum("BTD,CD->BTC", hidden.astype(dtype), chunk, preferred_element_type=jnp.float32)


def _target_mask(targets, j, num_chunks, width):
    """[B, T, C] one-hot of each target within chunk j (all-zero where the target is elsewhere)."""
    in_chunk = (targets % num_chunks) == j
    return in_chunk[..., None] & (jnp.arange(width) == (targets // num_chunks)[..., None])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _chunked(hidden, embedding, targets, num_chunks, dtype):
    return _forward(hidden, embedding, targets, num_chunks, dtype)[0]


def _forward(hidden, embedding, targets, num_chunks, dtype):
    chunks = _chunks(embedding, num_chunks, dtype)
    width = chunks.shape[1]
    shape = targets.shape

    def step(carry, xs):
        running_max, running_sum, target_logit = carry
        j, chunk = xs
        logits = _logits(hidden, chunk, dtype)
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


def _backward(num_chunks, dtype, residuals, cotangents):
    hidden, embedding, targets, log_z = residuals
    grad_ce, grad_log_z = (g.astype(jnp.float32) for g in cotangents)
    chunks = _chunks(embedding, num_chunks, dtype)
    width = chunks.shape[1]
    # d(ce)/d(logit_v) = p_v - [v == target]; d(log_z)/d(logit_v) = p_v.
    grad_p = (grad_ce + grad_log_z)[..., None]

    def step(grad_hidden, xs):
        j, chunk = xs
        logits = _logits(hidden, chunk, dtype)
        probs = jnp.exp(logits - log_z[..., None])
        grad_logits = grad_p * probs - jnp.where(
            _target_mask(targets, j, num_chunks, width), grad_ce[..., None], 0.0
        )
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
