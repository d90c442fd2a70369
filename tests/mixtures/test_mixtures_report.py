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
    run_module(
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
    r = json.loads(out_json.read_text())
    assert {"windows", "fill", "packed", "tokens_read", "tokens_per_sec"} <= set(r)
    assert all(s["tokens_read"] == s["tokens_out"] for s in r["packed"].values())
    assert r["config"]["seed"] == 5 and len(r["windows"]) == 2
    assert out_png.stat().st_size > 1000
