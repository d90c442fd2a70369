"""Loss, per-source loss, z-loss, gradient accumulation and the optimiser, in isolation."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pretrain import optim
from pretrain.model.transformer import Transformer, TransformerConfig
from pretrain.train_step import make_loss_fn, make_train_step
from tests.support.train import tiny_config

CONFIG = tiny_config("unused")


def _model_and_params():
    model = Transformer(TransformerConfig.from_config_dict(CONFIG.model))
    dummy = jnp.zeros((1, 8), jnp.int32)
    params = jax.jit(lambda r: nn.unbox(model.init(r, dummy, dummy, dummy)["params"]))(jax.random.PRNGKey(0))
    return model, params


def _batch(b=8, length=16, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, 256, (b, length + 1)).astype(np.int32)
    weights = np.ones((b, length), np.float32)
    weights[:, -3:] = 0  # padding
    weights[1] = 0  # an all-padding row
    segments = np.where(weights > 0, 1, 0).astype(np.int32)
    segments[:, length // 2 :] *= 2  # two documents per row
    positions = np.tile(np.arange(length, dtype=np.int32), (b, 1))
    positions[:, length // 2 :] -= length // 2
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "loss_weights": weights,
        "segment_ids": segments,
        "positions": positions,
        "task_ids": (np.arange(b) % 3).astype(np.int32),
    }


def test_loss_per_source_and_z_loss_match_numpy():
    model, params = _model_and_params()
    batch = _batch()
    total = batch["loss_weights"].sum()
    z = 1e-3
    loss_fn = make_loss_fn(model, z, num_tasks=3)

    @jax.jit
    def loss_and_logits(params, batch):
        return loss_fn(params, batch, jnp.float32(total)), model.apply(
            {"params": params}, batch["inputs"], batch["positions"], batch["segment_ids"]
        )

    (objective, sums), logits = loss_and_logits(params, batch)
    logits = np.asarray(logits, np.float64)
    log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    ce = log_z - np.take_along_axis(logits, batch["targets"][..., None], -1)[..., 0]
    w = batch["loss_weights"]
    np.testing.assert_allclose(sums["loss"] / total, (ce * w).sum() / total, rtol=1e-5)
    np.testing.assert_allclose(objective, ((ce + z * log_z**2) * w).sum() / total, rtol=1e-5)
    for task in range(3):
        rows = batch["task_ids"] == task
        np.testing.assert_allclose(
            sums["task_loss"][task] / sums["task_weight"][task],
            (ce * w)[rows].sum() / w[rows].sum(),
            rtol=1e-5,
        )


def test_gradient_accumulation_equals_full_batch():
    model, params = _model_and_params()
    schedule = optim.make_schedule(CONFIG.optim, 10)
    optimizer = optim.make_optimizer(CONFIG.optim, schedule)
    state = {
        "params": params,
        "opt_state": optimizer.init(params),
        "step": jnp.array(3, jnp.int32),
        "rng": jax.random.PRNGKey(0),
    }
    batch = _batch()
    results = [
        jax.jit(make_train_step(model, optimizer, schedule, micro_steps=m, num_tasks=3, z_loss=1e-4))(
            state, batch
        )
        for m in (1, 4)
    ]
    (full_state, full), (acc_state, acc) = results
    for key in ("loss", "z_loss", "grad_norm", "lr", "tokens"):
        np.testing.assert_allclose(acc[key], full[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(acc["task_loss"], full["task_loss"], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
        acc_state["params"],
        full_state["params"],
    )
    assert int(acc_state["step"]) == 4


def _optim_config(**overrides) -> ml_collections.ConfigDict:
    cfg = optim.default_config()
    cfg.update({"peak_lr": 1.0, "end_lr_ratio": 0.1, "warmup_steps": 10, **overrides})
    return cfg


def test_wsd_decay_starts_at_the_annealing_stage():
    schedule = optim.make_schedule(_optim_config(schedule="wsd", decay_start="anneal"), 100, anneal_start=80)
    lr = np.array([schedule(s) for s in range(101)])
    np.testing.assert_allclose(lr[:11], np.linspace(0, 1, 11), atol=1e-6)  # warmup
    np.testing.assert_allclose(lr[10:81], 1.0)  # stable
    assert lr[81] < 1.0 and np.all(np.diff(lr[80:]) < 0)  # decay
    assert lr[100] == pytest.approx(0.1)
    fraction = optim.make_schedule(_optim_config(schedule="wsd", decay_start="0.5"), 100)
    assert fraction(50) == pytest.approx(1.0) and fraction(51) < 1.0


def test_cosine_schedule_ends_at_end_lr():
    schedule = optim.make_schedule(_optim_config(schedule="cosine"), 100)
    assert schedule(10) == pytest.approx(1.0) and schedule(100) == pytest.approx(0.1)
    assert schedule(55) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-5)  # cosine midpoint


def test_weight_decay_is_decoupled_and_masked():
    cfg = _optim_config(schedule="constant", warmup_steps=0, weight_decay=0.5, clip_norm=0.0)
    tx = optim.make_optimizer(cfg, optim.make_schedule(cfg, 10))
    params = {
        "embedder": {"input_embedding": jnp.ones((4, 2))},
        "layer_0": {
            "pre_attention_norm": {"scale": jnp.ones(2)},
            "attn": {"q_einsum": {"w": jnp.ones((2, 2))}},
        },
    }
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    # Zero gradients: only the decoupled decay moves weights, and only unmasked ones.
    np.testing.assert_allclose(updates["layer_0"]["attn"]["q_einsum"]["w"], -0.5)
    np.testing.assert_allclose(updates["embedder"]["input_embedding"], 0.0)
    np.testing.assert_allclose(updates["layer_0"]["pre_attention_norm"]["scale"], 0.0)


@pytest.mark.parametrize(
    "field, value",
    [("schedule", "linear"), ("peak_lr", 0.0), ("warmup_steps", 200), ("decay_start", "later"), ("b2", 1.0)],
)
def test_optim_validation_names_field(field, value):
    cfg = _optim_config(schedule="wsd")
    cfg[field] = value
    with pytest.raises(ValueError, match=f"config.optim.{field}"):
        optim.validate(cfg, 100)
