"""`MixtureStream`: the trainer's input, read from the packed rows of `mixtures.pack`.

Usage (pretrain/):

    stream = MixtureStream(mixture_cfg, packed_dir, batch_size=512, total_steps=10_000,
                           seed=0, process_index=jax.process_index(),
                           process_count=jax.process_count(), split="train",
                           read_threads=2, workers=0)
    stream.set_state(saved)   # resume: refused, naming what changed, if the config or the packed data did
    batch = next(stream)      # this process's rows of global step stream.step - 1
    saved = stream.get_state()

Batch keys, shapes and dtypes are those of docs/DESIGN.md: inputs, targets, segment_ids,
positions [b, L] int32, loss_weights [b, L] float32, task_ids [b] int32 (index into
`stream.task_names`), with b = batch_size / process_count.

Design (why): packing is done once, offline, so a process's input work is only to read
and decode its own rows: b = batch_size / process_count rows per step, so the cost per
host falls as 1/hosts. Which rows those are is a pure function of (seed, step, schedule)
(`mixtures.assignment`): every process computes the task of every global row of a step
(a few hundred numbers), and for its own contiguous slice of rows the packed row behind
each, through a seeded per-epoch permutation of the task's rows. The state is therefore
just the step, plus fingerprints of what fixed the batches before it (settings, schedule
so far, the packed rows of the tasks read so far), checked at resume. The per-step work runs in a Grain pipeline: `MapDataset` over steps, read
threads with prefetch, and optionally worker processes (`workers > 0`, `mp_prefetch`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np
from absl import flags

from common import fs
from common.checks import ConfigError
from mixtures import assignment, rows
from mixtures import manifest as manifest_lib
from mixtures.manifest import canonical_hash
from mixtures.schedule import Schedule

STATE_VERSION = 2


class StateMismatchError(ConfigError):
    """A saved data state does not belong to this config or packed data (a command prints
    the one line and exits 2: restarting cannot help)."""


class UnreadablePackedFile(ConfigError):
    """A packed file that no longer reads as its manifest describes (damaged, truncated,
    replaced); the command prints the one line naming it and exits 2: restarting cannot help."""


def _unreadable(path: str, count: int, why: str) -> UnreadablePackedFile:
    return UnreadablePackedFile(
        f"packed rows unreadable: {path} ({why}); it is not the file of {count} rows the packed "
        f"manifest.json lists: restore it, or pack again (mixtures.pack --overwrite)"
    )


def _check_identity(packed_dir: str, entries: list[dict[str, Any]]) -> None:
    """Each row file is the one the manifest lists: its size and sampled SHA-256
    (manifest.file_identity). A file swapped for another pack's with the same row count
    reads fine and trains on other rows; this finds it before the first step. Files of a
    pack made before the manifest recorded identities are checked by row count only."""
    for entry in entries:
        if "sample_sha256" not in entry:
            continue
        path = fs.join(packed_dir, entry["path"])
        found = manifest_lib.file_identity(path)
        if found["bytes"] != entry["bytes"]:
            raise _unreadable(path, entry["rows"], f"it holds {found['bytes']} bytes, not {entry['bytes']}")
        if found["sample_sha256"] != entry["sample_sha256"]:
            raise _unreadable(
                path,
                entry["rows"],
                "its content differs from the manifest's sampled sha256: another pack's file, or overwritten",
            )


def _open_rows(files: list[tuple[str, int]]) -> grain.sources.ArrayRecordDataSource:
    """One task's shard files as one source, checked against the manifest's row counts."""
    try:
        source = grain.sources.ArrayRecordDataSource([p for p, _ in files])
        if len(source) == sum(n for _, n in files):
            return source
    except Exception:  # array_record's message does not name the file: find it below
        pass
    for path, count in files:
        try:
            found = len(grain.sources.ArrayRecordDataSource([path]))
        except Exception as e:
            raise _unreadable(path, count, str(e).splitlines()[0]) from None
        if found != count:
            raise _unreadable(path, count, f"it holds {found} rows")
    return grain.sources.ArrayRecordDataSource([p for p, _ in files])  # it reads now: a passing fault


def _read_rows(
    source: grain.sources.ArrayRecordDataSource, files: list[tuple[str, int]], keys: list[int]
) -> list[bytes]:
    """The records at `keys`; an unreadable one is named by its file."""
    try:
        return source.__getitems__(keys)
    except Exception as first:
        ends = np.cumsum([n for _, n in files])
        for key in keys:
            try:
                source.__getitems__([key])
            except Exception as e:
                path, count = files[int(np.searchsorted(ends, key, side="right"))]
                raise _unreadable(path, count, f"row {key}: {str(e).splitlines()[0]}") from None
        raise first


class _Plan:
    """Step -> (task of each local row, packed row of each): the pure function, with a cache.

    The rows each task received before a step are remembered for recent steps, so the
    next step (or one a few steps off, as read threads and workers take them) costs one
    step's work from the nearest earlier entry; only the first call after a resume
    counts from step 0.
    """

    _KEEP = 256  # remembered steps

    def __init__(
        self,
        schedule: Schedule,
        seed: int,
        batch_size: int,
        local: slice,
        num_rows: list[int],
        task_seeds: list[int],
    ):
        self.schedule, self.seed, self.batch_size, self.local = schedule, seed, batch_size, local
        self.num_rows, self.task_seeds = num_rows, task_seeds
        self._known: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # for Grain worker processes: locks do not pickle
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _counts_before(self, step: int) -> np.ndarray:
        with self._lock:
            earlier = [s for s in self._known if s <= step]
            since = (max(earlier), self._known[max(earlier)]) if earlier else None
            counts = assignment.task_counts_before(self.schedule, self.seed, step, self.batch_size, since)
            self._known[step] = counts
            while len(self._known) > self._KEEP:
                del self._known[min(self._known)]
        return counts

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        tasks = assignment.row_tasks(self.schedule, self.seed, step, self.batch_size)
        k = self._counts_before(step)[tasks] + assignment.ranks_within_step(tasks, len(self.num_rows))
        local_tasks, local_k = tasks[self.local], k[self.local]
        packed = np.array(
            [
                assignment.packed_row(int(kk), self.num_rows[t], self.task_seeds[t])
                for t, kk in zip(local_tasks, local_k)
            ],
            np.int64,
        )
        return local_tasks, packed


class _ReadStep:
    """Step -> this process's batch (Grain map function; picklable for worker processes)."""

    def __init__(
        self,
        plan: _Plan,
        sources: list[grain.sources.ArrayRecordDataSource | None],
        files: list[list[tuple[str, int]]],
        seq_len: int,
    ):
        self.plan, self.sources, self.files, self.seq_len = plan, sources, files, seq_len

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        tasks, packed = self.plan(int(step))
        batch = rows.empty_batch(len(tasks), self.seq_len)
        read_bytes = 0
        for t in np.unique(tasks):
            where = np.flatnonzero(tasks == t)
            records = _read_rows(self.sources[t], self.files[t], packed[where].tolist())
            for r, record in zip(where, records):
                rows.decode_into(record, batch, int(r))
                read_bytes += len(record)
        batch["task_ids"] = tasks.astype(np.int32)
        batch["read_bytes"] = np.int64(read_bytes)
        return batch


