"""Which packed row feeds each row of each global batch: pure functions of (seed, step, schedule).

Row n = step * batch_size + j of the global batch goes to a task by a seeded golden-ratio
(Weyl) sequence u_n = frac(offset(seed) + n * phi) mapped through the cumulative weights of
the schedule at that step. Unlike independent random draws (whose share error over a
50-step window at batch 8 is ~0.03), this low-discrepancy sequence keeps every window's
share within ~0.01 of the schedule, also across stage switches, and carries no state.

The k-th row a task receives is row perm_e(k mod N) of its packed file (N rows), where
perm_e is a seeded permutation that changes with the epoch e = k // N (Grain's
`index_shuffle`, a Feistel-style bijection: O(1) memory, no table of N entries). So every
host computes, from the step alone, exactly which rows it needs and reads only those;
k itself is the number of rows the task got in earlier steps, counted in vectorised
chunks (`task_counts_before`), cheap even at a resume deep into a run.
"""

from __future__ import annotations

import hashlib

import numpy as np
from grain.experimental import index_shuffle

from mixtures.schedule import Schedule

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / phi
_COUNT_CHUNK_ROWS = 1 << 22  # rows per vectorised chunk when counting earlier steps


def _splitmix64(x: int) -> np.uint64:
    """Scrambles the seed into the sequence's start offset."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(x ^ (x >> 31))


def _uniforms(seed: int, first_row: int, rows: int) -> np.ndarray:
    n = np.arange(first_row, first_row + rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = _splitmix64(seed) + n * _GOLDEN  # wraps mod 2**64, exactly
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _cumulative(schedule: Schedule, steps: np.ndarray) -> np.ndarray:
    """[len(steps), tasks] normalised cumulative weights."""
    weights = schedule.weights_array(steps)
    cumulative = np.cumsum(weights, axis=1)
    return cumulative / cumulative[:, -1:]


def row_tasks(schedule: Schedule, seed: int, step: int, batch_size: int) -> np.ndarray:
    """Task index of each global row of `step`."""
    cumulative = _cumulative(schedule, np.array([step]))[0]
    u = _uniforms(seed, step * batch_size, batch_size)
    return np.searchsorted(cumulative, u, side="right").astype(np.int32)


def task_counts_before(
    schedule: Schedule, seed: int, step: int, batch_size: int, since: tuple[int, np.ndarray] | None = None
) -> np.ndarray:
    """Rows each task received in steps [0, step); `since=(s, counts at s)` continues from s <= step."""
    first, counts = (0, np.zeros(len(schedule.tasks), np.int64)) if since is None else since
    counts = counts.copy()
    chunk = max(1, _COUNT_CHUNK_ROWS // batch_size)
    for lo in range(first, step, chunk):
        steps = np.arange(lo, min(lo + chunk, step))
        cumulative = _cumulative(schedule, steps)
        u = _uniforms(seed, lo * batch_size, len(steps) * batch_size)
        if (cumulative == cumulative[0]).all():  # one constant stage: the common case, 5x faster
            tasks = np.searchsorted(cumulative[0], u, side="right")
        else:  # searchsorted(side="right") per row == number of cumulative entries <= u
            tasks = (cumulative[:, None, :] <= u.reshape(len(steps), batch_size, 1)).sum(-1).ravel()
        counts += np.bincount(tasks, minlength=len(schedule.tasks))[: len(schedule.tasks)]
    return counts


def ranks_within_step(tasks: np.ndarray, num_tasks: int) -> np.ndarray:
    """For each row of a step, how many earlier rows of the same step have its task."""
    ranks = np.zeros(len(tasks), np.int64)
    for t in range(num_tasks):
        mask = tasks == t
        ranks[mask] = np.arange(int(mask.sum()))
    return ranks


def task_seed(seed: int, task: str) -> int:
    """A 32-bit seed per task, so tasks of equal size are not permuted alike."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{task}".encode()).digest()[:4], "little")


def packed_row(k: int, num_rows: int, seed: int) -> int:
    """Row of a task's packed file that its k-th received row is (`seed` from `task_seed`)."""
    epoch, i = divmod(k, num_rows)
    return index_shuffle(i, max_index=num_rows - 1, seed=(seed + epoch) % 2**32, rounds=4)
