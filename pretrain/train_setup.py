"""What a training run is built from, shared by the trainer and its tools (pretrain.tools.aot,
pretrain.convert.hf_import, bench/): `TrainSetup` (the model, its optimiser and learning-rate
schedule, the mesh and the state's and batch's shardings), `build_setup(config, mesh)`,
the data source (`make_data`), `restore_or_init` (the latest checkpoint, else
`config.init_from`, else a fresh initialisation) and the sharded, jitted train step.

The train state itself is a plain dict {params, opt_state, step, rng} (pretrain.train_step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mixtures.schedule import anneal_start, mixture_schedule
from pretrain import checkpoint, data, optim, sharding
from pretrain.model.transformer import Transformer, TransformerConfig
from pretrain.train_step import BATCH_KEYS, jit_train_step, make_train_step


def make_data(config: ml_collections.ConfigDict) -> tuple[data.BatchSource, Any]:
    """(batch source for this process, mixture schedule or None).

    Real data is read from the rows `mixtures.pack` wrote to config.data.packed_dir; each
    process reads only the rows of its slice of the global batch.
    """
    d = config.data
    if d.synthetic:
        return data.SyntheticBatches(
            config.seed,
            d.global_batch_size,
            d.seq_len,
            config.model.vocab_size,
            jax.process_index(),
            jax.process_count(),
            d.synthetic_document_tokens,
        ), mixture_schedule(config)
    # Imported here: the stream needs Grain and ArrayRecord, which synthetic runs do without
    # (bench/gpu_throughput.py runs on GPU machines that have neither).
    from mixtures.stream import MixtureStream

    stream = MixtureStream(
        config.mixture,
        d.packed_dir,
        batch_size=d.global_batch_size,
        total_steps=config.train.total_steps,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        workers=d.workers,
        field="config.mixture",
    )
    return stream, stream.schedule


@dataclasses.dataclass
class TrainSetup:
    """Everything about the model and its optimiser that the loop and other commands share.

    `abstract` is the state's shapes, dtypes and shardings (what a restore fills in);
    `init(rng)` and `from_params(params, rng)` build a fresh, sharded state.
    """

    config: ml_collections.ConfigDict
    mesh: jax.sharding.Mesh
    rules: Any
    model_config: TransformerConfig
    model: Transformer
    schedule: Any  # the mixture schedule (or None)
    lr_schedule: optax.Schedule
    optimizer: optax.GradientTransformation
    abstract: Any
    sharding: Any
    replication_notes: list[str]  # mesh axes that do not divide a parameter (sharding.replication_notes)
    batch_sharding: dict[str, NamedSharding]
    init: Callable[[jax.Array], Any]
    from_params: Callable[[Any, jax.Array], Any]


def build_setup(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> TrainSetup:
    """Model, optimiser and the state's shardings (from the params' logical axes) on `mesh`."""
    rules = sharding.logical_rules(config)
    model_config = TransformerConfig.from_config_dict(config.model)
    model = Transformer(model_config)
    schedule = mixture_schedule(config)
    lr_schedule = optim.make_schedule(config.optim, config.train.total_steps, anneal_start(schedule))
    optimizer = optim.make_optimizer(config.optim, lr_schedule)
    dummy = jnp.zeros((1, config.data.seq_len), jnp.int32)

    def from_params(params, rng):
        return {
            "params": params,
            "opt_state": optimizer.init(params),
            "step": jnp.zeros((), jnp.int32),
            "rng": rng,
        }

    def init(rng):
        return from_params(nn.unbox(model.init(rng, dummy, dummy, dummy)["params"]), rng)

    boxed = jax.eval_shape(lambda r: model.init(r, dummy, dummy, dummy)["params"], jax.random.PRNGKey(0))
    param_sharding = sharding.mesh_shardings(boxed, mesh, rules)
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    replicated = NamedSharding(mesh, P())
    # Each AdamW moment is sharded like its parameter; scalars (counts) are replicated.
    opt_sharding = optax.tree_utils.tree_map_params(
        optimizer,
        lambda _, s: s,
        abstract["opt_state"],
        param_sharding,
        transform_non_params=lambda _: replicated,
    )
    state_sharding = {
        "params": param_sharding,
        "opt_state": opt_sharding,
        "step": replicated,
        "rng": replicated,
    }
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sharding
    )
    return TrainSetup(
        config=config,
        mesh=mesh,
        rules=rules,
        model_config=model_config,
        model=model,
        schedule=schedule,
        lr_schedule=lr_schedule,
        optimizer=optimizer,
        abstract=abstract,
        sharding=state_sharding,
        replication_notes=sharding.replication_notes(boxed, mesh, rules),
        batch_sharding=batch_shardings(mesh, rules),
        init=jax.jit(init, out_shardings=state_sharding),
        from_params=jax.jit(from_params, out_shardings=state_sharding),
    )


def batch_shardings(mesh: jax.sharding.Mesh, rules) -> dict[str, NamedSharding]:
    """Batch dimension over the data-parallel axes the rules give `activation_batch`."""
    rows = nn.logical_to_mesh_axes(("activation_batch",), rules)[0]
    return {key: NamedSharding(mesh, P(rows) if key == "task_ids" else P(rows, None)) for key in BATCH_KEYS}


def restore_or_init(
    setup: TrainSetup,
    config: ml_collections.ConfigDict,
    manager,
    source: data.BatchSource,
    say: Callable[[str], None] = logging.info,
) -> tuple[Any, int, str]:
    """(state, first step, where it came from): this run's latest checkpoint, else
    `config.init_from`, else a fresh initialisation.

    Resuming restores the data stream's position too. `init_from` loads another run's
    params and optimiser state into a fresh data stream; its step counter (and so the
    learning-rate schedule) restarts at 0 unless `init_from.keep_step`.
    """
    restored = checkpoint.restore_latest(manager, setup.abstract, say)
    if restored is not None:
        state, data_state = restored
        if data_state:  # empty: a checkpoint written before any data was read (hf_import)
            source.set_state(data_state)
        start = int(state["step"])
        return (
            state,
            start,
            (f"resumed from {manager.directory}/{start} (step {start} of {config.train.total_steps})"),
        )
    init_from = config.init_from
    if init_from.workdir:
        state, step = checkpoint.restore_state(
            init_from.workdir, setup.abstract, None if init_from.step < 0 else init_from.step
        )
        if not init_from.keep_step:
            state = restart_schedule(setup, state)
        start = int(state["step"])
        if start:  # keep_step: the stream (a function of seed, step, schedule) starts there too
            data_state = {**source.get_state(), "step": start}
            if hasattr(source, "fingerprints"):  # MixtureStream: this config's own past
                data_state["fingerprints"] = source.fingerprints(start)
            source.set_state(data_state)
        return (
            state,
            start,
            (
                f"initialised from {init_from.workdir} step {step} (params and "
                f"optimiser state); fresh data stream, starting at step {start}"
            ),
        )
    return setup.init(jax.random.PRNGKey(config.seed)), 0, "initialised from scratch"


def restart_schedule(setup: TrainSetup, state: Any) -> Any:
    """`state` with its step and the optimiser's schedule count at 0 (Adam's moments and
    their bias-correction count are kept, so the first updates are not inflated)."""

    def reset(node):
        if isinstance(node, optax.ScaleByScheduleState):
            return node._replace(count=jnp.zeros_like(node.count))
        return node

    def restart(state):
        opt_state = jax.tree.map(
            reset, state["opt_state"], is_leaf=lambda n: isinstance(n, optax.ScaleByScheduleState)
        )
        return {**state, "opt_state": opt_state, "step": jnp.zeros_like(state["step"])}

    return jax.jit(restart, out_shardings=setup.sharding, donate_argnums=0)(state)


def jitted_train_step(setup: TrainSetup, num_tasks: int) -> Any:
    """The sharded, jitted (not yet compiled) train step of `setup`; pretrain.tools.aot compiles it too."""
    c = setup.config
    return jit_train_step(
        make_train_step(
            setup.model,
            setup.optimizer,
            setup.lr_schedule,
            micro_steps=c.train.grad_accum_steps,
            z_loss=c.train.z_loss,
            num_tasks=num_tasks,
            rules=setup.rules,
        ),
        setup.sharding,
        setup.batch_sharding,
        setup.mesh,
    )
