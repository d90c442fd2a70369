"""Training metrics: WORKDIR/metrics.jsonl (one object per logged step) and TensorBoard.

On resume the log is cut back to the restored step, so a step killed after logging but
before its checkpoint appears once, not twice. WORKDIR may be a gs:// path (etils.epath):
object stores cannot append, so there the whole file is rewritten at each write.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import jax
from etils import epath


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}/{key}" if prefix else str(key), inner, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)


class MetricsWriter:
    """Appends JSON lines and TensorBoard scalars; a no-op on non-chief processes."""

    def __init__(self, workdir: str | epath.PathLike, resume_step: int = 0, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self._tb = None
        if not self.enabled:
            return
        self._lines = self._lines_until(resume_step)
        self.path.write_text("".join(self._lines))
        self._append = isinstance(self.path, Path)  # local files append; object stores rewrite
        self._file = self.path.open("a") if self._append else None
        if tensorboard:
            import tensorflow as tf  # Lazy: TensorFlow takes seconds to import.

            tf.config.set_visible_devices([], "GPU")
            self._tb = tf.summary.create_file_writer(str(epath.Path(workdir) / "tensorboard"))

    def _lines_until(self, step: int) -> list[str]:
        if not self.path.exists():
            return []
        return [line + "\n" for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]

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
            self.path.write_text("".join(self._lines))
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
            if self._append:
                self._file.close()
            if self._tb is not None:
                self._tb.close()


def read_metrics(workdir: str | epath.PathLike) -> list[dict[str, Any]]:
    """The records of WORKDIR/metrics.jsonl, in order."""
    path = epath.Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
