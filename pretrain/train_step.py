"""One optimiser step: masked next-token loss, gradient accumulation, AdamW update.

The loss is the mean cross-entropy over target tokens weighted by `loss_weights` (0 on
padding), plus the optional z-loss of PaLM (Chowdhery et al. 2022), z * log(Z)^2, which
keeps the softmax normaliser near 1. Gradient accumulation splits the global batch into
micro-batches inside one compiled step (`lax.scan`), dividing by the token weight of the
*whole* batch so the update equals the un-accumulated one. The step is `jax.jit`-compiled
with explicit input/output shardings over the (data, fsdp, tensor) mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from pretrain.model.cross_entropy import fused_objective, token_losses, weighted_objective

Batch = dict[str, jax.Array]
State = dict[str, Any]  # params, opt_state, step, rng
BATCH_KEYS = ("inputs", "targets", "loss_weights", "segment_ids", "positions", "task_ids")
__all__ = ["token_losses", "make_loss_fn", "make_train_step", "jit_train_step"]


def model_objective(
    model: nn.Module, params: Any, batch: Batch, weights: jax.Array, z_loss: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(sum over tokens of (ce + z_loss * log_z^2) * weights, ce, log_z) of `batch` under the model.

    The loss form follows the model config: full float32 logits (the reference), or the
    output layer fused with the loss without full-vocabulary logits, by vocabulary chunks
    (`vocab_chunks`) or by sequence chunks with the gradient built in the forward pass
    (`token_chunks`), both in pretrain.model.cross_entropy.
    """
    args = (batch["inputs"], batch["positions"], batch["segment_ids"])
    cfg = model.config
    if not (cfg.vocab_chunks or cfg.token_chunks):
        ce, log_z = token_losses(model.apply({"params": params}, *args), batch["targets"])
        return weighted_objective(ce, log_z, weights, z_loss), ce, log_z
    hidden = model.apply({"params": params}, *args, return_hidden=True)
    return fused_objective(
        hidden,
        params["embedder"]["input_embedding"],
        batch["targets"],
        weights,
        z_loss,
        cfg.activation_dtype,
        vocab_chunks=cfg.vocab_chunks,
        token_chunks=cfg.token_chunks,
        softcap=cfg.final_logit_softcap,
    )


def make_loss_fn(
    model: nn.Module, z_loss: float, num_tasks: int, rules: Sequence[tuple[str, Any]] = ()
) -> Callable:
    """loss(params, micro_batch, total_weight) -> (objective, per-micro-batch sums)."""

    def loss_fn(params: Any, batch: Batch, total_weight: jax.Array):
        weights = batch["loss_weights"].astype(jnp.float32)
        with nn.logical_axis_rules(rules):
            objective, ce, log_z = model_objective(model, params, batch, weights / total_weight, z_loss)
        row_loss, row_weight = jnp.sum(ce * weights, axis=-1), jnp.sum(weights, axis=-1)
        sums = {
            "loss": jnp.sum(row_loss),
            "z_loss": z_loss * jnp.sum(jnp.square(log_z) * weights),
            "task_loss": jax.ops.segment_sum(row_loss, batch["task_ids"], num_tasks),
            "task_weight": jax.ops.segment_sum(row_weight, batch["task_ids"], num_tasks),
        }
        return objective, sums

    return loss_fn


def split_micro_batches(batch: Batch, micro_steps: int) -> Batch:
    """[B, ...] -> [micro_steps, B / micro_steps, ...], micro-batch m taking rows m, m+A, ...

    Strided rather than contiguous so that every micro-batch is spread over all the data
    shards of the batch dimension instead of living on a few devices.
    """

    def split(x):
        x = x.reshape(x.shape[0] // micro_steps, micro_steps, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return jax.tree.map(split, batch)


def make_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    micro_steps: int = 1,
    z_loss: float = 0.0,
    num_tasks: int = 1,
    rules: Sequence[tuple[str, Any]] = (),
) -> Callable[[State, Batch], tuple[State, dict]]:
    """The pure step function; see `jit_train_step` for the compiled, sharded version.

    `rules` map the model's logical axis names to mesh axes (pretrain.sharding).
    """
    grad_fn = jax.grad(make_loss_fn(model, z_loss, num_tasks, rules), has_aux=True)

    def train_step(state: State, batch: Batch) -> tuple[State, dict]:
        params = state["params"]
        total_weight = jnp.maximum(jnp.sum(batch["loss_weights"].astype(jnp.float32)), 1.0)
        if micro_steps == 1:
            grads, sums = grad_fn(params, batch, total_weight)
        else:

            def accumulate(carry, micro):
                grads, sums = grad_fn(params, micro, total_weight)
                return jax.tree.map(jnp.add, carry, (grads, sums)), None

            zeros = (
                jax.tree.map(jnp.zeros_like, params),
                {
                    "loss": jnp.zeros(()),
                    "z_loss": jnp.zeros(()),
                    "task_loss": jnp.zeros(num_tasks),
                    "task_weight": jnp.zeros(num_tasks),
                },
            )
            (grads, sums), _ = jax.lax.scan(accumulate, zeros, split_micro_batches(batch, micro_steps))
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_state = {
            "params": optax.apply_updates(params, updates),
            "opt_state": opt_state,
            "step": state["step"] + 1,
            "rng": state["rng"],
        }
        loss = sums["loss"] / total_weight
        grad_norm = optax.global_norm(grads)
        metrics = {
            "loss": loss,
            "z_loss": sums["z_loss"] / total_weight,
            "grad_norm": grad_norm,
            "lr": schedule(state["step"]),
            "task_loss": sums["task_loss"] / jnp.maximum(sums["task_weight"], 1e-9),
            "task_weight": sums["task_weight"],
            "tokens": total_weight,
            # False as soon as the loss or any gradient is NaN/inf: the loop stops on it.
            "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm),
        }
        return new_state, metrics

    return train_step


def jit_train_step(
    train_step: Callable, state_sharding: Any, batch_sharding: Any, mesh: jax.sharding.Mesh
) -> Callable:
    """Compiles `train_step` with explicit shardings; the old state's buffers are donated."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(
        train_step,
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
    )
