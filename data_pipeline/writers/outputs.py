"""The job's JSONL side outputs (rejected, dead letters, contamination hits, the driver's work
files), written by ``WriteJsonl`` through common/fs.py (the run's commit is common/outputs.py): records are grouped into a
fixed number of shards by a hash of their content and each shard file is written whole,
sorted, so a retried bundle rewrites identical bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from absl import logging

from common import fs


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
