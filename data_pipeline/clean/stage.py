"""The per-document stage: normalise, run the domain's filter chain, redact PII.

One DoFn for all three so a record is touched once per worker (no serialisation between
them); each outcome is a Beam counter named after its reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from data_pipeline import records
from data_pipeline.clean.normalize import normalize_record
from data_pipeline.clean.pii import Redactor
from data_pipeline.filters.base import Filter
from data_pipeline.filters.chain import run_chain


class CleanFn(beam.DoFn):
    def __init__(self, chains: dict[str, list[Filter]], redactor: Redactor | None, form: str = "NFC"):
        self._chains = chains
        self._redactor = redactor
        self._form = form
        self._kept = beam.metrics.Metrics.counter("data_pipeline", "kept_after_filters")
        self._redactions = beam.metrics.Metrics.counter("data_pipeline", "redactions")

    def process(self, record: dict[str, Any]) -> Iterator[Any]:
        record, reason = run_chain(self._chains[record["domain"]], normalize_record(record, self._form))
        if reason is not None:
            beam.metrics.Metrics.counter("data_pipeline", f"rejected_{reason}").inc()
            yield beam.pvalue.TaggedOutput(records.REJECTED, records.rejection(record, reason))
            return
        if self._redactor is not None:
            record = self._redactor(record)
            self._redactions.inc(record["redactions"])
        self._kept.inc()
        yield record


class Clean(beam.PTransform):
    """records -> (kept, rejected): normalised, filtered, redacted."""

    def __init__(self, chains: dict[str, list[Filter]], redactor: Redactor | None, form: str = "NFC"):
        super().__init__()
        self._fn = CleanFn(chains, redactor, form)

    def expand(self, pcoll):
        out = pcoll | "CleanFilterRedact" >> beam.ParDo(self._fn).with_outputs(records.REJECTED, main="kept")
        return out.kept, out[records.REJECTED]
