"""Progress of the read stage on any runner: workers write running totals, the launcher sums them.

Beam's DirectRunner blocks in ``run()`` and hands back its counters only at the end, and
Dataflow's console shows stages, not input files. So each reading worker writes its totals
(input files finished, records read) to ``FOLDER/<worker>.json`` at most every few seconds and
when a bundle ends, and a thread of the launching process sums those files and logs one line
with the share of input files read and an ETA. The folder lies in the run's work folder, so it
is on the same file system as the output (local or gs://) and goes with it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable

from common import fs

WRITE_EVERY_S = 5.0


class WorkerTotals:
    """One worker's running totals, written to its own file (no two workers share one)."""

    def __init__(self, folder: str):
        self._path = fs.join(folder, f"{uuid.uuid4().hex}.json")
        self._totals = {"files": 0, "records": 0}
        self._written_at = float("-inf")

    def add(self, files: int = 0, records: int = 0) -> None:
        self._totals["files"] += files
        self._totals["records"] += records
        if time.monotonic() - self._written_at >= WRITE_EVERY_S:
            self.write()

    def write(self) -> None:
        fs.write_text_atomic(self._path, json.dumps(self._totals))
        self._written_at = time.monotonic()


def read_totals(folder: str) -> dict[str, int]:
    """Sum of every worker's totals (a file being replaced or half-written is skipped this time)."""
    totals = {"files": 0, "records": 0}
    if not fs.isdir(folder):
        return totals
    for name in fs.listdir(folder):
        if not name.endswith(".json"):  # a local atomic write's temporary file
            continue
        try:
            worker = json.loads(fs.read_text(fs.join(folder, name)))
        except (OSError, ValueError):
            continue
        for key in totals:
            totals[key] += int(worker.get(key, 0))
    return totals


def line(totals: dict[str, int], total_files: int, elapsed: float, finished: bool = False) -> str:
    """``read 3 of 12 input files (25%), 10,234 records, 0:45 elapsed, reading ETA 2:15``."""
    done = min(totals["files"], total_files)
    text = (
        f"read {done:,} of {total_files:,} input files ({done / max(total_files, 1):.0%}), "
        f"{totals['records']:,} records, {_clock(elapsed)} elapsed"
    )
    if finished:
        return text
    if done >= total_files:
        return text + "; deduplicating, decontaminating and writing"
    if done:
        return text + f", reading ETA {_clock(elapsed * (total_files - done) / done)}"
    return text


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Reporter:
    """Logs ``line(...)`` every ``every_s`` seconds while the pipeline runs, and once at the end."""

    def __init__(self, folder: str, total_files: int, say: Callable[[str], None], every_s: float = 30.0):
        self._folder, self._total, self._say, self._every = folder, total_files, say, every_s
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="read-progress", daemon=True)

    def __enter__(self) -> Reporter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self._report(finished=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self._report()

    def _report(self, finished: bool = False) -> None:
        elapsed = time.monotonic() - self._start
        self._say(line(read_totals(self._folder), self._total, elapsed, finished))
