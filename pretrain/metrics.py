"""Training metrics: WORKDIR/metrics.jsonl (one object per logged step) and TensorBoard.

On resume the log is cut back to the restored step, so a step killed after logging but
before its checkpoint appears once, not twice; the cut replaces the file atomically
(common.fs.write_text_atomic), so a kill during it cannot truncate the log. Each record
is then appended: on a local disk to the open file, flushed per line; on an object store
(`gs://`, which cannot append) the whole log is rewritten, and the store publishes the new
object only once it is complete, so a kill leaves the previous version.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import jax

from common import fs


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}/{key}" if prefix else str(key), inner, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)


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
        existing = fs.read_text(self.path).splitlines() if fs.exists(self.path) else []
        records = _parse([line for line in existing if line.strip()])
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

    def close(self) -> None:
        if self.enabled:
            if self._file is not None:
                self._file.close()
            if self._tb is not None:
                self._tb.close()


def read_metrics(workdir: fs.PathLike) -> list[dict[str, Any]]:
    """The records of WORKDIR/metrics.jsonl, in order."""
    text = fs.read_text(fs.join(workdir, "metrics.jsonl"))
    return [json.loads(line) for _, line in _parse([l for l in text.splitlines() if l.strip()])]
