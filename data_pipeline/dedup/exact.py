"""Exact dedup: documents whose normalised text hashes alike keep one representative.

The representative of a duplicate group is the record with the smallest ``(id, source)``,
so reruns and different runners keep the same document. Groups are scanned in one pass
holding only the current best record, so a boilerplate text repeated a million times
does not have to fit in a worker's memory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import ml_collections
from apache_beam.metrics import Metrics

from common import checks
from data_pipeline.dedup.shingles import normalized_words
from data_pipeline.records import REJECTED, rejection

REASON = "exact_duplicate"
NORMALIZATIONS = ("none", "case_whitespace", "words")
_SPACE_RE = re.compile(r"\s+")


def default_config() -> ml_collections.ConfigDict:
    """Fields of ``config.dedup``."""
    return ml_collections.ConfigDict(
        {
            "enabled": True,
            # none: raw text; case_whitespace: lower-case, whitespace runs folded;
            # words: also punctuation folded (only the word sequence counts).
            "normalization": "case_whitespace",
        }
    )


def validate(config: ml_collections.ConfigDict, prefix: str = "dedup") -> None:
    """Fail at start with the field name on bad values."""
    checks.one_of(config.normalization, NORMALIZATIONS, f"{prefix}.normalization")


def normalize(text: str, normalization: str) -> str:
    """The text that two documents must share to count as exact duplicates."""
    if normalization == "none":
        return text
    if normalization == "case_whitespace":
        return _SPACE_RE.sub(" ", text).strip().lower()
    return " ".join(normalized_words(text))


def text_hash(text: str, normalization: str) -> bytes:
    """128-bit digest of the normalised text."""
    return hashlib.blake2b(normalize(text, normalization).encode("utf-8"), digest_size=16).digest()


def record_key(record: dict[str, Any]) -> tuple[str, str]:
    """Total order used to pick representatives deterministically."""
    return (record["id"], record["source"])


class _KeepRepresentative(beam.DoFn):
    """One pass over a duplicate group: keep the smallest key, reject every other record."""

    def __init__(self) -> None:
        self._dropped = Metrics.counter("dedup", REASON)
        self._groups = Metrics.counter("dedup", "exact_duplicate_groups")

    def process(self, element: tuple[bytes, Iterable[dict[str, Any]]]) -> Iterator[Any]:
        _, records = element
        best = None
        dropped = False
        for record in records:
            if best is None:
                best = record
                continue
            if record_key(record) < record_key(best):
                record, best = best, record
            if not dropped:
                self._groups.inc()
            dropped = True
            self._dropped.inc()
            yield beam.pvalue.TaggedOutput(REJECTED, rejection(record, REASON))
        if best is None:
            return
        yield best


class ExactDedup(beam.PTransform):
    """records -> (kept, rejected); rejected reason ``exact_duplicate``."""

    def __init__(self, config: ml_collections.ConfigDict) -> None:
        super().__init__()
        validate(config)
        self._normalization = str(config.normalization)

    def expand(self, records: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        normalization = self._normalization
        results = (
            records
            | "KeyByTextHash" >> beam.Map(lambda r: (text_hash(r["text"], normalization), r))
            | "GroupByTextHash" >> beam.GroupByKey()
            | "KeepRepresentative" >> beam.ParDo(_KeepRepresentative()).with_outputs(REJECTED, main="kept")
        )
        return results.kept, results[REJECTED]
