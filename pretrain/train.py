"""Pretrain a Gemma model: `python -m pretrain.train --config=configs/train/demo_tiny_cpu.py --workdir=DIR`.

`train()` reads top to bottom like nanoGPT's train.py: set up the mesh, model, optimiser
and data; restore the latest checkpoint of WORKDIR if there is one (so re-running the same
command resumes), or start from another run's weights (`config.init_from`); then loop:
next batch -> sharded step -> log -> checkpoint. A NaN or inf loss or gradient stops the
run before anything is saved from it. Setup (`build_state`, `restore_or_init`),
evaluation, checkpointing and reporting live in the functions the loop calls, and
pretrain.hf_import and studies.anneal reuse them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from common import checks, cli, fs
from pretrain import aot, checkpoint, data, flops, optim, sharding
from pretrain.metrics import (
    Goodput,
    MetricsWriter,
    goodput_over_sessions,
    read_metrics,
    recomputed_seconds,
)
from pretrain.model.transformer import Transformer, TransformerConfig
from pretrain.train_step import BATCH_KEYS, jit_train_step, make_train_step

PROCESS_START = time.perf_counter()  # the command's goodput counts imports as startup


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm became NaN/inf; nothing from that step on is saved."""


class Preempted(RuntimeError):
    """A preemption notice stopped the run after a checkpoint; the command exits PREEMPTED."""


PREEMPTED = 3  # exit status after a preemption checkpoint: resume by rerunning

# ----------------------------------------------------------------------------- the loop


def train(
    config: ml_collections.ConfigDict,
    started: float | None = None,
    say: Callable[[str], None] = logging.info,
) -> dict[str, Any]:
    """Trains to config.train.total_steps (resuming WORKDIR if possible); returns a summary.

    `started` (a time.perf_counter() value, default now) is when this session began, for
    the goodput's startup share; the command passes its process start. `say` receives the
    run's progress lines on process 0 (default: the log; the command prints them).
    """
    goodput = Goodput(started=started)
    setup_distributed(config.distributed)
    say = say if jax.process_index() == 0 else (lambda line: None)
    validate(config)
    resolve_remat_policy(config, say)
    enable_compilation_cache(config)
    workdir = fs.resolve(config.workdir)
    accepted = check_resume(workdir, config)
    total_steps = config.train.total_steps

    setup = build_state(config, sharding.make_mesh(dict(config.mesh)))
    source, _ = make_data(config)
    if accepted is None:  # a fresh run: every check passed, nothing was written before this
        write_config(workdir, config)
    elif accepted:
        say("resuming with changed optimiser settings (config.resume_accept): " + "; ".join(accepted))
    manager = checkpoint.make_manager(workdir, config.checkpoint)
    state, start, origin = restore_or_init(setup, config, manager, source, say)
    preemption_notice(start)  # registers the starting step with the preemption service
    step_fn = compile_on_first_call(setup, len(source.task_names), goodput)
    evaluate = make_evaluator(config, setup)
    report = Reporter(config, setup, workdir, start, source.task_names, goodput, origin, say)
    goodput.add("restart", time.perf_counter() - goodput.started + recomputed_seconds(workdir, start))

    try:
        for step in range(start, total_steps):
            weights = report.mixture_at(step)
            with goodput.timed("data_wait"):
                batch = data.to_global(next(source), setup.batch_sharding, config.data.global_batch_size)
            state, metrics = step_fn(state, batch)
            done = step + 1
            report.collect(done, metrics)

            preempted = preemption_notice(done)
            saving = save_due(config, done) or preempted
            if report.log_due(done) or saving:
                report.check_finite(manager)  # before anything from a NaN step is saved
            if report.log_due(done):
                with goodput.timed("eval"):
                    eval_loss = evaluate(done, state["params"])
                report.log(done, metrics, weights, eval_loss)
            if saving:
                with goodput.timed("checkpoint"):
                    checkpoint.save(
                        manager, done, state, source.get_state(), force=preempted or done == total_steps
                    )
            if preempted:
                raise Preempted(
                    f"preemption notice (SIGTERM): saved step {done} on every "
                    "process; rerun the same command to resume"
                )
    finally:  # Also on NaN or Ctrl-C: commit the last good async save, stop the reader.
        with goodput.timed("checkpoint"):
            manager.wait_until_finished()
        manager.close()
        report.close()
        source.close()
    return report.finish(total_steps)


