"""Batched generation on a forward function: greedy or sampled, with stop strings, in fixed shapes.

Prompts are batched by length and placed right-aligned (left padding) in a fixed
``[batch, width]`` token buffer, ``width`` a multiple of ``length_multiple``: one compile per
(batch, width) bucket. Padding never leaks into a prompt: padding columns have segment id 0 and
the prompt's tokens segment 1 (the model attends within a segment only), and positions count
from 0 at each prompt's first token, so a row computes what the prompt alone would. Every
row writes its next token in the same column, so one step serves the whole batch. Stop strings
are checked on the decoded text of each row's generation after every step (a stop string may
span tokens); a row also stops at <eos>, and the batch stops when every row has.

The next token comes from a ``Decoder``. ``KVCacheDecoder``, the default, runs the model's
decode path (pretrain.model.kv_cache): ``start`` is the prefill over the prompts' buffer,
which keeps every layer's keys and values, and each ``step`` a one-column forward that writes
the column's keys and values into the cache and attends to it, under the same mask (same
segment, causal, the local layers' window). ``RecomputeDecoder`` runs the full forward over
the buffer at every step, O(width) work per token: the reference the cache is tested
against, and the decoder for a forward without a decode path (any model that takes
``(params, tokens, positions, segment_ids)``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from pretrain.model.kv_cache import KVCache
from tokenizer.special_ids import EOS_ID, bos_prefix

# (params, tokens [B, L], positions [B, L], segment_ids [B, L], **decoding) -> logits [B, L, V];
# KVCacheDecoder passes `cache` and `column` on to pretrain.model's Transformer (which then
# returns (logits, cache)), RecomputeDecoder nothing.
Forward = Callable[..., Any]
# (prompts, max_new_tokens, stop strings) -> the generated texts, each cut before its first stop string
GenerateFn = Callable[..., list[str]]


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Greedy when ``temperature`` is 0; else sampling from the ``top_p`` nucleus. The draw of
    request i's t-th token is keyed by (seed, i, t): the same text whatever shares its batch."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


class Decoder(Protocol):
    """Computes the next token of every row of a fixed-shape batch."""

    def start(self, params: Any, tokens: np.ndarray, positions: np.ndarray, segment_ids: np.ndarray) -> Any:
        """Takes the prompts' buffer; returns the decoding state."""

    def step(
        self, params: Any, state: Any, column: int, keys: jax.Array, sampling: Sampling
    ) -> tuple[np.ndarray, Any]:
        """The token following ``column`` of every row (written at ``column + 1``) and the new
        state; ``keys`` holds each row's random key for this step."""


class RecomputeDecoder:
    """Full forward over the whole buffer at every step (no KV cache), jitted once per shape.

    ``vocab_size``: ids at or above it (embedding rows past the tokenizer's pieces) are never chosen.
    """

    def __init__(self, forward: Forward, vocab_size: int | None = None):
        self._step = jax.jit(lambda *args: _recompute_step(forward, vocab_size, *args))

    def start(self, params, tokens, positions, segment_ids):
        return jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(segment_ids)

    def step(self, params, state, column, keys, sampling):
        tokens, positions, segment_ids = state
        chosen, tokens = self._step(
            params,
            tokens,
            positions,
            segment_ids,
            jnp.int32(column),
            keys,
            jnp.float32(sampling.temperature),
            jnp.float32(sampling.top_p),
        )
        return np.asarray(chosen), (tokens, positions, segment_ids)


def _recompute_step(
    forward, vocab_size, params, tokens, positions, segment_ids, column, keys, temperature, top_p
):
    logits = forward(params, tokens, positions, segment_ids)
    last = jax.lax.dynamic_index_in_dim(logits, column, axis=1, keepdims=False)
    return _choose_next(last, tokens, column, keys, temperature, top_p, vocab_size)


