"""Positive controls: the perturbations they plant, and the recall they report."""

import random

from data_pipeline.decontamination import controls, matching
from data_pipeline.decontamination.eval_sets import EvalItem

TEXT = (
    "Janet's ducks lay 16 eggs per day. She sells the remainder at the farmers' market daily for $2 "
    "per fresh duck egg (1,250 eggs a season). How much in dollars does she make every day?"
)


def _normalized(text: str) -> list[int]:
    return matching.normalized_chars(text)[0].tolist()


def test_perturbed_copies_differ_only_where_web_copies_do():
    """Case, punctuation, whitespace, line breaks and digit grouping change; the letters and
    digits, in order, do not (so a control tests the stage, not a different text)."""
    rng = random.Random(0)
    copies = [controls.perturb(TEXT, rng) for _ in range(20)]
    assert all(_normalized(c) == _normalized(TEXT) for c in copies)
    assert all(c != TEXT for c in copies)
    assert any("\n" in c for c in copies) and any("1250" in c or "1 250" in c for c in copies)
    grouped = [controls.perturb("paid 1250000 dollars", random.Random(i)) for i in range(20)]
    assert sum("1250000" not in g for g in grouped) >= 10  # grouped as 1,250,000 / 1 250 000 / ...


def test_control_records_sample_every_set_verbatim_and_perturbed():
    items = [EvalItem(s, f"{s}{i}", f"{TEXT} ({s} {i})") for s in ("a", "b") for i in range(5)]
    docs = controls.control_records(items, per_set=3, seed=1)
    assert len(docs) == 12 and {d["source"] for d in docs} == {controls.SOURCE}
    assert {(d["eval_set"], d["variant"]) for d in docs} == {(s, v) for s in "ab" for v in controls.VARIANTS}
    assert docs == controls.control_records(items, per_set=3, seed=1)  # the same controls every run
    verbatim = [d for d in docs if d["variant"] == "verbatim"]
    assert all(TEXT in d["text"] and d["text"].startswith(controls.CARRIER_BEFORE) for d in verbatim)


def test_recall_and_floor_name_the_set():
    per_set = controls.recall(
        [("gsm8k", "verbatim", True, 20), ("gsm8k", "perturbed", True, 19), ("gsm8k", "perturbed", False, 1)]
        + [("mbpp", "verbatim", False, 20), ("mbpp", "perturbed", False, 20)]
    )
    assert per_set["gsm8k"] == {
        "planted": 40,
        "caught": 39,
        "recall": 0.975,
        "verbatim": "20/20",
        "perturbed": "19/20",
    }
    assert per_set["mbpp"]["recall"] == 0.0
    assert controls.failures({"gsm8k": per_set["gsm8k"]}, floor=0.95) == []
    (line,) = controls.failures(per_set, floor=0.95)
    assert line.endswith("eval set(s) mbpp 0.000 (0/40)")
