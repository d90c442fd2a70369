"""Issue 32's data-loss cases, driven through the commands alone (each failed on the code
before the fix): the trainer writing into a folder that is not one of its runs, and
evaluate's `--dump` / mixtures.report's `--json` replacing inputs, run files or any file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.checks import ConfigError
from pretrain import train as train_lib
from pretrain.tools import evaluate
from tests.support.mixtures import train_tokenizer
from tests.support.train import tiny_config

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- 1: train --workdir


@pytest.mark.parametrize(
    "files",
    [
        {"config.json": '{"architectures": ["GemmaForCausalLM"]}', "model.safetensors": "weights"},
        {"metrics.jsonl": '{"step": 1, "loss": 3.0}\n'},
    ],
    ids=["hf_export", "metrics"],
)
def test_train_refuses_a_folder_that_is_not_one_of_its_runs(tmp_path, files):
    """Before: the HF folder's config.json (or the metrics) were overwritten, exit 0."""
    workdir = tmp_path / "w"
    workdir.mkdir()
    for name, text in files.items():
        (workdir / name).write_text(text)
    with pytest.raises(
        ConfigError, match=r"^config\.workdir: .* is not empty and is not a pretrain.train run"
    ):
        train_lib.train(tiny_config(workdir, total_steps=2))
    assert _tree(workdir) == {name: text.encode() for name, text in files.items()}


def test_train_starts_where_the_launcher_wrote_and_restarts_a_run_killed_before_its_first_checkpoint(
    tmp_path,
):
    workdir = tmp_path / "w"
    (workdir / "launch" / "0").mkdir(parents=True)  # what pretrain/launch writes before training starts
    (workdir / "launch" / "0" / "status.json").write_text("{}")
    train_lib.train(tiny_config(workdir, total_steps=2))
    shutil.rmtree(workdir / "checkpoints")  # killed before its first checkpoint: config.json, metrics stay
    train_lib.train(tiny_config(workdir, total_steps=2))
    assert (workdir / "checkpoints" / "2").is_dir()
    assert (workdir / "launch" / "0" / "status.json").read_text() == "{}"


# ----------------------------------------------------------------------------- 2: single-file outputs


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(a trained workdir, a tokenizer that fits it, a documents file)."""
    root = tmp_path_factory.mktemp("evaluated")
    train_lib.train(tiny_config(root / "w", total_steps=2))
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document {i} about web pages"}) + "\n" for i in range(3)))
    return root / "w", train_tokenizer(root / "tok"), docs


@pytest.mark.parametrize("target", ["input", "run_config", "existing"])
def test_evaluate_dump_never_replaces_an_input_a_run_file_or_an_existing_file(run_dir, tmp_path, target):
    """Before: `--dump` overwrote whatever it named, its own `--input` and W/config.json too."""
    workdir, tokenizer, docs = run_dir
    existing = tmp_path / "losses.jsonl"
    existing.write_text("an earlier dump\n")
    path = {"input": docs, "run_config": workdir / "config.json", "existing": existing}[target]
    before = path.read_bytes()
    config = evaluate.default_config()
    config.update(dict(workdir=str(workdir), input=str(docs), tokenizer=str(tokenizer), dump=str(path)))
    config.overwrite = target != "existing"  # an input or a run's file: not even with --overwrite
    with pytest.raises(ConfigError, match=r"^config\.dump: "):
        evaluate.main(config, [])
    assert path.read_bytes() == before


def test_report_json_never_replaces_a_file_of_a_run(run_dir, tmp_path):
    workdir, _, _ = run_dir
    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / "manifest.json").write_text("{}")
    before = (workdir / "config.json").read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "mixtures.report", f"--config={REPO / 'configs/mixtures/demo_two_stage.py'}",
         f"--packed_dir={packed}", f"--json={workdir / 'config.json'}", "--overwrite"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("report.py: --json: ")
    assert "is a file of a run (it is a file of the training run in" in result.stderr
    assert (workdir / "config.json").read_bytes() == before
