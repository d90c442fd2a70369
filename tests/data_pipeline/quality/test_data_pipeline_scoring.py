"""Quality stage: a trained classifier's score is used when configured, low scores are
rejected, and the high-quality mark follows the per-domain percentile."""

from __future__ import annotations

import apache_beam as beam
import ml_collections
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from data_pipeline.quality import classifier, scoring
from tests.support.data import prose


def _spam(i: int) -> str:
    return f"buy cheap pills now click here free offer {i} " * 20


def test_trained_model_scores_and_rejects_below_min_score(tmp_path):
    config = classifier.default_train_config()
    config.holdout_fraction = 0.0
    scorer, _ = classifier.train([prose(i) for i in range(20)], [_spam(i) for i in range(20)], config)
    path = str(tmp_path / "model.npz")
    scorer.save(path)
    fn = scoring._ScoreFn(path, min_score=0.5)
    fn.setup()
    good = {"id": "g", "source": "s", "domain": "web", "text": prose(99)}
    bad = {"id": "b", "source": "s", "domain": "web", "text": _spam(99)}
    [kept] = list(fn.process(good))
    [rejected] = list(fn.process(bad))
    assert kept["quality_score"] == classifier.QualityScorer.load(path).score(prose(99)) > 0.5
    assert rejected.tag == "rejected" and rejected.value["reason"] == "low_quality"


def test_high_quality_mark_follows_percentile_per_domain():
    config = ml_collections.ConfigDict(
        {"model_path": "", "min_score": 0.0, "high_quality_percentile": 0.5, "high_quality_min_score": -1.0}
    )
    records = [{"id": f"{d}{i}", "source": "s", "domain": d, "text": prose(i, sentences=4 * (i + 1))}
               for d in ("web", "math") for i in range(11)]  # fmt: skip
    with beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"])) as p:
        kept, rejected = p | beam.Create(records) | scoring.ScoreQuality(config)
        marked = (
            kept | beam.Map(lambda r: (r["domain"], r["high_quality"])) | beam.combiners.Count.PerElement()
        )
        # 11 distinct scores per domain: the median and the 5 above it are marked.
        assert_that(
            marked,
            equal_to([(("web", True), 6), (("web", False), 5), (("math", True), 6), (("math", False), 5)]),
        )
        assert_that(rejected, equal_to([]), label="NoRejections")