class KVCacheDecoder:
    """A prefill over the prompts' buffer, then one column per step reading and extending every
    layer's KV cache (pretrain.model.kv_cache); each jitted once per (batch, width) shape.

    ``forward`` must pass ``cache`` and ``column`` on to pretrain.model's ``Transformer``.
    ``vocab_size`` as for ``RecomputeDecoder``. A step updates the cache in place (its state
    is donated): each state is stepped once.
    """

    def __init__(self, forward: Forward, vocab_size: int | None = None):
        def prefill(params, tokens, positions, segment_ids):
            # Only the cache is returned: XLA drops the buffer's logits.
            return forward(
                params, tokens, positions, segment_ids, cache=KVCache.start(positions, segment_ids)
            )[1]

        self._prefill = jax.jit(prefill)
        self._step = jax.jit(functools.partial(_cached_step, forward, vocab_size), donate_argnums=(1, 2))

    def start(self, params, tokens, positions, segment_ids):
        tokens = jnp.asarray(tokens)
        return tokens, self._prefill(params, tokens, jnp.asarray(positions), jnp.asarray(segment_ids))

    def step(self, params, state, column, keys, sampling):
        tokens, cache = state
        chosen, tokens, cache = self._step(
            params,
            tokens,
            cache,
            jnp.int32(column),
            keys,
            jnp.float32(sampling.temperature),
            jnp.float32(sampling.top_p),
        )
        return np.asarray(chosen), (tokens, cache)


def _cached_step(forward, vocab_size, params, tokens, cache, column, keys, temperature, top_p):
    def at_column(x):
        return jax.lax.dynamic_slice_in_dim(x, column, 1, axis=1)

    logits, cache = forward(
        params,
        at_column(tokens),
        at_column(cache.positions),
        at_column(cache.segment_ids),
        cache=cache,
        column=column,
    )
    chosen, tokens = _choose_next(logits[:, 0], tokens, column, keys, temperature, top_p, vocab_size)
    return chosen, tokens, cache


def _choose_next(logits, tokens, column, keys, temperature, top_p, vocab_size):
    """Each row's next token from its logits [B, V] at ``column``, also written at ``column + 1``."""
    chosen = choose(logits.astype(jnp.float32), keys, temperature, top_p, vocab_size)
    tokens = jax.lax.dynamic_update_slice_in_dim(
        tokens, chosen[:, None].astype(tokens.dtype), column + 1, axis=1
    )
    return chosen, tokens


def choose(
    logits: jax.Array,
    keys: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    vocab_size: int | None = None,
) -> jax.Array:
    """[B, V] float32 logits -> [B] ids: argmax at temperature 0, else a draw from the smallest
    set of most likely tokens whose probability reaches ``top_p``, one key per row."""
    if vocab_size is not None and vocab_size < logits.shape[-1]:
        logits = jnp.where(jnp.arange(logits.shape[-1]) < vocab_size, logits, -jnp.inf)

    def sample(logits):
        scaled = logits / temperature
        ordered = jnp.sort(scaled, axis=-1)[:, ::-1]
        mass_before = jnp.cumsum(jax.nn.softmax(ordered, axis=-1), axis=-1) - jax.nn.softmax(ordered, axis=-1)
        kept = jnp.sum(mass_before < top_p, axis=-1, keepdims=True)  # >= 1: the top token always
        threshold = jnp.take_along_axis(ordered, kept - 1, axis=-1)
        scaled = jnp.where(scaled >= threshold, scaled, -jnp.inf)
        return jax.vmap(jax.random.categorical)(keys, scaled)

    return jax.lax.cond(temperature > 0, sample, lambda x: jnp.argmax(x, axis=-1), logits).astype(jnp.int32)


