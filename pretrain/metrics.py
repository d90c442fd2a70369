"""Training metrics: WORKDIR/metrics.jsonl (one object per logged step) and TensorBoard.

On resume the log is cut back to the restored step, so a step killed after logging but
before its checkpoint appears once, not twice; the cut replaces the file atomically
(common.fs.write_text_atomic), so a kill during it cannot truncate the log. Each record
is then appended: on a local disk to the open file, flushed per line; on an object store
(`gs://`, which cannot append) the whole log is rewritten, and the store publishes the new
object only once it is complete, so a kill leaves the previous version.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Mapping
from typing import Any

import jax

from common import fs


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}/{key}" if prefix else str(key), inner, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)


def _read_lines(path: str) -> list[str]:
    """The non-blank lines of metrics.jsonl; bytes that are not UTF-8 (a bad sector, a torn
    write) become U+FFFD, so their line fails to parse and is dropped, not the resume."""
    return [
        line for line in fs.read_bytes(path).decode("utf-8", errors="replace").splitlines() if line.strip()
    ]


def _parse(lines: list[str]) -> list[tuple[int, str]]:
    """(step, line) of each complete record; a torn last line (a kill mid-append) is dropped."""
    out = []
    for line in lines:
        try:
            out.append((int(json.loads(line)["step"]), line))
        except (ValueError, KeyError, TypeError):
            continue
    return out


class MetricsWriter:
    """Appends JSON lines and TensorBoard scalars; a no-op on non-chief processes."""

    def __init__(self, workdir: fs.PathLike, resume_step: int = 0, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = fs.join(workdir, "metrics.jsonl")
        self._tb = None
        self._file = None
        if not self.enabled:
            return
        existing = _read_lines(self.path) if fs.exists(self.path) else []
        records = _parse(existing)
        self._lines = [line + "\n" for step, line in records if step <= resume_step]
        if len(self._lines) != len(existing) or not fs.exists(self.path):
            fs.write_text_atomic(self.path, "".join(self._lines))
        self._append = not fs.is_uri(self.path)  # local files append; object stores rewrite
        if self._append:
            self._file = fs.open(self.path, "a")
        if tensorboard:
            import tensorflow as tf  # Lazy: TensorFlow takes seconds to import.

            tf.config.set_visible_devices([], "GPU")
            self._tb = tf.summary.create_file_writer(fs.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Logs `metrics` (nested dicts allowed, e.g. loss per source) at `step`."""
        if not self.enabled:
            return
        line = json.dumps({"step": int(step), **metrics}, allow_nan=True) + "\n"
        self._lines.append(line)
        if self._append:
            self._file.write(line)
            self._file.flush()
        else:
            fs.write_text(self.path, "".join(self._lines))
        if self._tb is not None:
            import tensorflow as tf

            scalars: dict[str, float] = {}
            _flatten("", metrics, scalars)
            with self._tb.as_default(step=int(step)):
                for name, value in scalars.items():
                    if math.isfinite(value):
                        tf.summary.scalar(name, value)
            self._tb.flush()

    def records(self) -> list[dict[str, Any]]:
        """The records kept so far (those up to the resume step, then this session's)."""
        return [json.loads(line) for line in self._lines] if self.enabled else []

    def close(self) -> None:
        if self.enabled:
            if self._file is not None:
                self._file.close()
            if self._tb is not None:
                self._tb.close()


def read_metrics(workdir: fs.PathLike) -> list[dict[str, Any]]:
    """The records of WORKDIR/metrics.jsonl, in order."""
    return [json.loads(line) for _, line in _parse(_read_lines(fs.join(workdir, "metrics.jsonl")))]


GOODPUT_CATEGORIES = ("restart", "compile", "data_wait", "checkpoint", "eval")


class Goodput:
    """Seconds of wall time lost to each overhead, so a run reports what share was training.

    Categories: `restart` (process start to the first step: imports, distributed init,
    state init or restore, plus the logged work a resume recomputes), `compile` (XLA
    compilation of the step), `data_wait` (the host blocked on the input stream),
    `checkpoint` (the blocking part of saves and the final wait for async writes), `eval`
    (held-out evaluation). The rest of the wall time is productive stepping.
    """

    def __init__(self, started: float | None = None):
        self._clock = time.perf_counter
        self.started = self._clock() if started is None else started
        self.lost = dict.fromkeys(GOODPUT_CATEGORIES, 0.0)

    def add(self, category: str, seconds: float) -> None:
        self.lost[category] += seconds

    def timed(self, category: str):
        """Context manager adding the time spent inside it to `category`."""

        @contextlib.contextmanager
        def timer():
            start = self._clock()
            try:
                yield
            finally:
                self.add(category, self._clock() - start)

        return timer()

    def snapshot(self) -> dict[str, float]:
        """{wall, <category>_s..., productive_s, goodput} since this session started."""
        wall = self._clock() - self.started
        lost = sum(self.lost.values())
        return {
            "wall_s": wall,
            **{f"{k}_s": v for k, v in self.lost.items()},
            "productive_s": max(wall - lost, 0.0),
            "goodput": max(wall - lost, 0.0) / wall if wall > 0 else 0.0,
        }


def recomputed_seconds(workdir: fs.PathLike, resume_step: int) -> float:
    """Step time a resume from `resume_step` throws away: logged intervals past it.

    Each logged record's `step_time` is the mean over the steps since the previous record,
    so the work after the restored checkpoint is the sum of those steps' times.
    """
    if not fs.exists(fs.join(workdir, "metrics.jsonl")):
        return 0.0
    records = read_metrics(workdir)
    lost, previous = 0.0, resume_step
    for r in records:
        if r["step"] > resume_step:
            lost += r.get("step_time", 0.0) * (r["step"] - previous)
            previous = r["step"]
    return lost


def goodput_over_sessions(records: list[dict[str, Any]]) -> dict[str, float]:
    """Sums each session's last cumulative goodput snapshot (a session = one process run)."""
    last: dict[int, dict[str, float]] = {}
    for r in records:
        if "goodput" in r:
            last[r["goodput"].get("session", 0)] = r["goodput"]
    totals = {
        key: sum(s.get(key, 0.0) for s in last.values())
        for key in ("wall_s", *(f"{k}_s" for k in GOODPUT_CATEGORIES), "productive_s")
    }
    totals["goodput"] = totals["productive_s"] / totals["wall_s"] if totals["wall_s"] else 0.0
    totals["sessions"] = len(last)
    return totals
