"""The walking skeleton: every stage's CLI in order, on a small embedded corpus.

Each stage has its own tests; this one proves the seams between them (file layouts, the
vocabulary, the stream's batch keys, the checkpoint layout) hold when the commands a user
runs are chained, and that re-running the training command resumes instead of restarting.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _read_jsonl_gz(directory: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl.gz"))
            for line in gzip.open(path, "rt", encoding="utf-8")]


@pytest.mark.slow
def test_corpus_to_checkpoint_and_resume(tmp_path):
    corpus, prep, tok, work = (tmp_path / name for name in ("corpus", "prep", "tokenizer", "train"))
    _run("data_pipeline.demo_corpus", f"--output={corpus}", "--docs_per_domain=60", "--dup_fraction=0.1")

    out = _run("data_pipeline.prepare", "--config=configs/data/demo.py", f"--output_dir={prep}",
               *(f"--input={d}={corpus / d}.jsonl" for d in ("web", "math", "code")))
    stats = json.loads((prep / "stats.json").read_text())
    total = stats["total"]
    assert total["input"] == total["kept"] + total["rejected_total"] + total["dead_letter"]
    rejected = {r["id"]: r["reason"] for r in _read_jsonl_gz(prep / "rejected")}
    ids = [json.loads(line)["id"] for d in ("web", "math", "code") for line in open(corpus / f"{d}.jsonl")]
    planted = [i for i in ids if "-dup-" in i]
    assert len(planted) == 18 and all(i in rejected for i in planted), "every planted copy is dropped"
    # A copy whose original failed a filter fails the same filter first; the rest are duplicates.
    assert sum(rejected[i] == "exact_duplicate" for i in planted) == total["rejected"]["exact_duplicate"] > 0
    assert "invariant" in out

    _run("tokenizer.train", "--config=configs/tokenizer/demo.py", f"--input={prep}", f"--output={tok}",
         "--vocab_size=512")
    assert (tok / "tokenizer.model").is_file()

    packed = tmp_path / "packed"
    out = _run("mixtures.pack", "--config=configs/mixtures/demo_two_stage.py", "--config.seq_len=64",
               f"--prep_dir={prep}", f"--vocab_path={tok / 'tokenizer.model'}", f"--output={packed}")
    assert "tokens in == tokens out" in out

    train = ["pretrain.train", "--config=configs/train/demo_tiny_cpu.py", f"--config.workdir={work}",
             f"--config.data.packed_dir={packed}", f"--config.data.tokenizer={tok / 'tokenizer.model'}",
             "--config.model.vocab_size=512", "--config.data.seq_len=64", "--config.data.global_batch_size=4",
             "--config.train.total_steps=10", "--config.train.log_every=1", "--config.checkpoint.every_steps=5",
             "--config.optim.warmup_steps=2"]
    out = _run(*train)
    metrics = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 11))
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert "anneal" in out, "the mixture switches to its high-quality stage"

    # The same command again finds the finished run and trains no further steps.
    out = _run(*train)
    assert "resumed from 10" in out
    assert len((work / "metrics.jsonl").read_text().splitlines()) == 10
