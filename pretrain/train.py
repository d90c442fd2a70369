"""Pretrain a Gemma model: `python -m pretrain.train --config=configs/train/demo_tiny_cpu.py --workdir=DIR`.

`train()` reads top to bottom like nanoGPT's train.py: set up the mesh, model, optimiser
and data; restore the latest checkpoint of WORKDIR if there is one (so re-running the same
command resumes), or start from another run's weights (`config.init_from`); then loop:
next batch -> sharded step -> log -> checkpoint. A NaN or inf loss or gradient stops the
run before anything is saved from it.

What the loop calls lives beside it, and the tools (pretrain.tools.aot, pretrain.convert.hf_import,
studies/) import it from there: the config's checks (pretrain.train_config), the model,
optimiser, shardings and restore (pretrain.train_setup), and what the run reports
(pretrain.report).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from common import cli, fs, outputs, run_lock
from common.parsers import comma_list
from pretrain import checkpoint, data, sharding, step_memory
from pretrain.heldout import HeldOutLoss
from pretrain.metrics import Goodput, recomputed_seconds
from pretrain.report import Reporter
from pretrain.step_memory import resolve_remat_policy
from pretrain.train_config import check_resume, record_tokenizer, resolve_paths, validate, write_config
from pretrain.train_setup import TrainSetup, build_setup, jitted_train_step, make_data, restore_or_init

PROCESS_START = time.perf_counter()  # the command's goodput counts imports as startup


class Preempted(RuntimeError):
    """A preemption notice stopped the run after a checkpoint; the command exits PREEMPTED."""


PREEMPTED = 3  # exit status after a preemption checkpoint: resume by rerunning

# ----------------------------------------------------------------------------- the loop

COMMAND = "pretrain.train"
LAUNCHER_FILES = ("launch",)  # the pod launcher (pretrain/launch) writes W/launch/ before training starts


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
    if config.train.get("dry_run"):
        return step_memory.dry_run(config, say)
    workdir = fs.resolve(config.workdir)
    total_steps = config.train.total_steps

    notice = PreemptionNotice()
    # The lock first: a second run is refused before it reads the checkpoints a live run is
    # writing and retiring (a dead run's lock is removed); a refused run leaves no trace.
    with notice, workdir_held(workdir, say):
        accepted = check_resume(workdir, config)
        if accepted is None:  # no checkpoint: the folder must be new, empty or a run of ours not yet saved
            outputs.check_claim(workdir, command=COMMAND, field="config.workdir", allow=LAUNCHER_FILES)
        setup = build_setup(config, sharding.make_mesh(dict(config.mesh)))
        source, _ = make_data(config)
        downstream = make_downstream(config, setup)  # reads its eval files now
        if accepted is None:  # a fresh run: every check passed, nothing was written before this
            if jax.process_index() == 0:
                outputs.claim(workdir, command=COMMAND, run=run_lock.new_run_id())
            record_tokenizer(config)
            write_config(workdir, config)
        elif accepted:
            say("resuming with changed optimiser settings (config.resume_accept): " + "; ".join(accepted))
        manager = checkpoint.make_manager(workdir, config.checkpoint)
        state, start, origin = restore_or_init(setup, config, manager, source, say)
        notice(start)  # registers the starting step with the preemption service
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

                preempted = notice(done)
                saving = save_due(config, done) or preempted
                if report.log_due(done) or saving:
                    report.check_finite(manager)  # before anything from a NaN step is saved
                if report.log_due(done):
                    with goodput.timed("eval"):
                        eval_loss = evaluate(done, state["params"])
                        scores = downstream(done, state["params"])
                    report.log(done, metrics, weights, eval_loss, scores)
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


@contextlib.contextmanager
def workdir_held(workdir: str, say: Callable[[str], None]) -> Iterator[None]:
    """One pretrain.train per workdir (common/run_lock.py); process 0 holds it for all processes."""
    if jax.process_index() != 0:
        yield
        return
    with run_lock.held(workdir, run_lock.new_run_id(), field="config.workdir", command=COMMAND, say=say):
        yield


def save_due(config: ml_collections.ConfigDict, done: int) -> bool:
    every = config.checkpoint.every_steps
    return bool(every) and (done % every == 0 or done == config.train.total_steps)


class PreemptionNotice:
    """`notice(done)`: True, on every process at the same step, once any process got SIGTERM.

    On several processes, jax.distributed's preemption service turns a SIGTERM on any host
    (a Spot VM's preemption notice, `pretrain.launch --action=stop`) into a step all hosts
    agree on, so they save one consistent checkpoint before they go. Every process calls
    this with the starting step and then every step: the agreed step is one past the
    largest step any process has reported, and it only matches if reported steps are
    consecutive. On one process (no distributed.initialize: a GPU node, a workstation)
    nothing installs that service, so while the run is inside `with notice:` a SIGTERM
    handler of its own notes the signal and the next step answers True: the same
    checkpoint and exit status as on a pod, instead of dying with every step since the
    last checkpoint.
    """

    def __init__(self) -> None:
        self._signalled = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> PreemptionNotice:
        if not jax.distributed.is_initialized() and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda signum, frame: self._signalled.set())
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def __call__(self, done: int) -> bool:
        if jax.distributed.is_initialized():
            return multihost_utils.reached_preemption_sync_point(done)
        return self._signalled.is_set()


# ----------------------------------------------------------------------------- the run's own setup


def make_downstream(config: ml_collections.ConfigDict, setup: TrainSetup) -> Callable[[int, Any], Any]:
    """The in-loop downstream evaluation (`config.downstream`), or a no-op without tasks."""
    if not comma_list(config.get("downstream", {}).get("tasks", "")):
        return lambda step, params: None
    # Optional: the evals package reads eval files with SeqIO/TensorFlow, which the GPU
    # machines lack; a run without downstream tasks must not need them.
    from pretrain import downstream_in_loop

    return downstream_in_loop.make_downstream(config, setup)


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


def enable_compilation_cache(config: ml_collections.ConfigDict) -> None:
    """Re-runs and resumes load the compiled step from disk instead of recompiling it."""
    if config.train.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", config.train.compilation_cache_dir)


def compile_on_first_call(
    setup: TrainSetup, num_tasks: int, goodput: Goodput
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
    config: ml_collections.ConfigDict, setup: TrainSetup
) -> Callable[[int, Any], dict[str, float] | None]:
    """`evaluate(step, params)`: held-out loss per domain when due, else None."""
    every = 0 if config.data.synthetic else config.eval.every_steps
    if not every:
        return lambda step, params: None

    held_out = HeldOutLoss(
        config, setup.model, setup.mesh, setup.rules, setup.sharding["params"], setup.batch_sharding
    )
    total = config.train.total_steps
    return lambda step, params: held_out(params) if step % every == 0 or step == total else None


# ----------------------------------------------------------------------------- command


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
            ),
            cli.Shortcut("packed_dir", "data.packed_dir", "packed rows (mixtures.pack --output)"),
            cli.Shortcut("dry_run", "train.dry_run", "compile the step, report its memory per device, exit"),
            cli.Shortcut("tokenizer", "data.tokenizer", "the tokenizer.model the rows were packed with"),
        ],
        required=["workdir"],
        argv=argv,
    )


if __name__ == "__main__":
    run()
