"""mixtures.inspect: deterministic report with the issue's fields, and a working CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mixtures.inspect import inspect
from tests.mixtures_fixtures import build_prepared, demo_mixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return build_prepared(tmp_path_factory.mktemp("inspect"))


def test_report_is_deterministic_and_balanced(prepared):
    a = inspect(demo_mixture(64), *prepared, steps=12, batch_size=4, window=5)
    b = inspect(demo_mixture(64), *prepared, steps=12, batch_size=4, window=5)
    assert a.pop("tokens_per_sec") > 0 and b.pop("tokens_per_sec") > 0
    assert a == b
    assert [(w["start_step"], w["end_step"]) for w in a["windows"]] == [(0, 5), (5, 10), (10, 12)]
    assert a["windows"][-1]["scheduled"]["web_hq"] == pytest.approx(0.4)
    assert a["tokens_in"] == a["tokens_out"] + a["tokens_waiting"]
    assert a["fill"] >= 0.99


def test_cli_writes_json_and_plot(prepared, tmp_path):
    prep_dir, vocab = prepared
    config = tmp_path / "mix.py"
    config.write_text("from tests.mixtures_fixtures import demo_mixture\n\n"
                      "def get_config():\n    return demo_mixture(64)\n")
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "mixtures.inspect", f"--config={config}", "--config.seed=5", f"--prep_dir={prep_dir}",
         f"--vocab_path={vocab}", "--steps=8", "--batch_size=2", "--window=4", f"--json={out_json}",
         f"--plot={out_png}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fill:" in proc.stdout and "tokens/s" in proc.stdout and ": ok" in proc.stdout
    report = json.loads(out_json.read_text())
    assert {"windows", "fill", "tokens_in", "tokens_out", "tokens_per_sec"} <= set(report)
    assert report["config"]["seed"] == 5 and len(report["windows"]) == 2
    assert out_png.stat().st_size > 1000
