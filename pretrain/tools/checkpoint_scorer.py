"""A run's checkpoint made ready to score: sharded parameters, the forward, the run's tokenizer.

One builder for every offline scorer (the downstream command, the studies' arms), so each
scores the same way: parameters restored onto the mesh with the training sharding rules, the
tokenizer checked to be the run's, the mixture's BOS policy, and an `evals.engine.Engine` that
packs requests into rows sharded over the mesh's data-parallel devices. The in-loop scorer
(`pretrain.downstream_in_loop`) builds its engine on the live training state instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from common import checks, fs
from evals.engine import Engine
from evals.generate import Forward
from pretrain import sharding
from pretrain.checkpoint import load_train_config, restore_params, saved_steps
from pretrain.model.transformer import Transformer, TransformerConfig
from pretrain.train_config import check_tokenizer
from pretrain.train_setup import batch_shardings


@dataclasses.dataclass(frozen=True)
class CheckpointScorer:
    run: Any  # the run's config.json (ConfigDict)
    step: int
    params: Any
    forward: Forward  # (params, tokens, positions, segment_ids, **decoding) -> logits, under the mesh's rules
    vocab: Any  # the run's SentencePiece vocabulary (tokenizer.vocab)
    bos: str  # the mixture's bos policy
    mesh: Mesh
    engine: Engine
    row_len: int


def load(
    workdir: str,
    step: int = -1,
    *,
    tokenizer: str = "",
    dtype: str = "float32",
    mesh_shape: dict[str, int] | None = None,
    batch_rows: int = 8,
    row_len: int = 0,
) -> CheckpointScorer:
    """The checkpoint `step` of `workdir` (-1: the latest) on a mesh of `mesh_shape` (default:
    every device data-parallel). `tokenizer` defaults to the run's and must be the run's;
    `row_len` 0 is the model's max_seq_len (lm-eval's max_length). Errors name the flags
    `tokenizer` and `batch_rows`."""
    workdir = fs.resolve(workdir)
    run = load_train_config(workdir)
    vocab_path = tokenizer or run.data.get("tokenizer", "")
    checks.require(
        bool(vocab_path), "tokenizer", "the run's config names no data.tokenizer; pass --tokenizer"
    )
    vocab = check_tokenizer(run, fs.resolve(vocab_path), "tokenizer")  # the run's, and fits its embedding
    model_cfg = TransformerConfig.from_config_dict({**run.model.to_dict(), "dtype": dtype})
    mesh = sharding.make_mesh(mesh_shape or {"data": -1})
    rules = sharding.logical_rules(run)
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    checks.require(
        batch_rows % data_parallel == 0,
        "batch_rows",
        f"must be a multiple of the mesh's data x fsdp = {data_parallel} devices",
        batch_rows,
    )
    model = Transformer(model_cfg)
    dummy = jnp.zeros((1, 8), jnp.int32)
    boxed = jax.eval_shape(lambda r: model.init(r, dummy, dummy, dummy)["params"], jax.random.PRNGKey(0))
    step = step if step >= 0 else max(saved_steps(workdir), default=None)
    params, _ = restore_params(workdir, step, sharding.mesh_shardings(boxed, mesh, rules))

    def forward(p, inputs, positions, segment_ids, **decoding):  # decoding: evals.generate.Forward
        with nn.logical_axis_rules(rules):
            return model.apply({"params": p}, inputs, positions, segment_ids, **decoding)

    row_len = row_len or model_cfg.max_seq_len
    engine = Engine(
        forward,
        params,
        row_len=row_len,
        batch_rows=batch_rows,
        batch_sharding=batch_shardings(mesh, rules)["inputs"],
        vocab_size=vocab.vocab_size,  # the softmax over the tokenizer's pieces, not the padded embedding
    )
    bos = run.get("mixture", {}).get("bos", "document")
    return CheckpointScorer(run, step, params, forward, vocab, bos, mesh, engine, row_len)
