"""The README's first command, as a newcomer runs it: `make demo` in a fresh copy of the checkout.

The copy holds exactly the files a clone has (git's tracked files, plus new files not yet
ignored, so an uncommitted change is tested too), no .venv and no runs/. The test runs the
`demo` target itself with its default relative DEMO_DIR (runs/demo); only its `install`
prerequisite is skipped (`make -o install`: this interpreter already has the dependencies,
and creating a venv needs the package index) and the run is shortened through the knobs
scripts/demo.sh documents (DEMO_STEPS, DEMO_DOCS). The export is then loaded back with
transformers (a test dependency, not a runtime one) and compared with the checkpoint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _checkout_files() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if listing.returncode != 0:
        pytest.skip("not a git checkout: cannot tell which files a clone would have")
    return [name for name in listing.stdout.split("\0") if name and (REPO / name).is_file()]


@pytest.mark.slow
def test_make_demo_in_a_fresh_copy(tmp_path):
    checkout = tmp_path / "gemma-pretrain"
    for name in _checkout_files():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, checkout / name)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(
        PY=sys.executable,
        DEMO_STEPS="50",
        DEMO_DOCS="60",
        DEMO_ANNEAL_FROM="25",
        DEMO_ANNEAL_STEPS="10",
        JAX_PLATFORMS="cpu",
    )
    proc = subprocess.run(
        ["make", "-o", "install", "demo"], cwd=checkout, env=env, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    for stage in (
        "corpus",
        "prepare",
        "tokenizer",
        "pack",
        "mixture",
        "evalset",
        "train",
        "anneal",
        "evaluate",
        "export",
        "downstream",
    ):
        assert f"=== {stage}" in out and f"--- {stage} took" in out, stage
    assert "perplexity" in out
    assert "step 50: downstream docstrings" in out  # scored in the loop at the last step
    table = out[out.index("=== downstream") :]
    assert "docstrings" in table and "humaneval_bpb" in table and "0.2500" in table  # chance: 1 in 4
    demo = checkout / "runs" / "demo"
    # Each stage's whole output is kept (stdout too), and SUMMARY.md gathers the figures.
    assert "step 50/50" in (demo / "logs" / "train.log").read_text()
    assert "input files (100%)" in (demo / "logs" / "prepare.log").read_text()  # the read progress
    assert not [
        f"{log.name}: {line}"
        for log in (demo / "logs").glob("*.log")
        for line in log.read_text(errors="replace").splitlines()
        if "cuInit" in line or "apitools" in line
    ]
    summary = (demo / "SUMMARY.md").read_text()
    assert "accounting ok" in summary and "train loss" in summary and "perplexity" in summary, summary
    assert summary in out
    assert (demo / "train" / "checkpoints" / "50").is_dir()
    assert not (checkout / ".venv").exists()

    import torch
    import transformers

    from pretrain.checkpoint import restore_params

    model = transformers.AutoModelForCausalLM.from_pretrained(demo / "hf", torch_dtype=torch.float32)
    params, config = restore_params(demo / "train")
    assert config.workdir == str(demo / "train"), "config.json records the absolute workdir"
    embedding = np.asarray(params["embedder"]["input_embedding"], np.float32)
    exported = model.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_allclose(exported, embedding[: exported.shape[0]], rtol=1e-2, atol=1e-2)
    tokens = torch.tensor([[2, 100, 200, 300]])
    logits = model(tokens).logits
    assert logits.shape == (1, 4, exported.shape[0]) and torch.isfinite(logits).all()
