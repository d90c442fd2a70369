"""Training input: the mixture stream (or synthetic tokens) as global, sharded jax.Arrays.

Every process reads only its own slice of the global batch (the stream's
process_index/process_count) and `jax.make_array_from_process_local_data` assembles the
slices into one array laid out by the batch sharding, so the same code runs on one CPU
and on a multi-host TPU pod.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import jax
import numpy as np

from common.checks import ConfigError
from pretrain.train_step import BATCH_KEYS


class BatchSource(Protocol):
    """What the trainer needs from a stream (mixtures.stream.MixtureStream satisfies it)."""

    task_names: list[str]

    def __next__(self) -> dict[str, np.ndarray]: ...
    def get_state(self) -> dict[str, Any]: ...
    def set_state(self, state: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class SyntheticBatches:
    """Uniformly random tokens of the batch shape, a pure function of (seed, step).

    For benchmarks and tests that must not depend on prepared data. With
    `document_tokens` 0 each document fills its row; otherwise rows are packed with
    documents of geometrically distributed lengths of that mean (segment ids 1, 2, ...,
    positions restarting at each), as `mixtures.pack` lays out real ones. The state is
    the number of batches consumed, so resume is exact.
    """

    task_names = ["synthetic"]

    def __init__(
        self,
        seed: int,
        global_batch: int,
        seq_len: int,
        vocab_size: int,
        process_index: int = 0,
        process_count: int = 1,
        document_tokens: int = 0,
    ):
        if global_batch % process_count:
            raise ConfigError(
                f"config.data.global_batch_size: must divide among "
                f"{process_count} processes, got {global_batch}"
            )
        self.seed, self.seq_len, self.vocab_size = seed, seq_len, vocab_size
        self.document_tokens = document_tokens
        self.global_batch = global_batch
        self.rows = slice(
            process_index * global_batch // process_count, (process_index + 1) * global_batch // process_count
        )
        self.step = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.step])
        tokens = rng.integers(4, self.vocab_size, (self.global_batch, self.seq_len + 1), dtype=np.int32)[
            self.rows
        ]
        self.step += 1
        b, length = tokens.shape[0], self.seq_len
        segment_ids = np.ones((b, length), np.int32)
        if self.document_tokens:
            # A document ends after each position with probability 1/document_tokens.
            ends = rng.random((self.global_batch, length))[self.rows] < 1 / self.document_tokens
            segment_ids += np.cumsum(ends, axis=1) - ends
        starts = np.concatenate([np.ones((b, 1), bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
        index = np.broadcast_to(np.arange(length, dtype=np.int32), (b, length))
        positions = index - np.maximum.accumulate(np.where(starts, index, 0), axis=1)
        return {
            "inputs": tokens[:, :-1],
            "targets": tokens[:, 1:],
            "loss_weights": np.ones((b, length), np.float32),
            "segment_ids": segment_ids,
            "positions": positions.astype(np.int32),
            "task_ids": np.zeros((b,), np.int32),
        }

    def get_state(self) -> dict[str, Any]:
        return {"step": self.step}

    def set_state(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])

    def close(self) -> None:
        """Nothing to release; here for the BatchSource protocol."""


def to_global(
    local: dict[str, np.ndarray], sharding: dict[str, jax.sharding.Sharding], global_batch: int
) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded along the batch dimension."""
    missing = set(BATCH_KEYS) - set(local)
    if missing:
        raise KeyError(f"stream batch lacks keys {sorted(missing)} (see docs/DESIGN.md)")
    return {
        key: jax.make_array_from_process_local_data(
            sharding[key], np.asarray(local[key]), (global_batch, *local[key].shape[1:])
        )
        for key in BATCH_KEYS
    }
