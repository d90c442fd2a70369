import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam
import pytest

from data_pipeline.dedup import exact
from tests.support.beam import record, run_transform


def _run(records, multiprocess=False, **overrides):
    config = exact.default_config()
    config.update(overrides)
    return run_transform(records, lambda: exact.ExactDedup(config), multiprocess=multiprocess)


def test_keeps_smallest_id_and_rejects_the_rest():
    records = [
        record("b", "Hello   World\n"),
        record("a", "hello world"),
        record("c", "HELLO WORLD"),
        record("d", "something else"),
    ]
    kept, rejected = _run(records)
    assert sorted(r["id"] for r in kept) == ["a", "d"]
    assert sorted(r["id"] for r in rejected) == ["b", "c"]
    assert {r["reason"] for r in rejected} == {"exact_duplicate"}
    assert set(rejected[0]) == {"id", "source", "domain", "reason", "text"}


def test_representative_does_not_depend_on_input_order():
    texts = ["same text"] * 5
    forward = [record(f"id{i}", t) for i, t in enumerate(texts)]
    kept_f, _ = _run(forward)
    kept_r, _ = _run(list(reversed(forward)))
    assert [r["id"] for r in kept_f] == [r["id"] for r in kept_r] == ["id0"]


@pytest.mark.parametrize(
    "normalization, expected_kept",
    [("none", 3), ("case_whitespace", 2), ("words", 1)],
)
def test_normalization_levels(normalization, expected_kept):
    records = [record("a", "Hello, world!"), record("b", "hello,   WORLD!"), record("c", "hello world")]
    kept, rejected = _run(records, normalization=normalization)
    assert len(kept) == expected_kept
    assert len(kept) + len(rejected) == 3


def test_disabled_stage_keeps_everything():
    """The one on/off switch of every stage lives in prepare.Stage."""
    from data_pipeline.prepare import Stage

    records = [record("a", "x"), record("b", "x")]
    config = exact.default_config()

    class Off(beam.PTransform):
        def expand(self, pcoll):
            result = Stage("ExactDedup", False, lambda: exact.ExactDedup(config)).apply(pcoll)
            return result.kept, result.rejected

    kept, rejected = run_transform(records, Off)
    assert len(kept) == 2 and rejected == []


def test_bad_normalization_names_the_field():
    config = exact.default_config()
    config.normalization = "stemming"
    with pytest.raises(ValueError, match="config.dedup.normalization"):
        exact.ExactDedup(config)


def test_multiprocess_direct_runner():
    records = [record(f"r{i}", f"document number {i % 7}", source=f"s{i % 2}") for i in range(40)]
    kept, rejected = _run(records, multiprocess=True)
    assert len(kept) == 7
    assert len(rejected) == 33
    expected = {
        min((r["id"], r["source"]) for r in records if r["text"].endswith(f" {k}"))[0] for k in range(7)
    }
    assert {r["id"] for r in kept} == expected