def save_due(config: ml_collections.ConfigDict, done: int) -> bool:
    every = config.checkpoint.every_steps
    return bool(every) and (done % every == 0 or done == config.train.total_steps)


def preemption_notice(done: int) -> bool:
    """True, on every process at the same step, once any process got SIGTERM.

    jax.distributed's preemption service turns a SIGTERM on any host (a Spot VM's
    preemption notice, `pretrain.launch --action=stop`) into a step all hosts agree on, so
    they save one consistent checkpoint before they go. Every process calls this with the
    starting step and then every step: the agreed step is one past the largest step any
    process has reported, and it only matches if reported steps are consecutive.
    """
    return jax.distributed.is_initialized() and multihost_utils.reached_preemption_sync_point(done)


# ----------------------------------------------------------------------------- setup


def setup_distributed(cfg: ml_collections.ConfigDict) -> None:
    """jax.distributed.initialize on multi-host runs, only when the config asks for it.

    On TPU VMs the coordinator, process count and id are detected; elsewhere (the
    two-process CPU test, GPU clusters) they come from the config. Every process sends
    heartbeats to the coordinator: when one dies (preemption, SIGKILL, OOM) the others
    abort within `heartbeat_timeout_s` with "tasks are unhealthy (stopped sending
    heartbeats)" instead of hanging in a collective, so a supervisor can restart them.
    """
    if not cfg.initialize or jax.distributed.is_initialized():
        return
    if cfg.cpu_collectives:  # cross-process collectives for the CPU backend (tests)
        jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    kwargs: dict[str, Any] = dict(
        initialization_timeout=cfg.initialization_timeout_s, heartbeat_timeout_seconds=cfg.heartbeat_timeout_s
    )
    if cfg.coordinator_address:
        kwargs.update(
            coordinator_address=cfg.coordinator_address,
            num_processes=cfg.num_processes,
            process_id=cfg.process_id,
        )
    jax.distributed.initialize(**kwargs)
    logging.info(
        "process %d of %d, %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every field the trainer reads, so a bad value fails before any compute."""
    require, get = checks.require, checks.get
    require(bool(config.workdir), "workdir", "must be set (--workdir=DIR)")
    for field in (
        "train.total_steps",
        "train.log_every",
        "train.grad_accum_steps",
        "data.global_batch_size",
        "eval.batches",
    ):
        require(get(config, field) >= 1, field, "must be >= 1", get(config, field))
    checks.non_negative(config.train.z_loss, "train.z_loss")
    checks.non_negative(config.data.synthetic_document_tokens, "data.synthetic_document_tokens")
    require(config.data.seq_len >= 2, "data.seq_len", "must be >= 2", config.data.seq_len)
    require(
        config.data.global_batch_size % config.train.grad_accum_steps == 0,
        "data.global_batch_size",
        f"must be divisible by train.grad_accum_steps={config.train.grad_accum_steps}",
        config.data.global_batch_size,
    )
    checks.non_negative(config.eval.every_steps, "eval.every_steps")
    require(
        config.eval.every_steps % config.train.log_every == 0,
        "eval.every_steps",
        f"must be a multiple of train.log_every={config.train.log_every}",
        config.eval.every_steps,
    )
    if config.init_from.workdir:
        require(
            fs.isfile(fs.join(config.init_from.workdir, "config.json")),
            "init_from.workdir",
            "must be a pretrain.train workdir (config.json, checkpoints/)",
            config.init_from.workdir,
        )
    optim.validate(config.optim, config.train.total_steps)
    checkpoint.validate(config.checkpoint)
    TransformerConfig.from_config_dict(config.model)
    mixture_schedule(config)
    if not config.data.synthetic:
        validate_data(config)


def validate_data(config: ml_collections.ConfigDict) -> None:
    """The packed rows and the tokenizer: present, and made for each other and the model."""
    require, d = checks.require, config.data
    require(
        fs.exists(fs.join(d.packed_dir or ".", "manifest.json")),
        "data.packed_dir",
        "must be a packed-data directory (python -m mixtures.pack)",
        d.packed_dir,
    )
    require(
        fs.isfile(d.tokenizer),
        "data.tokenizer",
        "must be a tokenizer.model file (python -m tokenizer.train)",
        d.tokenizer,
    )
    require(bool(config.mixture.get("stages")), "mixture", "must be a mixture config with stages")
    from mixtures import manifest as manifest_lib
    from tokenizer.vocab import load_vocabulary, model_sha256

    manifest = manifest_lib.read(d.packed_dir)
    require(
        d.seq_len == manifest["seq_len"],
        "data.seq_len",
        f"must equal the packed rows' length {manifest['seq_len']} ({d.packed_dir}); re-pack with "
        f"--config.seq_len={d.seq_len} or train at the packed length",
        d.seq_len,
    )
    packed_with, given = manifest["vocab"]["sha256"], model_sha256(d.tokenizer)
    require(
        given == packed_with,
        "data.tokenizer",
        f"is not the tokenizer the rows in {d.packed_dir} were packed with (sha256 {given}, the "
        f"manifest's {packed_with}, from {manifest['vocab']['path']}); train with that tokenizer",
        d.tokenizer,
    )
    tokens = load_vocabulary(d.tokenizer).vocab_size
    require(
        config.model.vocab_size >= tokens,
        "model.vocab_size",
        f"must cover the tokenizer's {tokens} tokens",
        config.model.vocab_size,
    )


# What a resumed run shares with the run that wrote its checkpoints: the model (the
# checkpoints' shapes) and what fixes the data stream's batches.
RESUME_FIXED = ("model", "seed", "data.global_batch_size", "data.seq_len")
# Model fields that choose how the same maths runs (no effect on the weights' values or
# layout): a resume may change them, e.g. to fit another GPU.
RESUME_EXECUTION = ("model.attention", "model.remat_policy", "model.vocab_chunks", "model.max_documents")
# What changes the optimisation of the steps to come: allowed at a resume only when
# config.resume_accept names the field.
RESUME_OPTIMISER = ("optim", "train.z_loss")


def check_resume(workdir: str, config: ml_collections.ConfigDict) -> list[str] | None:
    """Compares `config` with WORKDIR/config.json when WORKDIR holds checkpoints.

    Returns None for a fresh workdir, else the optimiser changes `config.resume_accept`
    names ("config.optim.peak_lr: 0.003 -> 0.3"). Refuses (ConfigError) a changed model,
    seed, batch size or seq_len, and optimiser changes it does not name, listing each field
    with its old and new value. config.json is never rewritten under checkpoints.
    """
    if not checkpoint.saved_steps(workdir):
        return None
    recorded = _flat(json.loads(checkpoint.load_train_config(workdir).to_json()))
    now = _flat(json.loads(config.to_json_best_effort()))
    fixed = [
        c
        for c in _changes(recorded, now, RESUME_FIXED)
        if c.split(":")[0].removeprefix("config.") not in RESUME_EXECUTION
    ]
    if fixed:
        raise checks.ConfigError(
            f"{'; '.join(fixed)}: {workdir} holds checkpoints of the run its config.json records; "
            "a resume keeps the model, seed, batch size and seq_len: use a new workdir "
            "(config.init_from starts from its weights)"
        )
    accept = {f.strip() for f in str(config.get("resume_accept", "")).split(",") if f.strip()}
    changed = _changes(recorded, now, RESUME_OPTIMISER)
    refused = [c for c in changed if c.split(":")[0].removeprefix("config.") not in accept]
    if refused:
        names = ",".join(c.split(":")[0].removeprefix("config.") for c in refused)
        raise checks.ConfigError(
            f"{'; '.join(refused)}: changed since the checkpoints in {workdir}; "
            f"if intended, resume with --config.resume_accept={names}"
        )
    return changed


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": leaf} of a nested dict (JSON values, so recorded and current compare alike)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return out


def _changes(old: dict[str, Any], new: dict[str, Any], prefixes: tuple[str, ...]) -> list[str]:
    """ "config.FIELD: OLD -> NEW" for each field under `prefixes` whose value differs."""
    fields = sorted(
        k for k in old.keys() | new.keys() if any(k == p or k.startswith(p + ".") for p in prefixes)
    )
    return [f"config.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in fields if old.get(k) != new.get(k)]


def resolve_remat_policy(config: ml_collections.ConfigDict, say: Callable[[str], None]) -> None:
    """`model.remat_policy="auto"`: the least recomputation whose step fits in
    `aot.max_hbm_fraction` of device 0's memory, by the compiler's own figures.

    Without a memory limit (CPU) that is the first candidate, "none". config.json records
    the resolved policy; a resume with "auto" chooses again (RESUME_EXECUTION allows it).
    """
    if config.model.remat_policy != "auto":
        return
    limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
    if not limit:
        config.model.remat_policy = aot.FASTEST_FIRST[0]
        say(f"remat_policy auto -> {config.model.remat_policy} (no device memory limit to fit)")
        return
    config.model.remat_policy = aot.choose_remat_policy(
        config, jax.devices(), config.aot.max_hbm_fraction * limit, say
    )


def enable_compilation_cache(config: ml_collections.ConfigDict) -> None:
    """Re-runs and resumes load the compiled step from disk instead of recompiling it."""
    if config.train.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", config.train.compilation_cache_dir)


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    if jax.process_index() == 0:
        fs.makedirs(workdir)
        fs.write_text(fs.join(workdir, "config.json"), config.to_json_best_effort(indent=2) + "\n")


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


def mixture_schedule(config: ml_collections.ConfigDict) -> Any:
    """The mixture's Schedule, or None when config.mixture has no stages.

    Built even for synthetic data, so a synthetic run has the real run's learning-rate
    schedule (the WSD decay aligned with the annealing stage).
    """
    if not config.mixture.get("stages"):
        return None
    from mixtures.schedule import Schedule

    return Schedule.from_config(config.mixture, config.train.total_steps, "config.mixture")


def anneal_start(schedule: Any) -> int | None:
    """Step at which the mixture's last (annealing) stage begins, for the WSD decay."""
    if schedule is None or len(schedule.stages) < 2:
        return None
    return schedule.stages[-1].start_step


@dataclasses.dataclass
class TrainState:
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
    batch_sharding: dict[str, NamedSharding]
    init: Callable[[jax.Array], Any]
    from_params: Callable[[Any, jax.Array], Any]


def build_state(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> TrainState:
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
    return TrainState(
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
        batch_sharding=batch_shardings(mesh, rules),
        init=jax.jit(init, out_shardings=state_sharding),
        from_params=jax.jit(from_params, out_shardings=state_sharding),
    )


def batch_shardings(mesh: jax.sharding.Mesh, rules) -> dict[str, NamedSharding]:
    """Batch dimension over the data-parallel axes the rules give `activation_batch`."""
    rows = nn.logical_to_mesh_axes(("activation_batch",), rules)[0]
    return {key: NamedSharding(mesh, P(rows) if key == "task_ids" else P(rows, None)) for key in BATCH_KEYS}


def restore_or_init(
    setup: TrainState,
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


def restart_schedule(setup: TrainState, state: Any) -> Any:
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


def jitted_train_step(setup: TrainState, num_tasks: int) -> Any:
    """The sharded, jitted (not yet compiled) train step of `setup`; pretrain.aot compiles it too."""
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


def compile_on_first_call(
    setup: TrainState, num_tasks: int, goodput: Goodput
) -> Callable[[Any, dict], tuple[Any, dict]]:
    """The sharded train step, compiled (and timed as goodput `compile`) on its first batch."""
    c = setup.config
    jitted = jitted_train_step(setup, num_tasks)
    compiled = None

    def step(state, batch):
        nonlocal compiled
        if compiled is None:
            with goodput.timed("compile"):
                with jax.set_mesh(setup.mesh):  # the model's activation constraints see the mesh
                    compiled = jitted.lower(state, batch).compile()
                # Hosts compile at different speeds; the first step's collectives set up their
                # communicators with short timeouts, so start it together.
                wait_for_all_processes("train_step_compiled", c.distributed.initialization_timeout_s)
            logging.info("compiled the train step in %.1fs", goodput.lost["compile"])
        return compiled(state, batch)

    return step


def wait_for_all_processes(name: str, timeout_s: float) -> None:
    """A barrier on the jax.distributed coordination service (no device collective)."""
    if jax.process_count() > 1:
        ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=int(timeout_s * 1000))


def make_evaluator(
    config: ml_collections.ConfigDict, setup: TrainState
) -> Callable[[int, Any], dict[str, float] | None]:
    """`evaluate(step, params)`: held-out loss per domain when due, else None."""
    every = 0 if config.data.synthetic else config.eval.every_steps
    if not every:
        return lambda step, params: None
    from pretrain.heldout import HeldOutLoss

    held_out = HeldOutLoss(
        config, setup.model, setup.mesh, setup.rules, setup.sharding["params"], setup.batch_sharding
    )
    total = config.train.total_steps
    return lambda step, params: held_out(params) if step % every == 0 or step == total else None


# ----------------------------------------------------------------------------- reporting


class Reporter:
    """Everything the run says: progress lines to `say` (process 0 only), metrics.jsonl,
    the summary.

    Holds the metrics of the steps run since the last finiteness check, the interval
    timing behind tokens/s and MFU, and the mixture stage last announced.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        setup: TrainState,
        workdir: str,
        start: int,
        task_names: list[str],
        goodput: Goodput,
        origin: str,
        say: Callable[[str], None],
    ):
        self.config, self.workdir, self.start = config, workdir, start
        self.task_names, self.goodput, self.schedule = task_names, goodput, setup.schedule
        self.say = say
        self.writer = MetricsWriter(workdir, resume_step=start, tensorboard=config.metrics.tensorboard)
        self.session = 1 + max(
            (r.get("goodput", {}).get("session", 0) for r in self.writer.records()), default=-1
        )
        self.tokens_per_step = config.data.global_batch_size * config.data.seq_len
        self.flops_per_step = self.tokens_per_step * flops.train_flops_per_token(
            flops.shape_of(setup.model_config), config.data.seq_len
        )
        peak, peak_source = (
            (config.metrics.peak_flops, "config")
            if config.metrics.peak_flops
            else flops.peak_flops_per_device(setup.model_config.activation_dtype)
        )
        self.peak_total = peak * jax.device_count()
        self.pending: list[tuple[int, dict]] = []
        self.stage = None
        self.interval_start, self.interval_steps = time.perf_counter(), 0
        self.overhead_at_interval_start = self._overhead()
        self.say(origin)
        self.say(
            f"mesh {dict(setup.mesh.shape)} on {jax.device_count()} "
            f"{jax.devices()[0].device_kind} device(s) in {jax.process_count()} "
            f"process(es); peak {peak / 1e12:.3g} TFLOP/s per device ({peak_source}); "
            f"{self.flops_per_step / 1e9:.3g} GFLOP per step; {self.tokens_per_step} "
            "tokens per step"
        )

    def mixture_at(self, step: int) -> dict[str, float] | None:
        """The mixture weights in effect at `step`; announces each stage as it begins."""
        if self.schedule is None or self.config.data.synthetic:
            return None
        weights = self.schedule.weights_at(step)
        stage = self.schedule.stage_at(step)
        if stage != self.stage:
            word = "mixture stage" if self.stage is None else "mixture stage switch ->"
            self.say(
                f"step {step}: {word} {stage}: " + ", ".join(f"{k}={v:.3f}" for k, v in weights.items() if v)
            )
            self.stage = stage
        return weights

    def collect(self, done: int, metrics: dict) -> None:
        self.pending.append((done, metrics))
        self.interval_steps += 1

    def log_due(self, done: int) -> bool:
        return done % self.config.train.log_every == 0 or done == self.config.train.total_steps

    def check_finite(self, manager) -> None:
        """Raises NonFiniteLossError at the first step whose loss or gradient is NaN/inf."""
        for step, metrics in self.pending:
            if not bool(metrics["finite"]):
                last = manager.latest_step()
                raise NonFiniteLossError(
                    f"loss {float(metrics['loss'])} / grad_norm {float(metrics['grad_norm'])} at "
                    f"step {step} is not finite; stopping without saving. Last good checkpoint: "
                    f"{'none' if last is None else f'step {last}'}. Lower config.optim.peak_lr or "
                    "inspect the data near this step."
                )
        self.pending.clear()

    def log(
        self, done: int, metrics: dict, weights: dict[str, float] | None, eval_loss: dict[str, float] | None
    ) -> None:
        """Writes the metrics.jsonl record of step `done` and says its line."""
        elapsed = (
            time.perf_counter() - self.interval_start - (self._overhead() - self.overhead_at_interval_start)
        )
        record = log_record(
            jax.device_get(metrics),
            self.task_names,
            weights,
            elapsed / max(self.interval_steps, 1),
            self.tokens_per_step,
            self.flops_per_step,
            self.peak_total,
        )
        if eval_loss is not None:
            record["eval_loss"] = eval_loss
            self.say(
                f"step {done}: validation loss " + ", ".join(f"{k} {v:.4f}" for k, v in eval_loss.items())
            )
        record["goodput"] = {"session": self.session, **self.goodput.snapshot()}
        self.writer.write(done, record)
        self.say(
            f"step {done}/{self.config.train.total_steps}: loss {record['loss']:.4f} "
            f"lr {record['lr']:.3g} grad_norm {record['grad_norm']:.3g} "
            f"{record['tokens_per_sec']:.0f} tok/s mfu {record['mfu']:.2%}"
        )
        self.interval_start, self.interval_steps = time.perf_counter(), 0
        self.overhead_at_interval_start = self._overhead()

    def _overhead(self) -> float:
        """Seconds spent compiling, evaluating and checkpointing so far: not step time."""
        lost = self.goodput.lost
        return lost["compile"] + lost["eval"] + lost["checkpoint"]

    def close(self) -> None:
        self.writer.close()

    def finish(self, total_steps: int) -> dict[str, Any]:
        """The run's summary (all sessions, from metrics.jsonl), said by process 0."""
        s = summarize(self.workdir, self.start, total_steps, time.perf_counter() - self.goodput.started)
        self.say("=" * 72)
        self.say(
            f"training done: {s['total_steps']} steps ({s['steps_this_session']} this "
            f"session, resumed from {s['resumed_from']}) in {s['wall_seconds']:.1f}s"
        )
        if s["first_loss"] is not None:
            self.say(
                f"loss {s['first_loss']:.4f} -> {s['final_loss']:.4f} (min "
                f"{s['min_loss']:.4f}); {s['mean_tokens_per_sec']:.0f} tok/s, MFU "
                f"{s['mean_mfu']:.2%}"
            )
            self.say("loss curve: " + "  ".join(f"{step}:{loss}" for step, loss in s["loss_curve"]))
        g = s.get("goodput")
        if g:
            self.say(
                f"goodput {g['goodput']:.1%} over {g['sessions']} session(s): "
                f"{g['productive_s']:.1f}s training of {g['wall_s']:.1f}s; lost "
                + ", ".join(
                    f"{k.removesuffix('_s')} {g[k]:.1f}s"
                    for k in ("restart_s", "compile_s", "data_wait_s", "checkpoint_s", "eval_s")
                )
            )
        memory = jax.local_devices()[0].memory_stats() or {}  # None on CPU
        if "peak_bytes_in_use" in memory:
            s["peak_device_memory_bytes"] = memory["peak_bytes_in_use"]
            self.say(
                f"peak device memory {memory['peak_bytes_in_use'] / 2**30:.1f} GiB of "
                f"{memory.get('bytes_limit', 0) / 2**30:.1f} GiB (device 0)"
            )
        self.say(f"outputs: {s['workdir']}/{{checkpoints,metrics.jsonl,tensorboard,config.json}}")
        return s


def log_record(
    m: dict[str, Any],
    task_names: list[str],
    weights: dict[str, float] | None,
    step_time: float,
    tokens_per_step: int,
    flops_per_step: float,
    peak_total: float,
) -> dict[str, Any]:
    """The metrics.jsonl object for one logged step."""
    record = {
        "loss": float(m["loss"]),
        "z_loss": float(m["z_loss"]),
        "lr": float(m["lr"]),
        "grad_norm": float(m["grad_norm"]),
        "step_time": step_time,
        "tokens_per_sec": tokens_per_step / step_time,
        "mfu": flops_per_step / step_time / peak_total,
        "loss_per_source": {
            name: float(m["task_loss"][i]) for i, name in enumerate(task_names) if m["task_weight"][i] > 0
        },
    }
    if weights is not None:
        record["mixture_weights"] = dict(weights)
    return record


def summarize(workdir: str, start: int, total_steps: int, wall: float) -> dict[str, Any]:
    """Loss curve, speed and goodput over the whole run (all sessions), from metrics.jsonl."""
    records = read_metrics(workdir) if jax.process_index() == 0 else []
    losses = [r["loss"] for r in records]
    # Skip the first logged interval when averaging speed: it includes warm-up.
    steady = records[1:] or records
    return {
        "workdir": str(workdir),
        "steps_this_session": total_steps - start,
        "resumed_from": start,
        "total_steps": total_steps,
        "wall_seconds": wall,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "min_loss": min(losses) if losses else None,
        "loss_curve": [(r["step"], round(r["loss"], 4)) for r in records[:: max(1, len(records) // 10)]]
        if records
        else [],
        "mean_tokens_per_sec": float(np.mean([r["tokens_per_sec"] for r in steady])) if steady else None,
        "mean_mfu": float(np.mean([r["mfu"] for r in steady])) if steady else None,
        "goodput": goodput_over_sessions(records) if records else None,
    }


# ----------------------------------------------------------------------------- command

PATH_FIELDS = (
    "workdir",
    "data.packed_dir",
    "data.tokenizer",
    "train.compilation_cache_dir",
    "init_from.workdir",
)


def resolve_paths(config: ml_collections.ConfigDict) -> None:
    """Local relative paths made absolute at the command boundary, so config.json (read by
    export, evaluate and resumes) works from any directory; gs:// URIs are left as given."""
    for field in PATH_FIELDS:
        *parents, leaf = field.split(".")
        node = checks.get(config, ".".join(parents)) if parents else config
        if node.get(leaf):
            node[leaf] = fs.resolve(node[leaf])


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    resolve_paths(config)
    try:
        train(config, started=PROCESS_START, say=lambda line: print(line, flush=True))
    except Preempted as e:
        print(f"pretrain.train: {e}", file=sys.stderr, flush=True)
        sys.exit(PREEMPTED)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.run(
        main,
        doc=__doc__,
        default_config="train/demo_tiny_cpu.py",
        shortcuts=[
            cli.Shortcut(
                "workdir",
                help="run directory: checkpoints, metrics.jsonl, config.json (resumes if it has checkpoints)",
            )
        ],
        required=["workdir"],
        argv=argv,
    )


if __name__ == "__main__":
    run()
