"""mixtures.report: deterministic report over the packed rows, and a working CLI."""

import json

import pytest

from mixtures.report import report
from tests.support.mixtures import demo_mixture, packed_fixture, run_module, write_mixture_config


@pytest.fixture(scope="module")
def packed_dir(tmp_path_factory):
    return str(packed_fixture(tmp_path_factory)[2])


def test_report_is_deterministic_and_balanced(packed_dir):
    a = report(demo_mixture(64), packed_dir, steps=12, batch_size=4, window=5)
    b = report(demo_mixture(64), packed_dir, steps=12, batch_size=4, window=5)
    assert a.pop("tokens_per_sec") > 0 and b.pop("tokens_per_sec") > 0
    assert a == b
    assert [(w["start_step"], w["end_step"]) for w in a["windows"]] == [(0, 5), (5, 10), (10, 12)]
    assert a["windows"][-1]["scheduled"]["web_hq"] == pytest.approx(0.4)
    assert a["windows"][-1]["realized"]["web"] == 0  # the anneal stage reads only high-quality rows
    assert all(s["tokens_read"] == s["tokens_out"] for s in a["packed"].values())
    assert 0.9 <= a["fill"] <= 1


def test_cli_writes_json_and_plot(packed_dir, tmp_path):
    config = write_mixture_config(tmp_path / "mix.py")
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    stdout = run_module(
        "mixtures.report",
        f"--config={config}",
        "--config.seed=5",
        f"--packed_dir={packed_dir}",
        "--steps=8",
        "--batch_size=2",
        "--window=4",
        f"--json={out_json}",
        f"--plot={out_png}",
    )
    assert "fill of the rows read" in stdout and "tokens/s" in stdout and "MISMATCH" not in stdout
    r = json.loads(out_json.read_text())
    assert {"windows", "fill", "packed", "tokens_read", "tokens_per_sec"} <= set(r)
    assert r["config"]["seed"] == 5 and len(r["windows"]) == 2
    assert out_png.stat().st_size > 1000
    assert "--packed_dir" in run_module("mixtures.report", "--help")
    assert "--prep_dir" in run_module("mixtures.pack", "--help")