def generate_ids(
    decoder: Decoder,
    params: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    max_length: int,
    batch_size: int = 8,
    eos_id: int = EOS_ID,
    sampling: Sampling = Sampling(),
    length_multiple: int = 128,
    should_stop: Callable[[list[int]], bool] | None = None,
) -> list[list[int]]:
    """The generated ids of every prompt (without <eos>), in prompt order.

    A prompt longer than ``max_length - max_new_tokens`` keeps its last tokens (as
    lm-evaluation-harness truncates). ``should_stop(generated_ids)`` ends a row early.
    """
    if not 0 < max_new_tokens < max_length:
        raise ValueError(f"max_new_tokens: must be in [1, max_length={max_length}), got {max_new_tokens}")
    budget = max_length - max_new_tokens
    prompts = [list(p)[-budget:] for p in prompts]
    if any(not p for p in prompts):
        raise ValueError("generate: an empty prompt (no text and no <bos>) has nothing to continue")
    root = jax.random.key(sampling.seed)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        longest = len(prompts[rows[0]])
        width = min(-(-(longest + max_new_tokens) // length_multiple) * length_multiple, max_length)
        tokens, positions, segment_ids = (np.zeros((batch_size, width), np.int32) for _ in range(3))
        for r, i in enumerate(rows):
            first = longest - len(prompts[i])
            tokens[r, first:longest] = prompts[i]
            positions[r, first:] = np.arange(width - first)
            segment_ids[r, first:] = 1
        keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(
            jnp.asarray(rows + [0] * (batch_size - len(rows)))
        )
        state = decoder.start(params, tokens, positions, segment_ids)
        active = set(range(len(rows)))
        for t in range(max_new_tokens):
            step_keys = _fold_in(keys, t)
            chosen, state = decoder.step(params, state, longest - 1 + t, step_keys, sampling)
            for r in list(active):
                generated = results[rows[r]]
                if chosen[r] == eos_id:
                    active.discard(r)
                    continue
                generated.append(int(chosen[r]))
                if should_stop is not None and should_stop(generated):
                    active.discard(r)
            if not active:
                break
    return results


_fold_in = jax.jit(jax.vmap(jax.random.fold_in, (0, None)))


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to its earliest stop string (lm-eval splits on each in turn: the same)."""
    ends = [text.find(s) for s in stop if s and s in text]
    return text[: min(ends)] if ends else text


def make_generate_fn(
    forward: Forward,
    params: Any,
    vocab: Any,
    *,
    max_length: int,
    bos: str = "document",
    batch_size: int = 8,
    sampling: Sampling = Sampling(),
    length_multiple: int = 128,
    decoder: Decoder | None = None,
) -> GenerateFn:
    """``generate_fn(prompts, max_new_tokens, stop, sampling=None) -> texts`` for the tasks.

    ``vocab`` is the run's SentencePiece vocabulary (``tokenizer.vocab.load_vocabulary``);
    each prompt is encoded after the ``bos`` policy's prefix, as the run was trained.
    ``sampling`` given to a call overrides the default (code tasks sample several answers).
    ``decoder`` defaults to ``KVCacheDecoder`` (``forward`` then takes the decoding keywords:
    see ``Forward``).
    """
    decoder = decoder or KVCacheDecoder(forward, vocab.vocab_size)
    prefix = bos_prefix(bos)
    default_sampling = sampling

    def generate_fn(
        prompts: Sequence[str],
        max_new_tokens: int,
        stop: Sequence[str] = (),
        sampling: Sampling | None = None,
    ) -> list[str]:
        def should_stop(ids: list[int]) -> bool:
            text = vocab.decode(ids)
            return any(s and s in text for s in stop)

        generated = generate_ids(
            decoder,
            params,
            [prefix + list(vocab.encode(p)) for p in prompts],
            max_new_tokens,
            max_length=max_length,
            batch_size=batch_size,
            sampling=sampling or default_sampling,
            length_multiple=length_multiple,
            should_stop=should_stop if stop else None,
        )
        return [cut_at_stop(vocab.decode(ids), stop) for ids in generated]

    return generate_fn
