"""`PackedStream`: the trainer's input, packed batches whose task mix follows the schedule.

Usage (pretrain/):

    stream = PackedStream(mixture_cfg, prep_dir, vocab_path, batch_size=8, total_steps=1000,
                          seq_len=None, seed=None,            # None: take config.seq_len / config.seed
                          process_index=0, process_count=1,   # jax.process_index() / jax.process_count()
                          split="train", prefetch=2)
    stream.set_state(saved)          # optional: exact resume from a checkpoint's `data` item
    batch = next(stream)             # batch for step stream.step - 1, this process's rows only
    saved = stream.get_state()       # JSON-serialisable; identical on every process
    stream.weights_at(step), stream.stage_at(step)   # for logging (also: Schedule.from_config)

Batch keys, shapes and dtypes are those of docs/DESIGN.md: inputs, targets, segment_ids,
positions [b, L] int32, loss_weights [b, L] float32, task_ids [b] int32 (index into
`stream.task_names`), with b = batch_size / process_count.

Design (why): every task's documents are packed into rows on their own (`DocumentPacker`),
then each row of the global batch is given to a task. Doing the mixing per row rather than
per document keeps rows full and lets every row come from one task, so the realized share
of tokens equals the share of rows. The task of global row n = step * batch_size + j is
a pure function of (seed, n) and the schedule at that step: a seeded golden-ratio (Weyl)
sequence u_n = frac(offset(seed) + n * phi) mapped through the cumulative weights. Unlike
independent random draws (whose share error over a 50-step window at batch 8 is ~0.03),
this low-discrepancy sequence keeps every window's share within ~0.01 of the schedule,
including across stage switches, and needs no carried state, so resume and multi-process
slicing stay exact. SeqIO's `Mixture` samples per example with a fixed rate and keeps its
position in a tf.data iterator, which gives neither a step schedule nor exact resume.

Every process runs all packers (the packing of a task is sequential) and materialises only
its own contiguous slice of rows; the union of the slices is the one-process batch. The
state names documents by source position, so it is small and the same on all processes.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from mixtures import tasks as tasks_lib
from mixtures.packing import Document, DocumentPacker, write_row
from mixtures.schedule import Schedule, config_field

STATE_VERSION = 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / phi


def _splitmix64(x: int) -> np.uint64:
    """Scrambles the seed into the sequence's start offset."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(x ^ (x >> 31))


