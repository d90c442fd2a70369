"""Where the job writes, and how it never deletes what it did not create.

A run writes everything into a fresh staging folder ``OUT/_staging-<run id>/`` and, only
after the pipeline and the metadata succeeded, commits: the previous run's outputs (the
names listed in its marker file) are removed, the staged entries are moved into ``OUT``
and a new marker ``OUT/PREPARE_OUTPUTS.json`` lists them. A failed run leaves ``OUT`` as it
was. An ``OUT`` that holds anything is refused unless the user asks to overwrite, and even
then only what a marker names as this job's output is removed; a folder without a marker
is never touched. Everything goes through common/fs.py, so this works on ``gs://`` and on
any filesystem registered there (object stores have no directory rename: files move one
by one).

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
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from absl import logging

from common import fs
from common.checks import ConfigError

MARKER = "PREPARE_OUTPUTS.json"
STAGING_PREFIX = "_staging-"
JOB = "data_pipeline.prepare"


def _marker(path: str) -> dict[str, Any] | None:
    marker = fs.join(path, MARKER)
    if not fs.exists(marker):
        return None
    data = json.loads(fs.read_text(marker))
    return data if isinstance(data, dict) and data.get("job") == JOB else None


def _stale_staging(out: str) -> list[str]:
    """Staging folders that failed runs of this job left in ``out`` (each holds our marker)."""
    return [n for n in fs.listdir(out) if n.startswith(STAGING_PREFIX) and _marker(fs.join(out, n)) is not None]


def check_output_dir(out: str, overwrite: bool) -> list[str]:
    """Fails unless ``out`` may be written; returns the old outputs a commit will replace.

    A folder holding only what failed runs of this job left behind counts as empty.
    """
    if not fs.exists(out) or not set(fs.listdir(out)) - set(_stale_staging(out)):
        return []
    marker = _marker(out)
    if not overwrite:
        raise ConfigError(f"config.output_dir: {out} is not empty; pass --overwrite (config.overwrite=True) to "
                          f"replace the outputs of an earlier prepare run there")
    if marker is None:
        raise ConfigError(f"config.output_dir: {out} is not empty and has no {MARKER}, so it is not the output of "
                          f"an earlier prepare run; refusing to delete anything there: choose an empty folder")
    return [name for name in marker["outputs"] if name != MARKER]


def new_staging(out: str) -> str:
    """A fresh folder for this run's outputs, marked so a later --overwrite may remove it."""
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]
    staging = fs.join(out, STAGING_PREFIX + run_id)
    fs.makedirs(staging)
    fs.write_text(fs.join(staging, MARKER), json.dumps({"job": JOB, "run_id": run_id, "outputs": []}))
    return staging


def commit(out: str, staging: str, old_outputs: list[str]) -> list[str]:
    """Replaces the old outputs (and stale staging folders of failed runs) with the staged ones."""
    names = [n for n in fs.listdir(staging) if n != MARKER]
    clash = [n for n in names if fs.exists(fs.join(out, n)) and n not in old_outputs]
    if clash:
        raise RuntimeError(f"{out}: {clash} exist and are not outputs of an earlier prepare run; the new outputs "
                           f"stay in {staging}")
    stale = [n for n in _stale_staging(out) if fs.join(out, n) != staging]
    for name in old_outputs + stale:
        fs.rmtree(fs.join(out, name))
    for name in names:
        _move(fs.join(staging, name), fs.join(out, name))
    fs.write_text(fs.join(out, MARKER), json.dumps({"job": JOB, "outputs": sorted(names),
                                                    "committed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    fs.rmtree(staging)
    return names


def _move(src: str, dst: str) -> None:
    if not fs.is_uri(src):
        fs.rename(src, dst)  # one rename on a local disk
        return
    for path in fs.walk_files(src):
        target = dst + path[len(src):]
        fs.makedirs(fs.dirname(target))
        fs.rename(path, target)


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
        self._prefix, self._shards, self._compress, self._exact = prefix, (1 if exact else shards), compress, exact

    def expand(self, pcoll):
        shards = self._shards
        return (
            pcoll
            | "Encode" >> beam.Map(lambda e: json.dumps(e, ensure_ascii=False, sort_keys=True))
            | "KeyByShard" >> beam.Map(lambda line: (_shard_of(line, shards), line))
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShard(self._prefix, shards, self._compress, self._exact))
        )
