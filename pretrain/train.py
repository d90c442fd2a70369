"""Pretrain a Gemma model: `python -m pretrain.train --config=configs/train/demo_tiny_cpu.py --config.workdir=DIR`.

Read top to bottom, like nanoGPT's train.py: set up the mesh, model, optimiser and data;
restore the latest checkpoint of WORKDIR if there is one (so re-running the same command
resumes); then loop: next batch -> sharded step -> log -> checkpoint. A NaN or inf loss or
gradient stops the run before anything is saved from it.
"""

from __future__ import annotations

import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags

from common import fs
from pretrain import checkpoint, data, flops, optim, sharding
from pretrain.metrics import MetricsWriter, read_metrics
from pretrain.model.transformer import Transformer, TransformerConfig
from pretrain.train_step import BATCH_KEYS, jit_train_step, make_train_step
from pretrain.validation import Validation

# Defined at import (unlike the other CLIs) because pretrain.hf_import shares this --config.
_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config (.py file).",
                                          lock_config=True)


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm became NaN/inf; nothing from that step on is saved."""


# ----------------------------------------------------------------------------- setup

def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every field the trainer reads, so a bad value fails before any compute."""
    def need(ok: bool, field: str, msg: str) -> None:
        if not ok:
            raise ValueError(f"config.{field}: {msg}, got {_get(config, field)!r}")

    need(bool(config.workdir), "workdir", "must be set (--config.workdir=DIR)")
    need(config.train.total_steps >= 1, "train.total_steps", "must be >= 1")
    need(config.train.log_every >= 1, "train.log_every", "must be >= 1")
    need(config.train.grad_accum_steps >= 1, "train.grad_accum_steps", "must be >= 1")
    need(config.train.z_loss >= 0, "train.z_loss", "must be >= 0")
    need(config.data.seq_len >= 2, "data.seq_len", "must be >= 2")
    need(config.data.global_batch_size >= 1, "data.global_batch_size", "must be >= 1")
    need(config.data.global_batch_size % config.train.grad_accum_steps == 0,
         "data.global_batch_size", f"must be divisible by train.grad_accum_steps="
         f"{config.train.grad_accum_steps}")
    need(config.eval.every_steps >= 0, "eval.every_steps", "must be >= 0 (0 disables)")
    need(config.eval.every_steps % config.train.log_every == 0, "eval.every_steps",
         f"must be a multiple of train.log_every={config.train.log_every}")
    need(config.eval.batches >= 1, "eval.batches", "must be >= 1")
    optim.validate(config.optim, config.train.total_steps)
    checkpoint.validate(config.checkpoint)
    if not config.data.synthetic:
        need(fs.isdir(config.data.prep_dir), "data.prep_dir",
             "must be a prepared-data directory (python -m data_pipeline.prepare)")
        need(fs.isfile(config.data.tokenizer), "data.tokenizer",
             "must be a tokenizer.model file (python -m tokenizer.train)")
        need(bool(config.mixture.get("stages")), "mixture", "must be a mixture config with stages")
        from tokenizer.vocab import load_vocabulary

        tokens = load_vocabulary(config.data.tokenizer).vocab_size
        need(config.model.vocab_size >= tokens, "model.vocab_size",
             f"must cover the tokenizer's {tokens} tokens")


PATH_FIELDS = ("workdir", "data.prep_dir", "data.tokenizer", "train.compilation_cache_dir")


def resolve_paths(config: ml_collections.ConfigDict) -> None:
    """Local relative paths made absolute, so config.json (read by export and evaluate)
    works from any directory and Orbax gets the absolute path it requires; gs:// unchanged."""
    for field in PATH_FIELDS:
        *parents, leaf = field.split(".")
        node = _get(config, ".".join(parents)) if parents else config
        if node.get(leaf):
            node[leaf] = fs.resolve(node[leaf])


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config[part]
    return config