def row_tasks(schedule: Schedule, seed: int, step: int, batch_size: int) -> np.ndarray:
    """Task index of each global row of `step` (pure function of seed, step, schedule)."""
    weights = schedule.weights_at(step)
    cumulative = np.cumsum([weights[t] for t in schedule.tasks])
    cumulative /= cumulative[-1]
    n = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = _splitmix64(seed) + n * _GOLDEN  # wraps mod 2**64, exactly
    u = (x >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.searchsorted(cumulative, u, side="right").astype(np.int32)


_NONEMPTY: set[tuple[str, str, str]] = set()  # (task, data dir, split) known to yield documents


def read_documents(task: seqio.Task, split: str, start: int, stop: int | None = None) -> Iterator[Document]:
    """(source index, tokens) of `task` for source indices in [start, stop), epoch after epoch.

    Index g is record g % N of epoch g // N (N = records in the split), read in the TFDS
    canonical order (no interleaving), so slicing `split[i:]` resumes at a record exactly.
    One tf.data pipeline serves all epochs: building one costs more than a small epoch.
    """
    builder = task.source.tfds_dataset.builder
    n = builder.info.splits[split].num_examples
    if not n:
        raise ValueError(f"task {task.name}: split {split!r} is empty")
    read_config = tfds.ReadConfig(interleave_cycle_length=1)

    def records(sub_split: str, first_index: int) -> tf.data.Dataset:
        ds = builder.as_dataset(split=sub_split, shuffle_files=False, read_config=read_config)
        return ds.enumerate(first_index).map(lambda k, ex: {**ex, tasks_lib.INDEX_KEY: k})

    def preprocess(ds: tf.data.Dataset) -> tf.data.Dataset:
        return task.preprocess_postcache(task.preprocess_precache(ds), sequence_length=None)

    if stop is None and (task.name, builder.data_dir, split) not in _NONEMPTY:
        if not any(True for _ in preprocess(records(split, 0)).take(1)):  # else repeat() would spin forever
            raise ValueError(f"task {task.name}: split {split!r} yields no documents (empty filter?)")
        _NONEMPTY.add((task.name, builder.data_dir, split))
    epoch, i = divmod(start, n)
    ds = records(f"{split}[{i}:]", start)
    if stop is None or stop > (epoch + 1) * n:
        # later epochs: the whole split again, enumerated from the epoch's first index
        ds = ds.concatenate(builder.as_dataset(split=split, shuffle_files=False, read_config=read_config)
                            .repeat().enumerate((epoch + 1) * n)
                            .map(lambda k, ex: {**ex, tasks_lib.INDEX_KEY: k}))
    if stop is not None:
        ds = ds.take(max(stop - start, 0))
    for ex in preprocess(ds).as_numpy_iterator():
        yield int(ex[tasks_lib.INDEX_KEY]), ex["targets"]


class _TaskSource:
    """One task's reader + packer, with the bookkeeping its state needs."""

    def __init__(self, task: seqio.Task, split: str, packer_args: dict, state: dict | None):
        self.task, self.split = task, split
        self.next_index = state["next_index"] if state else 0
        self.packer = DocumentPacker(self._read(self.next_index), **packer_args)
        if state and state["pending"]:
            first = min(index for index, _ in state["pending"])
            self.packer.restore(state["pending"], read_documents(task, split, first, self.next_index))

    def _read(self, start: int) -> Iterator[Document]:
        for index, tokens in read_documents(self.task, self.split, start):
            self.next_index = index + 1
            yield index, tokens

    def state(self) -> dict:
        return {"next_index": self.next_index, "pending": self.packer.state()}


class PackedStream:
    """Iterator over this process's packed batches; see the module docstring."""

    def __init__(self, mixture_config: Any, prep_dir: str | Path, vocab_path: str | Path, *,
                 batch_size: int, total_steps: int, seq_len: int | None = None, seed: int | None = None,
                 process_index: int = 0, process_count: int = 1, split: str = "train",
                 prefetch: int = 2, lookahead: int = 64, max_padding: float = 0.005):
        self.seq_len = int(seq_len if seq_len is not None else config_field(mixture_config, "seq_len", 8192))
        self.seed = int(seed if seed is not None else config_field(mixture_config, "seed", 0))
        if self.seq_len <= 0:
            raise ValueError(f"config.seq_len: must be > 0, got {self.seq_len}")
        if batch_size <= 0:
            raise ValueError(f"batch_size: must be > 0, got {batch_size}")
        if process_count <= 0 or batch_size % process_count:
            raise ValueError(f"process_count: must divide batch_size={batch_size}, got {process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index: must be in [0, {process_count}), got {process_index}")
        if prefetch < 0:
            raise ValueError(f"prefetch: must be >= 0, got {prefetch}")
        self.schedule = Schedule.from_config(mixture_config, total_steps)
        registered = tasks_lib.register_tasks(prep_dir, vocab_path, bos=config_field(mixture_config, "bos", "document"))
        missing = [t for t in self.schedule.tasks if t not in registered]
        if missing:
            raise ValueError(f"config.tasks: {missing} not found under {prep_dir} (registered: {registered})")
        self.task_names = list(self.schedule.tasks)
        self.batch_size, self.total_steps, self.split = batch_size, total_steps, split
        self.process_index, self.process_count = process_index, process_count
        self.local_batch_size = batch_size // process_count
        self.prefetch, self.lookahead, self.max_padding = prefetch, lookahead, max_padding
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max(prefetch, 1))
        self._stop = threading.Event()
        self._reset(self._initial_state())

    # ----- schedule, for logging -----
    def weights_at(self, step: int) -> dict[str, float]:
        return self.schedule.weights_at(step)

    def stage_at(self, step: int) -> str:
        return self.schedule.stage_at(step)

    # ----- state -----
    def _initial_state(self) -> dict:
        return {"version": STATE_VERSION, "step": 0, "seed": self.seed, "seq_len": self.seq_len,
                "batch_size": self.batch_size, "split": self.split, "lookahead": self.lookahead,
                "max_padding": self.max_padding, "tasks": {}}

    def get_state(self) -> dict:
        """State after the last batch returned by `next` (JSON-serialisable)."""
        return self._consumed_state

    def set_state(self, state: dict) -> None:
        """Continues exactly after the batch that `state` was taken at."""
        for key in ("version", "seed", "seq_len", "batch_size", "split", "lookahead", "max_padding"):
            if state.get(key) != self._initial_state()[key]:
                raise ValueError(f"stream state: {key}={state.get(key)!r} does not match this stream's "
                                 f"{self._initial_state()[key]!r}")
        self._halt()
        self._reset(state)

    @property
    def step(self) -> int:
        """The step of the next batch `next` returns."""
        return self._consumed_state["step"]

    def _reset(self, state: dict) -> None:
        self._consumed_state = state
        self._consumed_stats: dict[str, dict[str, int]] = {}
        self._produce_step = state["step"]
        self._sources: dict[str, _TaskSource] = {}
        self._saved_tasks = dict(state["tasks"])

    def _source(self, t: int) -> _TaskSource:
        """Opens a task's reader on first use (tasks never scheduled are never read)."""
        name = self.task_names[t]
        if name not in self._sources:
            task = seqio.get_mixture_or_task(name)
            packer_args = dict(seq_len=self.seq_len, lookahead=self.lookahead, max_padding=self.max_padding)
            self._sources[name] = _TaskSource(task, self.split, packer_args, self._saved_tasks.get(name))
        return self._sources[name]

    # ----- production -----
    def _produce(self) -> tuple[dict[str, np.ndarray], dict, dict]:
        step = self._produce_step
        assignment = row_tasks(self.schedule, self.seed, step, self.batch_size)
        lo = self.process_index * self.local_batch_size
        b, length = self.local_batch_size, self.seq_len
        batch = {k: np.zeros((b, length), np.int32) for k in ("inputs", "targets", "segment_ids", "positions")}
        batch["loss_weights"] = np.zeros((b, length), np.float32)
        for j, t in enumerate(assignment):
            pieces = self._source(int(t)).packer.next_row()
            if lo <= j < lo + b:
                write_row(pieces, batch, j - lo)
        batch["task_ids"] = assignment[lo:lo + b].astype(np.int32)
        self._produce_step = step + 1
        tasks_state = dict(self._saved_tasks)
        tasks_state.update({name: src.state() for name, src in self._sources.items()})
        state = {**self._initial_state(), "step": step + 1, "tasks": tasks_state}
        stats = {name: {"tokens_in": src.packer.tokens_in, "tokens_waiting": src.packer.tokens_waiting()}
                 for name, src in self._sources.items()}
        return batch, state, stats

    def _worker(self) -> None:
        try:
            while not self._stop.is_set():
                item = self._produce()
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._queue.put(e)

    def _halt(self) -> None:
        if self._thread is not None:
            self._stop.set()
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread = None
            self._queue = queue.Queue(maxsize=max(self.prefetch, 1))
            self._stop = threading.Event()

    def close(self) -> None:
        self._halt()

    def __iter__(self) -> "PackedStream":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.prefetch == 0:
            item = self._produce()
        else:
            if self._thread is None:
                self._thread = threading.Thread(target=self._worker, name="PackedStream", daemon=True)
                self._thread.start()
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._thread = None
                raise item
        batch, self._consumed_state, self._consumed_stats = item
        return batch

    def token_counts(self) -> dict[str, dict[str, int]]:
        """Per task, at the last returned batch: tokens read into the packer and still waiting there."""
        return self._consumed_stats

    def __enter__(self) -> "PackedStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

