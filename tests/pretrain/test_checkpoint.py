"""Checkpoint retention, a save interrupted by a kill, and params-only restore."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from pretrain import train as train_lib
from pretrain.checkpoint import restore_params
from pretrain.metrics import read_metrics
from tests.support.train import tiny_config


def _steps(workdir) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_keeps_last_n_and_every_kth_and_restores_params(tmp_path):
    config = tiny_config(tmp_path, total_steps=8)
    config.checkpoint.update(dict(every_steps=2, keep_last=2, keep_every=4))
    train_lib.train(config)
    assert _steps(tmp_path) == [4, 6, 8]  # last two, and every 4th

    params, train_config = restore_params(tmp_path)
    assert train_config.model.num_layers == 2 and train_config.train.total_steps == 8
    assert params["embedder"]["input_embedding"].shape == (256, 64)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(params))  # fp32 master weights
    older, _ = restore_params(tmp_path, step=4)
    assert not np.allclose(older["final_norm"]["scale"], params["final_norm"]["scale"])


REPO = Path(__file__).resolve().parents[2]
# The temporary name this Orbax gives a step directory until the save is finalised
# (orbax/checkpoint/_src/path/atomicity.py: final name + ".orbax-checkpoint-tmp");
# test_kill_during_async_save_resumes_exactly sees it on disk.
TMP_SUFFIX = ".orbax-checkpoint-tmp"

# Trains the tiny run in WORKDIR and SIGKILLs itself as soon as the async save of step
# KILL_AT has started, i.e. while Orbax is still writing it in the background.
_KILLED_RUN = """
import os, signal, sys
from pretrain import checkpoint, train
from tests.support.train import tiny_config

workdir, kill_at = sys.argv[1], int(sys.argv[2])
original = checkpoint.save

def save_then_die(manager, step, *args, **kwargs):
    started = original(manager, step, *args, **kwargs)
    if started and step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return started

checkpoint.save = save_then_die
train.train(tiny_config(workdir, total_steps=8))
"""


def test_kill_during_async_save_resumes_exactly(tmp_path):
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    train_lib.train(tiny_config(reference_dir, total_steps=8))
    reference = read_metrics(reference_dir)

    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, str(killed_dir), "8"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]  # killed, not finished
    left = sorted(p.name for p in (killed_dir / "checkpoints").iterdir())
    assert "8" not in left and f"8{TMP_SUFFIX}" in left, left  # killed mid-save of step 8
    assert _steps(killed_dir) == [4]

    train_lib.train(tiny_config(killed_dir, total_steps=8))  # the same command again
    assert _steps(killed_dir) == [4, 8]
    assert not any(TMP_SUFFIX in p.name for p in (killed_dir / "checkpoints").iterdir())
    resumed = read_metrics(killed_dir)
    assert [r["step"] for r in resumed] == list(range(1, 9))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in reference]  # bit-exact resume
    a, _ = restore_params(killed_dir)
    b, _ = restore_params(reference_dir)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_half_written_checkpoint_is_ignored_on_resume(tmp_path):
    config = tiny_config(tmp_path, total_steps=8)
    train_lib.train(config)
    reference = read_metrics(tmp_path)
    # What a kill in the middle of saving step 8 leaves behind: an unfinalised temporary
    # directory (Orbax renames it to "8" only once every file is written).
    checkpoints = tmp_path / "checkpoints"
    partial = checkpoints / f"8{TMP_SUFFIX}"
    shutil.move(checkpoints / "8", partial)
    for f in list((partial / "state").rglob("*"))[:3]:
        if f.is_file():
            f.write_bytes(b"")
    train_lib.train(config)
    assert _steps(tmp_path) == [4, 8]
    assert not partial.exists(), "Orbax recognised the temporary directory and removed it"
    assert [r["loss"] for r in read_metrics(tmp_path)] == [r["loss"] for r in reference]
