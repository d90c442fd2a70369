"""Checkpoint retention, a save interrupted by a kill, and params-only restore."""

from __future__ import annotations

import shutil

import jax
import numpy as np

from pretrain import train as train_lib
from pretrain.checkpoint import restore_params
from pretrain.metrics import read_metrics
from train_fixtures import tiny_config


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


def test_half_written_checkpoint_is_ignored_on_resume(tmp_path):
    config = tiny_config(tmp_path, total_steps=8)
    train_lib.train(config)
    reference = read_metrics(tmp_path)
    # What a kill in the middle of saving step 8 leaves behind: an unfinalised temporary
    # directory (Orbax renames it to "8" only once every file is written).
    checkpoints = tmp_path / "checkpoints"
    partial = checkpoints / "8.orbax-checkpoint-tmp-1700000000"
    shutil.move(checkpoints / "8", partial)
    for f in list((partial / "state").rglob("*"))[:3]:
        if f.is_file():
            f.write_bytes(b"")
    train_lib.train(config)
    assert _steps(tmp_path) == [4, 8]
    assert [r["loss"] for r in read_metrics(tmp_path)] == [r["loss"] for r in reference]
