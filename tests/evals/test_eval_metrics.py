"""Metrics against hand-computed values; bootstrap intervals reproducible with their seed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from common.checks import ConfigError
from evals import compare, metrics, results


def mc(doc_id, lls, gold, chars, task="t"):
    return {"task": task, "kind": "multiple_choice", "doc_id": doc_id, "source": "f", "loglikelihoods": lls,
            "gold": gold, "characters": chars, "bytes": [c + 1 for c in chars]}  # fmt: skip


RECORDS = [
    mc(0, [-1.0, -2.0, -3.0], 0, [1, 1, 1]),  # acc 1, acc_norm 1
    mc(1, [-4.0, -6.0], 1, [2, 6]),  # acc 0; per char -2 vs -1: acc_norm 1
    mc(2, [-2.0, -1.0], 0, [4, 1]),  # acc 0; per char -0.5 vs -1: acc_norm 1
    mc(3, [-1.0, -1.0], 1, [3, 3]),  # tie: the first choice wins (np.argmax), acc 0, acc_norm 0
]


def test_multiple_choice_metrics_by_hand():
    s = metrics.summarize(RECORDS, seed=0)
    assert s["acc"].value == pytest.approx(1 / 4)
    assert s["acc_norm"].value == pytest.approx(3 / 4)
    p = [
        math.exp(-1) / (math.exp(-1) + math.exp(-2) + math.exp(-3)),
        math.exp(-6) / (math.exp(-4) + math.exp(-6)),
        math.exp(-2) / (math.exp(-2) + math.exp(-1)),
        0.5,
    ]
    assert s["prob_correct"].value == pytest.approx(np.mean(p))
    assert s["logprob_per_char"].value == pytest.approx(np.mean([-1.0, -1.0, -0.5, -1 / 3]))
    assert s["acc"].chance == pytest.approx(np.mean([1 / 3, 1 / 2, 1 / 2, 1 / 2]))
    assert s["logprob_per_char"].chance is None


def test_bits_per_byte_is_total_bits_over_total_bytes():
    records = [
        {
            "task": "g",
            "kind": "gold_text",
            "doc_id": i,
            "loglikelihoods": [ll],
            "gold": 0,
            "characters": [n],
            "bytes": [n],
        }
        for i, (ll, n) in enumerate([(-10.0, 5), (-2.0, 20)])
    ]
    s = metrics.summarize(records)
    assert list(s) == ["bpb"]
    assert s["bpb"].value == pytest.approx(12 / math.log(2) / 25)


def test_generated_records_give_exact_match_and_pass_at_k():
    em = metrics.summarize(
        [{"task": "g", "doc_id": i, "passed": p} for i, p in enumerate([True, False, True, True])]
    )
    assert em["exact_match"].value == pytest.approx(0.75)
    code = metrics.summarize([{"task": "c", "doc_id": i, "passed": [True], "pass_at_k": {"1": v, "10": 1.0}}
                              for i, v in enumerate([0.2, 0.4])])  # fmt: skip
    assert code["pass@1"].value == pytest.approx(0.3) and code["pass@10"].value == 1.0


def test_bootstrap_interval_is_seeded_and_covers_the_value():
    rng = np.random.default_rng(7)
    records = [mc(i, list(rng.normal(size=4)), int(rng.integers(4)), [3, 5, 7, 9]) for i in range(200)]
    a, b, c = (metrics.summarize(records, seed=s) for s in (1, 1, 2))
    assert a["acc"].interval == b["acc"].interval
    assert a["prob_correct"].interval == b["prob_correct"].interval
    assert a["prob_correct"].interval != c["prob_correct"].interval  # continuous: the seed shows
    low, high = a["acc"].interval
    assert low < a["acc"].value < high and 0.05 < high - low < 0.2  # ~ 2 * 1.96 * sqrt(.25 * .75 / 200)
    assert a["acc"].to_json()["differs_from_chance"] is False  # random scores: chance is inside


def test_paired_comparison_on_shared_items():
    better = [mc(i, [0.0, -5.0], 0, [1, 1]) for i in range(50)]
    worse = [mc(i, [-5.0, 0.0], 0 if i < 10 else 1, [1, 1]) for i in range(60)]  # right on 10 of 50 shared
    out = metrics.compare(better, worse, seed=0)
    assert out["acc"]["items"] == 50
    assert out["acc"]["difference"] == pytest.approx(1.0 - 40 / 50)
    low, high = out["acc"]["ci95"]
    assert 0 < low <= out["acc"]["difference"] <= high and not out["acc"]["no_difference"]
    same = metrics.compare(better, better, seed=0)["acc"]
    assert same["difference"] == 0 and same["ci95"] == [0.0, 0.0] and same["no_difference"]


def test_compare_command_reads_two_result_folders(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    results.write(str(a), [mc(i, [0.0, -5.0], 0, [1, 1]) for i in range(30)], {})
    results.write(str(b), [mc(i, [-5.0, 0.0], 0, [1, 1]) for i in range(30)], {})
    config = compare.default_config()
    config.update(a=str(a), b=str(b), json=str(tmp_path / "c.json"))
    compare.main(config, [])
    out = capsys.readouterr().out
    assert "A higher" in out and "+1.0000" in out
    assert json.loads((tmp_path / "c.json").read_text())["t"]["acc"]["difference"] == 1.0
    with pytest.raises(ConfigError, match="config.json: exists; pass --overwrite"):
        compare.main(config, [])
    config.b = str(tmp_path / "nothing")
    config.overwrite = True
    with pytest.raises(ConfigError, match="config.b: no results file"):
        compare.main(config, [])
