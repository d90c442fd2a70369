"""Quality stage: score every document, drop those below ``min_score``, mark the high-quality
subset per domain (the annealing stage of the mixture trains on it).

The subset is the documents at or above a per-domain score quantile (approximate quantiles,
computed in Beam without gathering scores on one worker) or above an absolute score.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from common import checks, fs
from data_pipeline import records
from data_pipeline.quality.classifier import QualityScorer
from data_pipeline.quality.heuristic import heuristic_score

REASON = "low_quality"
_QUANTILES = 100


def validate(config: Any, prefix: str = "quality") -> None:
    checks.fraction(config.min_score, f"{prefix}.min_score")
    checks.fraction(config.high_quality_percentile, f"{prefix}.high_quality_percentile")
    checks.require(
        config.high_quality_min_score <= 1.0,
        f"{prefix}.high_quality_min_score",
        "must be <= 1 (or < 0 to use the percentile)",
        config.high_quality_min_score,
    )


class _ScoreFn(beam.DoFn):
    def __init__(self, model_path: str, min_score: float):
        self._model_path = model_path
        self._min_score = min_score
        self._low = beam.metrics.Metrics.counter("data_pipeline", f"rejected_{REASON}")

    def setup(self):
        self._score = heuristic_score
        if self._model_path:
            scorer = QualityScorer.load(self._model_path)
            self._score = lambda record: scorer.score(record["text"])

    def process(self, record: dict[str, Any]) -> Iterator[Any]:
        score = float(self._score(record))
        record = {**record, "quality_score": score}
        if score < self._min_score:
            self._low.inc()
            yield beam.pvalue.TaggedOutput(records.REJECTED, records.rejection(record, REASON))
        else:
            yield record


def _mark(record: dict[str, Any], thresholds: dict[str, float], absolute: float) -> dict[str, Any]:
    threshold = absolute if absolute >= 0 else thresholds.get(record["domain"], float("inf"))
    return {**record, "high_quality": record["quality_score"] >= threshold}


class ScoreQuality(beam.PTransform):
    """records -> (scored records with ``quality_score`` and ``high_quality``, rejected)."""

    def __init__(self, config: Any):
        super().__init__()
        validate(config)
        self._config = config

    def expand(self, pcoll):
        config = self._config
        model_path = (
            fs.resolve(config.model_path) if config.model_path else ""
        )  # loaded on workers via common/fs.py
        scored = pcoll | "Score" >> beam.ParDo(_ScoreFn(model_path, config.min_score)).with_outputs(
            "rejected", main="kept"
        )
        percentile = float(config.high_quality_percentile)

        def threshold(domain_quantiles: tuple[str, list[float]]) -> tuple[str, float]:
            domain, quantiles = domain_quantiles
            return domain, quantiles[round(percentile * (len(quantiles) - 1))]

        thresholds = (
            scored.kept
            | "ByDomain" >> beam.Map(lambda r: (r["domain"], r["quality_score"]))
            | "Quantiles" >> beam.ApproximateQuantiles.PerKey(_QUANTILES + 1)
            | "Threshold" >> beam.Map(threshold)
        )
        marked = scored.kept | "MarkHighQuality" >> beam.Map(
            _mark, thresholds=beam.pvalue.AsDict(thresholds), absolute=float(config.high_quality_min_score)
        )
        return marked, scored[records.REJECTED]
