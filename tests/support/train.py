"""A tiny synthetic-data training config shared by the trainer, checkpoint, sharding and
evaluation tests: small enough that a step takes milliseconds on one CPU core."""

from __future__ import annotations

import tempfile
from pathlib import Path

import ml_collections

from configs.models import tiny
from configs.train import base

# Shared by every test process of a session: the same tiny programs compile once.
COMPILATION_CACHE = Path(tempfile.gettempdir()) / "gemma_pretrain_test_xla_cache"


def tiny_config(workdir: str, **train) -> ml_collections.ConfigDict:
    """Synthetic data, 2-layer MQA model, seq 32, batch 8; `train` overrides config.train."""
    c = base.get_config()
    c.workdir = str(workdir)
    c.model = tiny.get_config()
    c.model.update(dict(vocab_size=256, embed_dim=64, head_dim=16, hidden_dim=128, max_seq_len=64))
    c.data.synthetic = True
    c.data.seq_len = 32
    c.data.global_batch_size = 8
    c.train.update({"total_steps": 8, "log_every": 1, **train})
    c.optim.warmup_steps = 2
    c.optim.peak_lr = 3e-3
    c.checkpoint.every_steps = 4
    c.metrics.tensorboard = False
    c.metrics.peak_flops = 1e12  # skip the CPU matmul probe
    c.train.compilation_cache_dir = str(COMPILATION_CACHE)
    return c


def config_file(directory: Path, **train) -> Path:
    """A --config file for the pretrain.train command, built from `tiny_config`."""
    repo = Path(__file__).resolve().parents[2]
    path = Path(directory) / "tiny_config.py"
    path.write_text(
        f"import sys\nsys.path.insert(0, {str(repo)!r})\nfrom tests.support.train import tiny_config\n\n"
        f"def get_config():\n    return tiny_config('', **{train!r})\n"
    )
    return path
