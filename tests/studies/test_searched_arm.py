"""configs/anneal/demo.py's `searched` arm: its weights come from a recorded search result,
and its note names that file and run instead of presenting them as this run's."""

from __future__ import annotations

import json

import pytest

from common.checks import ConfigError
from configs.anneal import demo


def test_the_demo_arm_reads_the_recorded_result_and_names_its_source():
    arm = next(a for a in demo.get_config().arms if a["name"] == "searched")
    with open(demo.SEARCHED_RESULT) as f:
        recorded = json.load(f)
    assert arm["weights"] == recorded["fitted"]["proposal"]["weights"]
    assert sum(arm["weights"].values()) == pytest.approx(1.0)
    assert "configs/anneal/searched_demo.json" in arm["note"]  # the file, relative to the repository
    assert "2026-12-04" in arm["note"] and "not measured in this run" in arm["note"]


def test_a_search_report_is_read_as_it_is_and_one_without_a_proposal_refused(tmp_path):
    report = tmp_path / "report.json"  # what studies.mixture_search writes (the fields read here)
    report.write_text(json.dumps({"fitted": {"proposal": {"weights": {"web": 0.7, "math_hq": 0.3}}}}))
    arm = demo.searched_arm(str(report))
    assert arm["weights"] == {"web": 0.7, "math_hq": 0.3} and str(report) in arm["note"]
    report.write_text(json.dumps({"fitted": None, "decision": {"summary": "no decision"}}))
    with pytest.raises(ConfigError, match=r"config.arms: .*report.json holds no proposal"):
        demo.searched_arm(str(report))
