"""Every command has one shape (common/cli.py): --help exits 0 and lists its flags; a missing
input stops it before any work with exit status 2 and one line naming the config field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}

# (module, a flag its --help lists, arguments missing an input, the field the error names)
COMMANDS = [
    ("tokenizer.train", "--vocab_size", ["--config.output="], "config.output: required"),
    ("tokenizer.report", "--max_mb_per_domain", ["--model=x"], "config.inputs: required"),
    ("pretrain.convert.export", "--max_shard_bytes", ["--workdir=w"], "config.output: required"),
    ("pretrain.tools.evaluate", "--batch_size", ["--input=x.jsonl"], "config.workdir: required"),
    ("pretrain.tools.model_info", "--config", [], "--config is required"),
    (
        "pretrain.convert.hf_import",
        "--hf_dir",
        ["--config=configs/train/demo_tiny_cpu.py"],
        "config.hf_dir: required",
    ),
    ("pretrain.train", "--workdir", [], "config.workdir: required (--workdir="),
    ("studies.anneal", "--from_workdir", ["--config.output_dir="], "config.output_dir: required"),
    ("data_pipeline.prepare", "--eval_set", [], "config.output_dir: required"),
    ("mixtures.pack", "--prep_dir", [], "--config is required"),
    ("mixtures.report", "--packed_dir", [], "--config is required"),
]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("module, flag, missing, message", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_help_and_missing_input(module, flag, missing, message):
    help_run = _run(module, "--help")
    assert help_run.returncode == 0, help_run.stderr[-2000:]
    assert flag in help_run.stdout
    failed = _run(module, *missing)
    assert failed.returncode == 2, (failed.stdout[-2000:], failed.stderr[-2000:])
    assert message in failed.stderr.strip().splitlines()[-1]


# (module, arguments naming a path that does not exist, the start of the one line it prints)
MISSING_PATHS = [
    (
        "tokenizer.train",
        ["--input=/nonexistent", "--output=OUT"],
        "config.inputs: '/nonexistent': no TFDS dataset",
    ),
    (
        "tokenizer.report",
        ["--model=/nonexistent", "--input=x"],
        "config.model: no SentencePiece tokenizer.model",
    ),
    ("pretrain.tools.evaluate", ["--workdir=w", "--input=/nonexistent.jsonl"], "config.input: no such file"),
    (
        "mixtures.report",
        ["--config=configs/mixtures/demo_two_stage.py", "--packed_dir=/nonexistent"],
        "config.pack.output: must be a packed-data directory",
    ),
    (
        "pretrain.convert.export",
        ["--workdir=/nonexistent", "--output=OUT"],
        "/nonexistent/config.json not found",
    ),
]


@pytest.mark.parametrize("module, args, message", MISSING_PATHS, ids=[c[0] for c in MISSING_PATHS])
def test_a_path_that_does_not_exist_is_one_line_and_exit_2(module, args, message, tmp_path):
    failed = _run(module, *(a.replace("OUT", str(tmp_path / "out")) for a in args))
    assert failed.returncode == 2, (failed.stdout[-2000:], failed.stderr[-2000:])
    assert "Traceback" not in failed.stderr, failed.stderr[-2000:]
    assert message in failed.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
