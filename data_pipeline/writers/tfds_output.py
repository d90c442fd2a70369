"""Writes each domain as a TFDS dataset directory (data_pipeline/prepared.py reads them).

Workers write the shards: records are keyed by (domain, split, shard) with the shard and
the split both drawn from a hash of the id, so a record's place is stable across runs and
runners, and each shard is sorted by id (deterministic bytes). Every shard writer reports
its example count and byte size, so the driver writes the metadata
(``tfds.folder_dataset.write_metadata``) without reading the data back. A shard is
framed by TensorFlow's TFRecordWriter into a local temporary file and copied to its place
through common/fs.py, so any filesystem that layer knows works as an output. The features
are data_pipeline.prepared's, the module every reader opens a prepared directory with.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from common import fs
from data_pipeline.prepared import SPLITS, features

FILE_FORMAT = "tfrecord"


def unit_hash(record_id: str, salt: str) -> float:
    """A stable pseudo-random number in [0, 1) from the id (Python's hash() is salted per process)."""
    digest = hashlib.sha1(f"{salt}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(record_id: str, validation_fraction: float) -> str:
    return "validation" if unit_hash(record_id, "split") < validation_fraction else "train"


def shard_path(output_dir: str, domain: str, split: str, shard: int, num_shards: int) -> str:
    name = f"{domain}-{split}.{FILE_FORMAT}-{shard:05d}-of-{num_shards:05d}"
    return fs.join(output_dir, domain, name)


def example_of(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "text": record["text"],
        "id": record["id"],
        "source": record["source"],
        "domain": record["domain"],
        "language": record.get("language") or "und",
        "quality_score": float(record.get("quality_score", 0.0)),
        "high_quality": bool(record.get("high_quality", False)),
    }


class _WriteShardFn(beam.DoFn):
    def __init__(self, output_dir: str, num_shards: dict[str, int]):
        self._output_dir = output_dir
        self._num_shards = num_shards

    def setup(self):
        self._features = features()

    def process(
        self, element: tuple[tuple[str, str, int], Iterable[dict[str, Any]]]
    ) -> Iterator[dict[str, Any]]:
        import tensorflow as tf

        (domain, split, shard), group = element
        path = shard_path(self._output_dir, domain, split, shard, self._num_shards[split])
        count = size = 0
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "shard.tfrecord")
            with tf.io.TFRecordWriter(local) as writer:
                for record in sorted(group, key=lambda r: r["id"]):
                    data = self._features.serialize_example(self._features.encode_example(example_of(record)))
                    writer.write(data)
                    count += 1
                    size += len(data)
            with open(local, "rb") as src, fs.open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
        yield {"domain": domain, "split": split, "shard": shard, "num_examples": count, "num_bytes": size}


class WriteTfdsShards(beam.PTransform):
    """Kept records -> shard files under ``output_dir/<domain>/``; emits one info dict per shard."""

    def __init__(self, output_dir: str, validation_fraction: float, num_shards: dict[str, int]):
        super().__init__()
        self._output_dir = output_dir
        self._validation_fraction = validation_fraction
        self._num_shards = dict(num_shards)

    def expand(self, kept):
        fraction, shards = self._validation_fraction, self._num_shards

        def key(record: dict[str, Any]) -> tuple[tuple[str, str, int], dict[str, Any]]:
            split = split_of(record["id"], fraction)
            shard = int(unit_hash(record["id"], "shard") * shards[split])
            return (record["domain"], split, shard), record

        return (
            kept
            | "KeyByShard" >> beam.Map(key)
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShardFn(self._output_dir, shards))
        )


def write_metadata(
    output_dir: str, domains: Iterable[str], shard_infos: list[dict[str, Any]], num_shards: dict[str, int]
) -> None:
    """Fills shards that got no records with empty files, then writes TFDS metadata per domain."""
    import tensorflow_datasets as tfds

    by_key = {(i["domain"], i["split"], i["shard"]): i for i in shard_infos}
    for domain in domains:
        domain_dir = fs.makedirs(fs.join(output_dir, domain))
        split_infos = []
        for split in SPLITS:
            lengths, total_bytes = [], 0
            for shard in range(num_shards[split]):
                info = by_key.get((domain, split, shard))
                if info is None:
                    fs.write_bytes(shard_path(output_dir, domain, split, shard, num_shards[split]), b"")
                    lengths.append(0)
                else:
                    lengths.append(info["num_examples"])
                    total_bytes += info["num_bytes"]
            split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=lengths, num_bytes=total_bytes))
        tfds.folder_dataset.write_metadata(
            data_dir=domain_dir,
            features=features(),
            split_infos=split_infos,
            filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
            check_data=False,
            description=f"Prepared {domain} documents (data_pipeline.prepare).",
        )