class MixtureStream:
    """Iterator over this process's batches; see the module docstring."""

    def __init__(
        self,
        mixture_config: Any,
        packed_dir: str,
        *,
        batch_size: int,
        total_steps: int,
        seed: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
        split: str = "train",
        read_threads: int = 2,
        prefetch: int = 4,
        workers: int = 0,
        field: str = "config",
    ):
        """`field`: where `mixture_config` sits in the caller's config, for error messages."""
        if batch_size <= 0:
            raise ValueError(f"batch_size: must be > 0, got {batch_size}")
        if process_count <= 0 or batch_size % process_count:
            raise ValueError(f"process_count: must divide batch_size={batch_size}, got {process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index: must be in [0, {process_count}), got {process_index}")
        self.packed_dir = packed_dir
        self.manifest = manifest_lib.read(packed_dir)
        self.seq_len = int(self.manifest["seq_len"])
        self.seed = int(seed if seed is not None else mixture_config.get("seed", 0))
        self.schedule = Schedule.from_config(mixture_config, total_steps, field)
        self.task_names = list(self.schedule.tasks)
        self.batch_size, self.total_steps, self.split = batch_size, total_steps, split
        self.process_index, self.process_count = process_index, process_count
        self.local_batch_size = batch_size // process_count
        self.read_threads, self.prefetch, self.workers = read_threads, prefetch, workers

        files = [manifest_lib.task_files(packed_dir, self.manifest, split, t) for t in self.task_names]
        num_rows = [sum(n for _, n in f) for f in files]
        scheduled = {t for stage in self.schedule.stages for t, w in stage.weights.items() if w > 0}
        empty = [t for t, n in zip(self.task_names, num_rows) if n == 0 and t in scheduled]
        if empty:
            raise ConfigError(
                f"{field}.stages: tasks {empty} have weight but no packed rows in split "
                f"{split!r} of {packed_dir}"
            )
        sources = [_open_rows(f) if n else None for f, n in zip(files, num_rows)]
        for t in self.task_names:
            _check_identity(packed_dir, self.manifest["splits"][split][t]["files"])
        self.rows_per_task = dict(zip(self.task_names, num_rows))
        lo = process_index * self.local_batch_size
        plan = _Plan(
            self.schedule,
            self.seed,
            batch_size,
            slice(lo, lo + self.local_batch_size),
            num_rows,
            [assignment.task_seed(self.seed, t) for t in self.task_names],
        )
        self._read_step = _ReadStep(plan, sources, files, self.seq_len)
        self._stream_fingerprint = canonical_hash(
            dict(seed=self.seed, batch_size=batch_size, split=split, seq_len=self.seq_len)
        )
        self._task_fingerprints = {
            t: canonical_hash(
                dict(
                    files=[(f["rows"], f["sha256"]) for f in self.manifest["splits"][split][t]["files"]],
                    seq_len=self.seq_len,
                    vocab=self.manifest["vocab"]["sha256"],
                )
            )
            for t in self.task_names
        }
        self.read_bytes = 0
        self._iterator: Iterator | None = None
        self._step = 0

    # ----- schedule, for logging -----
    def weights_at(self, step: int) -> dict[str, float]:
        return self.schedule.weights_at(step)

    def stage_at(self, step: int) -> str:
        return self.schedule.stage_at(step)

    # ----- state -----
    @property
    def step(self) -> int:
        """The step of the next batch `next` returns."""
        return self._step

    def fingerprints(self, step: int) -> dict[str, Any]:
        """What fixes the batches of steps [0, step): the stream's settings, the schedule over
        those steps, and the packed rows of every task scheduled in them.

        The schedule after `step` and tasks not yet scheduled are free to differ, so a run can
        branch into another annealing stage (studies.anneal) and remain the exact run that
        the new config would have trained from the start.
        """
        weights = self.schedule.weights_array(np.arange(step))
        # A task without weight so far was never drawn, wherever it sits in the task list.
        used = [i for i in range(len(self.task_names)) if step and weights[:, i].max() > 0]
        schedule = hashlib.sha256()
        for i in used:
            schedule.update(
                self.task_names[i].encode() + b"\0" + np.ascontiguousarray(weights[:, i], "<f8").tobytes()
            )
        return {
            "stream": self._stream_fingerprint,
            "schedule": schedule.hexdigest(),
            "packed_rows": {self.task_names[i]: self._task_fingerprints[self.task_names[i]] for i in used},
        }

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable, the same on every process."""
        return {"version": STATE_VERSION, "step": self._step, "fingerprints": self.fingerprints(self._step)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues at `state["step"]`; refuses a state whose past batches this config or
        packed data would not reproduce, saying which part differs."""
        if state.get("version") != STATE_VERSION:
            raise StateMismatchError(
                f"data state version {state.get('version')!r} is not {STATE_VERSION}: it was saved by the "
                "old online-packing stream; restart this run in a new workdir"
            )
        step = int(state["step"])
        saved, now = state.get("fingerprints", {}), self.fingerprints(step)
        problems = []
        if saved.get("stream") != now["stream"]:
            problems.append("the seed, the batch size, the split or seq_len changed")
        elif saved.get("schedule") != now["schedule"]:
            problems.append(
                f"the mixture schedule differs before step {step} (tasks, stages or total_steps "
                "changed where the run has already been; a schedule may only change after the "
                "resume step)"
            )
        changed = sorted(t for t, h in saved.get("packed_rows", {}).items() if now["packed_rows"].get(t) != h)
        if changed and not problems:
            problems.append(
                f"the packed rows of {changed} at {self.packed_dir} are not those the run read "
                "(re-packed with other data or settings, or another directory)"
            )
        if problems:
            raise StateMismatchError(
                f"cannot resume at step {step}: {problems[0]}. Resume with the original "
                "config and packed data, or start a new workdir."
            )
        self.close()
        self._step = int(state["step"])

    # ----- iteration -----
    def _open(self) -> Iterator:
        steps = grain.MapDataset.range(self._step, 2**62).map(self._read_step)
        ds = steps.to_iter_dataset(
            grain.ReadOptions(
                num_threads=max(self.read_threads, 1), prefetch_buffer_size=max(self.prefetch, 1)
            )
        )
        if self.workers > 0:
            if not flags.FLAGS.is_parsed():  # Grain's workers read its absl flags; a library caller has none
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers))
        return iter(ds)

    def __iter__(self) -> MixtureStream:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = self._open()
        batch = next(self._iterator)
        self.read_bytes += int(batch.pop("read_bytes"))
        self._step += 1
        return batch

    def close(self) -> None:
        """Stops the read threads and worker processes (the next `next` reopens at `step`)."""
        iterator, self._iterator = self._iterator, None
        if iterator is not None and hasattr(iterator, "close"):
            iterator.close()

    def __enter__(self) -> MixtureStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