def maybe_initialize_distributed(cfg: ml_collections.ConfigDict) -> None:
    """jax.distributed.initialize on multi-host pods, only when the config asks for it."""
    if not cfg.initialize:
        return
    kwargs = {}
    if cfg.coordinator_address:
        kwargs = dict(coordinator_address=cfg.coordinator_address,
                      num_processes=cfg.num_processes, process_id=cfg.process_id)
    jax.distributed.initialize(**kwargs)  # On TPU VMs the arguments are auto-detected.


def write_config(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")


def make_data(config: ml_collections.ConfigDict) -> tuple[data.BatchSource, Any]:
    """(batch source for this process, mixture schedule or None)."""
    d = config.data
    if d.synthetic:
        return data.SyntheticBatches(config.seed, d.global_batch_size, d.seq_len,
                                     config.model.vocab_size, jax.process_index(),
                                     jax.process_count()), mixture_schedule(config)
    from mixtures.stream import PackedStream  # Imported here: pulls in SeqIO/TensorFlow.

    stream = PackedStream(config.mixture, d.prep_dir, d.tokenizer,
                          batch_size=d.global_batch_size, total_steps=config.train.total_steps,
                          seq_len=d.seq_len, seed=config.seed,
                          process_index=jax.process_index(), process_count=jax.process_count())
    return stream, stream.schedule


def mixture_schedule(config: ml_collections.ConfigDict) -> Any:
    """The mixture's Schedule, or None when config.mixture has no stages.

    Built even for synthetic data, so a synthetic run has the real run's learning-rate
    schedule (the WSD decay aligned with the annealing stage).
    """
    if not config.mixture.get("stages"):
        return None
    from mixtures.schedule import Schedule

    return Schedule.from_config(config.mixture, config.train.total_steps)


def anneal_start(schedule: Any) -> int | None:
    """Step at which the mixture's last (annealing) stage begins, for the WSD decay."""
    if schedule is None or len(schedule.stages) < 2:
        return None
    return schedule.stages[-1].start_step


def init_state(model: nn.Module, optimizer: optax.GradientTransformation, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh, rules) -> tuple[Any, Any, Any]:
    """(init function, abstract state, state shardings) from the params' logical axes."""
    dummy = jnp.zeros((1, config.data.seq_len), jnp.int32)

    def init(rng):
        params = nn.unbox(model.init(rng, dummy, dummy, dummy)["params"])
        return {"params": params, "opt_state": optimizer.init(params),
                "step": jnp.zeros((), jnp.int32), "rng": rng}

    boxed = jax.eval_shape(lambda r: model.init(r, dummy, dummy, dummy)["params"],
                           jax.random.PRNGKey(0))
    param_sharding = sharding.mesh_shardings(boxed, mesh, rules)
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    replicated = NamedSharding(mesh, P())
    # Each AdamW moment is sharded like its parameter; scalars (counts) are replicated.
    opt_sharding = optax.tree_utils.tree_map_params(
        optimizer, lambda _, s: s, abstract["opt_state"], param_sharding,
        transform_non_params=lambda _: replicated)
    state_sharding = {"params": param_sharding, "opt_state": opt_sharding,
                      "step": replicated, "rng": replicated}
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract, state_sharding)
    return jax.jit(init, out_shardings=state_sharding), abstract, state_sharding


def batch_shardings(mesh: jax.sharding.Mesh, rules) -> dict[str, NamedSharding]:
    """Batch dimension over the data-parallel axes the rules give `activation_batch`."""
    rows = nn.logical_to_mesh_axes(("activation_batch",), rules)[0]
    return {key: NamedSharding(mesh, P(rows) if key == "task_ids" else P(rows, None))
            for key in BATCH_KEYS}


# ----------------------------------------------------------------------------- loop

