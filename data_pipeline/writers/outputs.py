"""Where the job writes, and how it never deletes what it did not create.

One run at a time holds ``OUT`` (common/run_lock.py: a lock file per run, checked by
listing, so it works on ``gs://`` without conditional writes). A run writes everything into its own
staging folder ``OUT/_staging-<run id>/`` and, only after the pipeline, the metadata and
the run's checks succeeded, commits: the previous run's outputs (the names listed in its
marker file, each a plain child name of ``OUT``) are removed, the staged entries are moved
into ``OUT`` and a new marker ``OUT/PREPARE_OUTPUTS.json`` lists them. A failed run leaves
``OUT`` as it was; its staging folder is its own and no other run deletes it. An ``OUT``
that holds anything else is refused unless the user asks to overwrite, and even then only
what a marker names as this job's output is removed; a folder without a marker is never
touched. Everything goes through common/fs.py, so this works on ``gs://`` and on any
filesystem registered there (object stores have no directory rename: files move one by
one).

The JSONL side outputs (rejected, dead letters, contamination hits, the driver's work
files) are written by ``WriteJsonl`` through the same layer: records are grouped into a
fixed number of shards by a hash of their content and each shard file is written whole,
sorted, so a retried bundle rewrites identical bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from absl import logging

from common import fs
from common.checks import ConfigError
from common.run_lock import LOCK_PREFIX

MARKER = "PREPARE_OUTPUTS.json"
STAGING_PREFIX = "_staging-"
JOB = "data_pipeline.prepare"


def _marker(path: str) -> dict[str, Any] | None:
    marker = fs.join(path, MARKER)
    if not fs.exists(marker):
        return None
    data = json.loads(fs.read_text(marker))
    return data if isinstance(data, dict) and data.get("job") == JOB else None


def _ours(out: str) -> set[str]:
    """Names in ``out`` that belong to runs of this job, finished or not: locks and staging folders."""
    return {
        n
        for n in fs.listdir(out)
        if n.startswith(LOCK_PREFIX)
        or (n.startswith(STAGING_PREFIX) and _marker(fs.join(out, n)) is not None)
    }


def _plain_name(name: object) -> bool:
    """A child of ``OUT`` by name alone: never a path, ``..``, or something of a run in progress."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..", MARKER)
        and "/" not in name
        and "\\" not in name
        and not name.startswith((STAGING_PREFIX, LOCK_PREFIX))
    )


def check_output_dir(out: str, overwrite: bool) -> list[str]:
    """Fails unless ``out`` may be written; returns the old outputs a commit will replace.

    A folder holding only locks and staging folders of this job counts as empty.
    """
    if not fs.exists(out) or not set(fs.listdir(out)) - _ours(out):
        return []
    marker = _marker(out)
    if not overwrite:
        raise ConfigError(
            f"config.output_dir: {out} is not empty; pass --overwrite (config.overwrite=True) to "
            f"replace the outputs of an earlier prepare run there"
        )
    if marker is None:
        raise ConfigError(
            f"config.output_dir: {out} is not empty and has no {MARKER}, so it is not the output of "
            f"an earlier prepare run; refusing to delete anything there: choose an empty folder"
        )
    names = marker.get("outputs")
    bad = [n for n in names if not _plain_name(n)] if isinstance(names, list) else [names]
    if bad:
        raise ConfigError(
            f"config.output_dir: {fs.join(out, MARKER)} names {bad!r}, not a plain name of an entry in "
            f"{out}; refusing to delete anything: fix or remove the marker"
        )
    return list(names)


def new_staging(out: str, run_id: str) -> str:
    """This run's folder for its outputs, marked as this job's."""
    staging = fs.join(out, STAGING_PREFIX + run_id)
    fs.makedirs(staging)
    fs.write_text(fs.join(staging, MARKER), json.dumps({"job": JOB, "run_id": run_id, "outputs": []}))
    return staging


def commit(out: str, staging: str, old_outputs: list[str]) -> list[str]:
    """Replaces the old outputs with the staged ones; other runs' staging folders stay.

    The marker names the old and the new outputs together while they are swapped, so a
    commit killed halfway leaves a folder that the next run with --overwrite replaces
    whole, instead of one it refuses as holding unknown entries.
    """
    names = [n for n in fs.listdir(staging) if n != MARKER]
    clash = [n for n in names if fs.exists(fs.join(out, n)) and n not in old_outputs]
    if clash:
        raise RuntimeError(
            f"{out}: {clash} exist and are not outputs of an earlier prepare run; the new outputs "
            f"stay in {staging}"
        )
    _write_marker(out, sorted(set(old_outputs) | set(names)), committing=fs.basename(staging))
    for name in old_outputs:
        fs.rmtree(fs.join(out, name))
    for name in names:
        fs.move(fs.join(staging, name), fs.join(out, name))
    _write_marker(out, sorted(names))
    fs.rmtree(staging)
    return names


def _write_marker(out: str, names: list[str], **extra: str) -> None:
    fs.write_text(
        fs.join(out, MARKER),
        json.dumps(
            {
                "job": JOB,
                "outputs": names,
                "committed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **extra,
            }
        ),
    )


def read_jsonl_files(prefix: str) -> list[Any]:
    """Rows of every ``prefix*`` file written by ``WriteJsonl``."""
    rows = []
    for path in fs.glob(prefix + "*"):
        data = fs.read_bytes(path)
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        rows.extend(json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip())
    return rows


def _shard_of(line: str, shards: int) -> int:
    return int.from_bytes(hashlib.blake2b(line.encode("utf-8"), digest_size=8).digest(), "big") % shards


class _WriteShard(beam.DoFn):
    def __init__(self, prefix: str, shards: int, compress: bool, exact: bool) -> None:
        self._prefix, self._shards, self._compress, self._exact = prefix, shards, compress, exact

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[str]:
        shard, lines = element
        data = "".join(line + "\n" for line in sorted(lines)).encode("utf-8")
        suffix = ".jsonl.gz" if self._compress else ".jsonl"
        path = self._prefix if self._exact else f"{self._prefix}-{shard:05d}-of-{self._shards:05d}{suffix}"
        fs.write_bytes(path, gzip.compress(data, mtime=0) if self._compress else data)
        logging.info("wrote %s", path)
        yield path


class WriteJsonl(beam.PTransform):
    """Elements -> ``prefix-SSSSS-of-NNNNN.jsonl[.gz]`` files, written through common/fs.py.

    A shard is sorted in memory: give outputs that can be large enough shards. ``exact=True``
    writes one file named ``prefix`` itself. Shards that get no element are not written.
    """

    def __init__(self, prefix: str, shards: int = 1, compress: bool = True, exact: bool = False) -> None:
        super().__init__()
        self._prefix, self._shards, self._compress, self._exact = (
            prefix,
            (1 if exact else shards),
            compress,
            exact,
        )

    def expand(self, pcoll):
        shards = self._shards
        return (
            pcoll
            | "Encode" >> beam.Map(lambda e: json.dumps(e, ensure_ascii=False, sort_keys=True))
            | "KeyByShard" >> beam.Map(lambda line: (_shard_of(line, shards), line))
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShard(self._prefix, shards, self._compress, self._exact))
        )
