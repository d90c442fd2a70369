"""Loglikelihood scoring in JAX: requests packed into fixed-shape rows, one compile per shape.

lm-evaluation-harness pads every request of a batch to the longest one; here requests are
packed end to end into rows of `row_len` tokens (best-fit decreasing), each request its own
segment with positions from 0, so the model's segment mask keeps them apart and a request
sees exactly what it would see alone. Every batch has the same shape `[batch_rows,
row_len]`, so the scoring step compiles once. The engine takes the model as a forward
function `(params, inputs, positions, segment_ids) -> logits`; it knows nothing of the
trainer (evals sits below the pretrain core in the import layers).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

Forward = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Request:
    """Token ids of a context and of the continuation whose log-probability is wanted."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Score:
    """Sum of the continuation tokens' log-probs; whether each was the argmax (lm-eval's is_greedy)."""

    loglikelihood: float
    is_greedy: bool


def window(request: Request, row_len: int) -> tuple[list[int], int]:
    """(context + continuation tokens, how many of the last are scored): as lm-eval, a
    request longer than `row_len` + 1 tokens keeps its last `row_len` + 1 (the context is
    cut on the left). The model reads all but the last token, which is only predicted."""
    if not request.context or not request.continuation:
        raise ValueError(f"a request needs a context and a continuation, got {request}")
    whole = list(request.context + request.continuation)[-(row_len + 1) :]
    return whole, min(len(request.continuation), len(whole) - 1)


def pack(lengths: Sequence[int], row_len: int) -> list[list[int]]:
    """Rows of request indices, each row's lengths summing to at most `row_len`.

    Best-fit decreasing: longest first, each into the row whose free space fits it most
    tightly (a sorted list of (free, row)), O(n log n).
    """
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        need = lengths[i]
        if need > row_len:
            raise ValueError(f"request {i} has {need} tokens, more than a row's {row_len}")
        at = bisect.bisect_left(free, (need, -1))
        if at == len(free):
            rows.append([i])
            row, space = len(rows) - 1, row_len
        else:
            space, row = free.pop(at)
            rows[row].append(i)
        if space - need > 0:
            bisect.insort(free, (space - need, row))
    return rows


def _token_scores(
    forward: Forward, vocab_size: int | None, params: Any, inputs, targets, positions, segment_ids
):
    """Per position: log p(target) under a float32 log-softmax over the first `vocab_size`
    logits (all: None), and whether target is the argmax."""
    logits = forward(params, inputs, positions, segment_ids)[..., :vocab_size].astype(jnp.float32)
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    log_probs = target_logits - jax.nn.logsumexp(logits, axis=-1)
    return log_probs, jnp.argmax(logits, axis=-1) == targets


class Engine:
    """Scores `Request`s with `forward` on `params` in batches of `batch_rows` x `row_len`.

    `batch_sharding` places each batch (e.g. `NamedSharding(mesh, P(("data", "fsdp")))` on
    the training mesh, with params already laid out for it; `batch_rows` a multiple of the
    data-parallel size); None: the default device. `vocab_size`: the softmax covers the
    tokenizer's pieces only, as in the exported model (the export keeps the embedding's first
    `vocab_size` rows, dropping padding rows such as Gemma's 256000..256127); None: every logit.
    `params` may be replaced between calls (the trainer's loop): the compiled step stays.
    """

    def __init__(
        self,
        forward: Forward,
        params: Any,
        *,
        row_len: int,
        batch_rows: int,
        batch_sharding: NamedSharding | None = None,
        vocab_size: int | None = None,
    ) -> None:
        if row_len < 1 or batch_rows < 1:
            raise ValueError(f"row_len and batch_rows must be >= 1, got {row_len}, {batch_rows}")
        self.params, self.row_len, self.batch_rows = params, row_len, batch_rows
        self._sharding = batch_sharding
        # Every process builds the same batches and gets the scores whole (replicated), so the
        # same code runs on one device, a mesh of one host's devices, or a multi-host mesh.
        out = None if batch_sharding is None else NamedSharding(batch_sharding.mesh, PartitionSpec())
        self._step = jax.jit(
            lambda p, *batch: _token_scores(forward, vocab_size, p, *batch), out_shardings=out
        )

    def score(self, requests: Sequence[Request]) -> list[Score]:
        """One Score per request, in order."""
        windows = [window(r, self.row_len) for r in requests]
        rows = pack([len(tokens) - 1 for tokens, _ in windows], self.row_len)
        sums = np.zeros(len(requests), np.float64)
        greedy = np.ones(len(requests), bool)
        pending = None
        for batch, layout in self._batches(rows, windows):
            out = self._step(self.params, *batch)  # dispatched; collected after the next is built
            if pending is not None:
                self._collect(*pending, sums, greedy)
            pending = (out, layout)
        if pending is not None:
            self._collect(*pending, sums, greedy)
        return [Score(float(s), bool(g)) for s, g in zip(sums, greedy)]

    def _batches(
        self, rows: list[list[int]], windows: list[tuple[list[int], int]]
    ) -> Iterator[tuple[tuple[Any, ...], list[tuple[int, int, int, int]]]]:
        """(inputs, targets, positions, segment_ids) of each batch and where each request's
        scored tokens lie: (request, row in batch, first scored column, end column)."""
        shape = (self.batch_rows, self.row_len)
        for start in range(0, len(rows), self.batch_rows):
            inputs, targets = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
            positions, segments = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
            layout = []
            for r, row in enumerate(rows[start : start + self.batch_rows]):
                offset = 0
                for segment, i in enumerate(row, start=1):
                    tokens, scored = windows[i]
                    n = len(tokens) - 1
                    end = offset + n
                    inputs[r, offset:end] = tokens[:-1]
                    targets[r, offset:end] = tokens[1:]
                    positions[r, offset:end] = np.arange(n)
                    segments[r, offset:end] = segment
                    layout.append((i, r, end - scored, end))
                    offset = end
            batch = (inputs, targets, positions, segments)
            if self._sharding is not None:
                batch = tuple(
                    jax.make_array_from_callback(shape, self._sharding, lambda index, a=a: a[index])
                    for a in batch
                )
            yield batch, layout

    @staticmethod
    def _collect(
        out: Any, layout: list[tuple[int, int, int, int]], sums: np.ndarray, greedy: np.ndarray
    ) -> None:
        log_probs, is_greedy = (np.asarray(a) for a in out)
        for i, r, lo, hi in layout:
            sums[i] = log_probs[r, lo:hi].astype(np.float64).sum()
            greedy[i] = bool(is_greedy[r, lo:hi].all())