def train(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Trains to config.train.total_steps (resuming WORKDIR if possible); returns a summary."""
    maybe_initialize_distributed(config.distributed)
    resolve_paths(config)
    validate(config)
    if config.train.compilation_cache_dir:  # Re-runs and resumes skip XLA compilation.
        jax.config.update("jax_compilation_cache_dir", config.train.compilation_cache_dir)
    workdir = fs.as_path(config.workdir)
    write_config(workdir, config)
    total_steps, log_every = config.train.total_steps, config.train.log_every
    chief = jax.process_index() == 0

    mesh = sharding.make_mesh(dict(config.mesh))
    rules = sharding.logical_rules(config)
    model_cfg = TransformerConfig.from_config_dict(config.model)
    model = Transformer(model_cfg)

    source, schedule = make_data(config)
    lr_schedule = optim.make_schedule(config.optim, total_steps, anneal_start(schedule))
    optimizer = optim.make_optimizer(config.optim, lr_schedule)
    init_fn, abstract_state, state_sharding = init_state(model, optimizer, config, mesh, rules)

    manager = checkpoint.make_manager(workdir, config.checkpoint)
    restored = checkpoint.restore_latest(manager, abstract_state)
    if restored is None:
        state = init_fn(jax.random.PRNGKey(config.seed))
        start = 0
    else:
        state, data_state = restored
        source.set_state(data_state)
        start = int(state["step"])
        if chief:
            print(f"resumed from {manager.directory}/{start} (step {start} of {total_steps})")

    in_sharding = batch_shardings(mesh, rules)
    step_fn = jit_train_step(
        make_train_step(model, optimizer, lr_schedule,
                        micro_steps=config.train.grad_accum_steps, z_loss=config.train.z_loss,
                        num_tasks=len(source.task_names), rules=rules),
        state_sharding, in_sharding, mesh)
    validate_every = 0 if config.data.synthetic else config.eval.every_steps
    if validate_every:
        held_out = Validation(config, model, mesh, rules, state_sharding["params"], in_sharding)
    writer = MetricsWriter(workdir, resume_step=start, tensorboard=config.metrics.tensorboard)

    tokens_per_step = config.data.global_batch_size * config.data.seq_len
    flops_per_step = tokens_per_step * flops.train_flops_per_token(
        flops.shape_of(model_cfg), config.data.seq_len)
    peak, peak_source = ((config.metrics.peak_flops, "config") if config.metrics.peak_flops
                         else flops.peak_flops_per_device(model_cfg.activation_dtype))
    peak_total = peak * jax.device_count()
    if chief:
        print(f"mesh {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].device_kind} "
              f"device(s); peak {peak / 1e12:.3g} TFLOP/s per device ({peak_source}); "
              f"{flops_per_step / 1e9:.3g} GFLOP per step; {tokens_per_step} tokens per step")

    stage = weights = None
    pending: list[tuple[int, dict]] = []  # steps run since the last finiteness check
    interval_start, interval_steps = time.perf_counter(), 0
    run_start = time.perf_counter()
    compiled = None
    try:
        for step in range(start, total_steps):
            # Mixture weights in effect: print when the stage switches.
            if schedule is not None and not config.data.synthetic:
                weights = schedule.weights_at(step)
                if chief and schedule.stage_at(step) != stage:
                    word = "mixture stage" if stage is None else "mixture stage switch ->"
                    stage = schedule.stage_at(step)
                    print(f"step {step}: {word} {stage}: " +
                          ", ".join(f"{k}={v:.3f}" for k, v in weights.items() if v), flush=True)

            batch = data.to_global(next(source), in_sharding, config.data.global_batch_size)
            if compiled is None:
                t0 = time.perf_counter()
                with jax.set_mesh(mesh):  # Lets the model's activation constraints see the mesh.
                    compiled = step_fn.lower(state, batch).compile()
                if chief:
                    print(f"compiled train step in {time.perf_counter() - t0:.1f}s")
                interval_start = time.perf_counter()
            state, metrics = compiled(state, batch)
            pending.append((step + 1, metrics))
            interval_steps += 1
            done = step + 1

            save_due = done % config.checkpoint.every_steps == 0 or done == total_steps
            if done % log_every == 0 or done == total_steps or save_due:
                check_finite(pending, manager)
                pending.clear()
            if done % log_every == 0 or done == total_steps:
                elapsed = time.perf_counter() - interval_start
                record = log_record(jax.device_get(metrics), source.task_names, weights,
                                    elapsed / interval_steps, tokens_per_step, flops_per_step,
                                    peak_total)
                if validate_every and (done % validate_every == 0 or done == total_steps):
                    record["eval_loss"] = held_out(state["params"])
                    if chief:
                        print(f"step {done}: validation loss " + ", ".join(
                            f"{k} {v:.4f}" for k, v in record["eval_loss"].items()))
                writer.write(done, record)
                if chief:
                    print(f"step {done}/{total_steps}: loss {record['loss']:.4f} "
                          f"lr {record['lr']:.3g} grad_norm {record['grad_norm']:.3g} "
                          f"{record['tokens_per_sec']:.0f} tok/s mfu {record['mfu']:.2%}", flush=True)
                interval_start, interval_steps = time.perf_counter(), 0
            if save_due:
                checkpoint.save(manager, done, state, source.get_state(), force=done == total_steps)

    finally:  # Also on NaN or Ctrl-C: commit the last good async save, stop the reader.
        manager.wait_until_finished()
        manager.close()
        writer.close()
        source.close()
    summary = summarize(workdir, start, total_steps, time.perf_counter() - run_start)
    if chief:
        print_summary(summary)
    return summary


def check_finite(pending: list[tuple[int, dict]], manager) -> None:
    """Raises NonFiniteLossError at the first step whose loss or gradient is NaN/inf."""
    for step, metrics in pending:
        if not bool(metrics["finite"]):
            last = manager.latest_step()
            raise NonFiniteLossError(
                f"loss {float(metrics['loss'])} / grad_norm {float(metrics['grad_norm'])} at "
                f"step {step} is not finite; stopping without saving. Last good checkpoint: "
                f"{'none' if last is None else f'step {last}'}. Lower config.optim.peak_lr or "
                "inspect the data near this step.")


def log_record(m: dict[str, Any], task_names: list[str], weights: dict[str, float] | None,
               step_time: float, tokens_per_step: int, flops_per_step: float,
               peak_total: float) -> dict[str, Any]:
    """The metrics.jsonl object for one logged step."""
    record = {
        "loss": float(m["loss"]),
        "z_loss": float(m["z_loss"]),
        "lr": float(m["lr"]),
        "grad_norm": float(m["grad_norm"]),
        "step_time": step_time,
        "tokens_per_sec": tokens_per_step / step_time,
        "mfu": flops_per_step / step_time / peak_total,
        "loss_per_source": {name: float(m["task_loss"][i]) for i, name in enumerate(task_names)
                            if m["task_weight"][i] > 0},
    }
    if weights is not None:
        record["mixture_weights"] = dict(weights)
    return record


def summarize(workdir: epath.Path, start: int, total_steps: int, wall: float) -> dict[str, Any]:
    """Loss curve and speed over the whole run (all sessions), from metrics.jsonl."""
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
        "loss_curve": [(r["step"], round(r["loss"], 4)) for r in
                       records[:: max(1, len(records) // 10)]] if records else [],
        "mean_tokens_per_sec": float(np.mean([r["tokens_per_sec"] for r in steady])) if steady else None,
        "mean_mfu": float(np.mean([r["mfu"] for r in steady])) if steady else None,
    }


def print_summary(s: dict[str, Any]) -> None:
    print("=" * 72)
    print(f"training done: {s['total_steps']} steps ({s['steps_this_session']} this session, "
          f"resumed from {s['resumed_from']}) in {s['wall_seconds']:.1f}s")
    if s["first_loss"] is not None:
        print(f"loss {s['first_loss']:.4f} -> {s['final_loss']:.4f} (min {s['min_loss']:.4f}); "
              f"{s['mean_tokens_per_sec']:.0f} tok/s, MFU {s['mean_mfu']:.2%}")
        print("loss curve: " + "  ".join(f"{step}:{loss}" for step, loss in s["loss_curve"]))
    print(f"outputs: {s['workdir']}/{{checkpoints,metrics.jsonl,tensorboard,config.json}}")


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    train(_CONFIG.value)


def run() -> None:
    """Console-script entry point."""
    flags.mark_flags_as_required(["config"])
    app.run(main)


if __name__ == "__main__":
    run()
