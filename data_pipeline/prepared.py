"""Reads prepared data: the one way every stage finds and opens what data_pipeline.prepare
wrote (data_pipeline/writers/tfds_output.py writes it; docs/DESIGN.md fixes the layout).

`PREP_DIR/<domain>` is a TFDS dataset directory with the features of `features()`:

- find: `is_dataset_dir`, `dataset_dir` (a folder or its newest TFDS version folder),
  `domain_dir`, `domains` (the domains present under PREP_DIR);
- open: `open_prepared` (a TFDS builder with the project's own features, never the code the
  folder's features.json names), `read_split` (one split, or a slice of it, as a
  tf.data.Dataset in the files' order);
- read: `examples` (numpy dicts), `texts` (the documents' text), `count` (examples in a split).

TensorFlow Datasets is imported when a dataset is opened, not with this module: the commands
that import it (tokenizer.train, mixtures.pack) answer --help and check their config first.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

from common import fs
from common.domains import DOMAINS

SPLITS = ("train", "validation")
INFO_FILE = "dataset_info.json"
_VERSION = re.compile(r"\d+\.\d+\.\d+")  # TFDS version folders, e.g. 1.0.0


def features():
    """The features every prepared dataset has (docs/DESIGN.md)."""
    import numpy as np
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict(
        {
            "text": tfds.features.Text(),
            "id": tfds.features.Text(),
            "source": tfds.features.Text(),
            "domain": tfds.features.Text(),
            "language": tfds.features.Text(),
            "quality_score": tfds.features.Scalar(np.float32),
            "high_quality": tfds.features.Scalar(np.bool_),
        }
    )


# ----------------------------------------------------------------------------- find


def is_dataset_dir(path: fs.PathLike) -> bool:
    """True when `path` holds a TFDS dataset (its dataset_info.json)."""
    return fs.isfile(fs.join(path, INFO_FILE))


def dataset_dir(path: str) -> str | None:
    """The directory holding dataset_info.json: `path` itself or its newest version folder."""
    if is_dataset_dir(path):
        return path
    versions = [
        fs.dirname(p)
        for p in fs.glob(fs.join(path, "*", INFO_FILE))
        if _VERSION.fullmatch(fs.basename(fs.dirname(p)))
    ]
    return max(versions, key=lambda v: tuple(map(int, fs.basename(v).split(".")))) if versions else None


def domain_dir(prep_dir: fs.PathLike, domain: str) -> str:
    """The TFDS dataset directory of a domain (docs/DESIGN.md); gs:// kept intact."""
    return fs.join(prep_dir, domain)


def domains(prep_dir: fs.PathLike) -> list[str]:
    """The domains (common.domains order) that have a dataset under `prep_dir`."""
    return [d for d in DOMAINS if is_dataset_dir(domain_dir(prep_dir, d))]


# ----------------------------------------------------------------------------- open


@functools.cache
def _prepared_builder_class() -> type:
    import tensorflow_datasets as tfds

    class PreparedBuilder(tfds.core.read_only_builder.ReadOnlyBuilder, skip_registration=True):
        """TFDS's reader of a dataset directory, with the features of ``features()``."""

        def _info(self) -> tfds.core.DatasetInfo:
            return tfds.core.DatasetInfo(builder=self, features=features())

    return PreparedBuilder


def open_prepared(path: fs.PathLike):
    """A prepared dataset directory (``PREP/<domain>``) as a TFDS builder whose features are
    ``features()``: ``tfds.builder_from_directory`` instead imports the module that the
    folder's features.json names, so opening a folder from elsewhere would run its code."""
    return _prepared_builder_class()(builder_dir=fs.resolve(str(path)))


def read_split(path: fs.PathLike, split: str, one_file_at_a_time: bool = False, builder: Any = None):
    """The examples of `split` (a TFDS split or slice: "train", "train[10:20]") in file order.

    `one_file_at_a_time` reads the shard files one after the other (the packer's record
    order); otherwise TFDS interleaves them as it does by default. `builder`: one already
    opened with `open_prepared(path)`.
    """
    import tensorflow_datasets as tfds

    read_config = tfds.ReadConfig(interleave_cycle_length=1) if one_file_at_a_time else None
    builder = builder or open_prepared(path)
    return builder.as_dataset(split=split, shuffle_files=False, read_config=read_config)


# ----------------------------------------------------------------------------- read


def examples(path: fs.PathLike, split: str, limit: int = 0) -> Iterator[dict[str, Any]]:
    """The first `limit` examples (0: all) of `split`, as dicts of numpy values."""
    dataset = read_split(path, split)
    if limit:
        dataset = dataset.take(limit)
    yield from dataset.as_numpy_iterator()


def texts(path: fs.PathLike, split: str, limit: int = 0) -> Iterator[str]:
    """The documents' text of the first `limit` examples (0: all) of `split`."""
    for example in examples(path, split, limit):
        yield example["text"].decode("utf-8")


def count(path: fs.PathLike, split: str, builder: Any = None) -> int:
    """Examples in `split` (from the dataset's metadata; nothing is read)."""
    return (builder or open_prepared(path)).info.splits[split].num_examples
