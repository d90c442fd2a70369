"""Branching anneals: K short annealing arms from one checkpoint, compared on the same held-out sets.

  python -m studies.anneal --config=configs/anneal/demo.py [--from_workdir W] [--output_dir D]

Why branching is cheap and exact: the prefix trains with warmup then a constant learning
rate, which is the stable phase of a warmup-stable-decay (WSD) schedule. Each arm is a run
of `prefix + anneal` steps in its own workdir that starts from the prefix's last checkpoint
(`config.init_from` with `keep_step`: parameters, AdamW moments and the step) and whose
mixture is the prefix's until the branch point, then the arm's annealing weights, with the
learning rate decaying from there. The data stream is a pure function of (seed, step,
schedule), so an arm reads exactly the rows the uninterrupted run would: an arm is the run
that would have trained prefix + anneal in one go (tested), and K arms cost
prefix + K x anneal steps, not K x (prefix + anneal).

Every run is a `pretrain.train` subprocess on a generated config (the training config with
the arm's mixture, decay and init_from). Each
arm is then scored with `pretrain.tools.evaluate` on the same held-out file (per-domain validation
documents and eval-set probes, see `studies.anneal_eval`), and `studies.anneal_report`
writes the table, the curves and the verdict to OUTPUT_DIR/report.{json,md,png}.

Layout: OUTPUT_DIR/seed<S>/prefix (unless --from_workdir), OUTPUT_DIR/seed<S>/<arm>,
OUTPUT_DIR/heldout.jsonl, OUTPUT_DIR/logs/, OUTPUT_DIR/report.*.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import logging

from common import checks, cli, fs
from mixtures.schedule import Schedule
from pretrain.checkpoint import load_train_config
from pretrain.train_config import changes_since
from studies import anneal_eval, anneal_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- config


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the study's own fields (the training config is checked by pretrain.train)."""
    checks.require(bool(config.output_dir), "output_dir", "must be set (--output_dir=DIR)")
    checks.require(
        bool(config.prep_dir),
        "prep_dir",
        "must be the prepared data behind the packed rows (held-out documents)",
    )
    checks.require(len(config.seeds) >= 1, "seeds", "must name at least one seed", config.seeds)
    checks.require(len(set(config.seeds)) == len(config.seeds), "seeds", "must be distinct", config.seeds)
    if not config.from_workdir:
        checks.positive(config.prefix_steps, "prefix_steps")
        checks.require(
            config.prefix_steps >= config.train.optim.warmup_steps,
            "prefix_steps",
            f"must be >= train.optim.warmup_steps={config.train.optim.warmup_steps}",
            config.prefix_steps,
        )
    checks.positive(config.anneal_steps, "anneal_steps")
    checks.positive(config.eval_every, "eval_every")
    checks.require(
        config.anneal_steps % config.eval_every == 0,
        "eval_every",
        f"must divide anneal_steps={config.anneal_steps}",
        config.eval_every,
    )
    checks.require(len(config.arms) >= 1, "arms", "must declare at least one arm")
    names = [arm["name"] for arm in config.arms]
    checks.require(
        len(set(names)) == len(names) and all(names),
        "arms",
        "every arm needs a distinct, non-empty name",
        names,
    )
    for i, arm in enumerate(config.arms):
        weights = arm.get("weights")
        if weights is not None:
            total = sum(weights.values())
            checks.require(
                abs(total - 1.0) < 1e-6 and min(weights.values()) >= 0,
                f"arms[{i}].weights",
                "must be >= 0 and sum to 1",
                dict(weights),
            )
        checks.require(
            arm.get("versus") in (None, "", *names) and arm.get("versus") != arm["name"],
            f"arms[{i}].versus",
            "must name another arm (the baseline this arm is judged against)",
            arm.get("versus"),
        )
        unknown = set(arm.get("optim") or {}) - set(config.train.optim.keys())
        checks.require(not unknown, f"arms[{i}].optim", f"unknown optimiser fields {sorted(unknown)}")
    checks.non_negative(config.probes.max_items, "probes.max_items")
    checks.non_negative(config.probes.validation_docs, "probes.validation_docs")
    for group, members in config.probes.groups.items():
        missing = set(members) - set(config.probes.sets)
        checks.require(
            not missing, f"probes.groups.{group}", f"names sets that probes.sets lacks: {sorted(missing)}"
        )


# ----------------------------------------------------------------------------- runs


def prefix_weights(train_config: ml_collections.ConfigDict, step: int) -> dict[str, float]:
    """The mixture in force at the prefix's last step: what arms with `weights=None` keep."""
    schedule = Schedule.from_config(train_config.mixture, max(train_config.train.total_steps, step))
    return {t: w for t, w in schedule.weights_at(max(step - 1, 0)).items() if w > 0}


def arm_mixture(
    mixture: ml_collections.ConfigDict,
    general: dict[str, float],
    anneal: dict[str, float],
    prefix_steps: int,
    total_steps: int,
) -> ml_collections.ConfigDict:
    """The prefix's mixture until `prefix_steps`, then the arm's annealing weights (only
    those when the arm starts at step 0: a branch from a Hugging Face import)."""
    out = ml_collections.ConfigDict(mixture.to_dict())
    out.tasks = list(dict.fromkeys([*general, *anneal]))
    prefix = (
        [dict(name="prefix", start=0.0, weights=dict(general), interpolate=False)] if prefix_steps else []
    )
    out.stages = [
        *prefix,
        dict(name="anneal", start=prefix_steps / total_steps, weights=dict(anneal), interpolate=False),
    ]
    return out


def prefix_config(study: ml_collections.ConfigDict, seed: int, workdir: str) -> ml_collections.ConfigDict:
    """The study's training config for the prefix: WSD's stable phase (warmup, constant lr)."""
    c = ml_collections.ConfigDict(study.train.to_dict())
    c.workdir, c.seed = workdir, seed
    c.train.total_steps = study.prefix_steps
    c.optim.schedule = "constant"
    c.eval.every_steps = _eval_every(study.prefix_steps, study.eval_every, c.train.log_every)
    c.checkpoint.every_steps = study.prefix_steps
    return c


def arm_config(
    base: ml_collections.ConfigDict,
    arm: dict[str, Any],
    general: dict[str, float],
    source_workdir: str,
    start: int,
    anneal_steps: int,
    eval_every: int,
    seed: int,
    workdir: str,
) -> ml_collections.ConfigDict:
    """`base` (the prefix's training config) continued from `source_workdir`'s checkpoint
    `start` for `anneal_steps` as the arm says (`config.init_from`, keeping the step)."""
    c = ml_collections.ConfigDict(base.to_dict())
    total = start + anneal_steps
    c.workdir, c.seed = workdir, seed
    c.train.total_steps = total
    weights = dict(arm["weights"]) if arm.get("weights") is not None else general
    c.mixture = arm_mixture(base.mixture, general, weights, start, total)
    c.optim.schedule, c.optim.decay_start = "wsd", str(start)
    c.optim.warmup_steps = min(c.optim.warmup_steps, start)
    c.optim.update(dict(arm.get("optim") or {}))
    if arm.get("packed_dir"):  # the same documents packed with another high_quality marking
        c.data.packed_dir = fs.resolve(arm["packed_dir"])
    c.init_from.update(dict(workdir=source_workdir, step=start, keep_step=True))
    c.train.log_every = _divisor(c.train.log_every, eval_every)
    c.eval.every_steps = eval_every
    c.checkpoint.every_steps = anneal_steps
    return c


def _divisor(preferred: int, n: int) -> int:
    """The largest divisor of n not above `preferred` (logging must hit every eval step)."""
    return max(d for d in range(1, min(preferred, n) + 1) if n % d == 0)


def _eval_every(steps: int, every: int, log_every: int) -> int:
    every = max(log_every, every - every % log_every)
    return every if every <= steps else 0


def branch_step(config: ml_collections.ConfigDict) -> int:
    """The step the arms branch at: `from_step` of `from_workdir` (-1: its newest checkpoint),
    or the end of the study's own prefix."""
    if not config.from_workdir:
        return int(config.prefix_steps)
    return latest_step(config.from_workdir) if config.from_step < 0 else int(config.from_step)


def latest_step(workdir: str) -> int:
    """The newest finished checkpoint step of a pretrain.train workdir."""
    directory = fs.join(workdir, "checkpoints")
    steps = [int(n) for n in fs.listdir(directory) if n.isdigit()] if fs.isdir(directory) else []
    if not steps:
        raise checks.ConfigError(f"config.from_workdir: no checkpoint under {directory}")
    return max(steps)


def train_subprocess(config: ml_collections.ConfigDict, log_path: str) -> float:
    """Runs `python -m pretrain.train` on `config` (as a generated config file); wall seconds.

    A run that already reached its last step is not rerun (pretrain.train would resume and
    stop at once), so an interrupted study continues where it stopped.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "launch_config.py")
        with open(path, "w") as f:  # a local file for config_flags, wherever the workdir is
            f.write(
                "import json\nimport ml_collections\n\n\ndef get_config():\n"
                f"    return ml_collections.ConfigDict(json.loads({config.to_json()!r}))\n"
            )
        command = [sys.executable, "-m", "pretrain.train", f"--config={path}"]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
        start = time.perf_counter()
        result = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
        )
        seconds = time.perf_counter() - start
    fs.write_text(log_path, result.stdout)
    if result.returncode:
        tail = result.stdout.splitlines()[-15:]
        raise RuntimeError(
            f"pretrain.train failed for {config.workdir} (log {log_path}):\n" + "\n".join(tail)
        )
    return seconds


TIMING_FILE = "anneal_timing.json"  # a run's wall seconds, kept for the cost of a resumed study


def _timed(workdir: str, seconds: float, steps: int) -> None:
    fs.write_text(fs.join(workdir, TIMING_FILE), json.dumps({"steps": steps, "seconds": seconds}))


def _timing(workdir: str) -> dict[str, Any]:
    path = fs.join(workdir, TIMING_FILE)
    return json.loads(fs.read_text(path)) if fs.exists(path) else {"steps": 0, "seconds": 0.0}


def _done(workdir: str, step: int) -> bool:
    return fs.isdir(fs.join(workdir, "checkpoints", str(step)))


# What makes a prefix or an arm the run it is: a rerun of the study reuses (or resumes) a
# run in its workdir only when these equal what the study's config asks now.
RUN_FIELDS = (
    "model",
    "seed",
    "mixture",
    "optim",
    "init_from",
    "train.total_steps",
    "train.z_loss",
    "data.packed_dir",
    "data.global_batch_size",
    "data.seq_len",
)


def _check_reusable(workdir: str, cfg: ml_collections.ConfigDict, field: str) -> None:
    """Refuses a workdir holding a run made with other settings: reusing its checkpoints would
    report, under this config, results of another (an edited arm, a changed anneal length)."""
    if not fs.exists(fs.join(workdir, "config.json")):
        return
    changed = changes_since(workdir, cfg, RUN_FIELDS)
    if changed:
        raise checks.ConfigError(
            f"config.{field}: {workdir} holds a run made with other settings ({'; '.join(changed[:4])}"
            f"{'; ...' if len(changed) > 4 else ''}); name the arm anew or use a new --output_dir"
        )


Trainer = Callable[[ml_collections.ConfigDict, str], float]  # (config, log path) -> seconds


def run_arms(
    config: ml_collections.ConfigDict,
    progress: Callable[[str], None] = logging.info,
    trainer: Trainer = train_subprocess,
) -> dict[str, Any]:
    """Trains the prefix (per seed, unless from_workdir) and every arm; returns the run table.

    `trainer` runs one training config; the default is a `pretrain.train` subprocess.
    """
    out = config.output_dir
    logs = fs.makedirs(fs.join(out, "logs"))
    runs: dict[str, Any] = {"seeds": {}, "timings": {"prefix": [], "arms": {}}}
    for seed in config.seeds:
        seed_dir = fs.join(out, f"seed{seed}")
        if config.from_workdir:
            prefix_dir, step = config.from_workdir, branch_step(config)
            base = load_train_config(prefix_dir)
            base.data.update(
                {k: v for k, v in config.train.data.items() if k in ("packed_dir", "tokenizer") and v}
            )
        else:
            prefix_dir, step = fs.join(seed_dir, "prefix"), branch_step(config)
            base = prefix_config(config, seed, prefix_dir)
            _check_reusable(prefix_dir, base, "prefix_steps")
            if not _done(prefix_dir, step):
                progress(f"seed {seed}: training the prefix ({step} steps) in {prefix_dir}")
                _timed(prefix_dir, trainer(base, fs.join(logs, f"seed{seed}_prefix.log")), step)
            runs["timings"]["prefix"].append({"seed": seed, **_timing(prefix_dir)})
        general = prefix_weights(base, step)
        arms = {}
        for i, arm in enumerate(config.arms):
            workdir = fs.join(seed_dir, arm["name"])
            cfg = arm_config(
                base, arm, general, prefix_dir, step, config.anneal_steps, config.eval_every, seed, workdir
            )
            _check_reusable(workdir, cfg, f"arms[{i}]")
            if not _done(workdir, cfg.train.total_steps):
                progress(
                    f"seed {seed}: arm {arm['name']} ({config.anneal_steps} steps from "
                    f"step {step}) in {workdir}"
                )
                _timed(
                    workdir, trainer(cfg, fs.join(logs, f"seed{seed}_{arm['name']}.log")), config.anneal_steps
                )
            runs["timings"]["arms"].setdefault(arm["name"], []).append({"seed": seed, **_timing(workdir)})
            arms[arm["name"]] = {
                "workdir": workdir,
                "step": cfg.train.total_steps,
                "weights": dict(cfg.mixture.stages[-1]["weights"]),
                "optim": dict(arm.get("optim") or {}),
            }
        runs["seeds"][str(seed)] = {
            "prefix": {"workdir": prefix_dir, "step": step, "weights": general},
            "arms": arms,
        }
    return runs


# ----------------------------------------------------------------------------- command


def resolve_paths(config: ml_collections.ConfigDict) -> None:
    """Makes the study's paths absolute (runs are subprocesses, possibly in other directories)."""
    config.output_dir = fs.resolve(config.output_dir)
    if config.from_workdir:
        config.from_workdir = fs.resolve(config.from_workdir)
    for field in ("packed_dir", "tokenizer"):
        if config.train.data[field]:
            config.train.data[field] = fs.resolve(config.train.data[field])
    config.prep_dir = fs.resolve(config.prep_dir)


def study(
    config: ml_collections.ConfigDict,
    progress: Callable[[str], None] = logging.info,
    trainer: Trainer = train_subprocess,
) -> dict[str, Any]:
    """Runs, scores and reports the whole study; returns the report (also in OUTPUT_DIR)."""
    validate(config)
    resolve_paths(config)
    fs.makedirs(config.output_dir)
    fs.write_text(
        fs.join(config.output_dir, "study_config.json"), config.to_json_best_effort(indent=2) + "\n"
    )
    t0 = time.perf_counter()
    runs = run_arms(config, progress, trainer)
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    progress("scoring every checkpoint on the held-out sets")
    scores = anneal_eval.score_study(config, runs)
    eval_seconds = time.perf_counter() - t1
    runs["timings"].update(train_seconds=train_seconds, eval_seconds=eval_seconds)
    return anneal_report.write(config, runs, scores)


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    del argv
    report = study(config, progress=lambda line: print(line, flush=True))
    print(report["markdown"])
    print(f"report: {report['paths']}")


def run() -> None:
    """Console-script entry point."""
    cli.run(
        main,
        doc=__doc__,
        default_config="anneal/demo.py",
        shortcuts=[
            cli.Shortcut("from_workdir", help="Branch from this workdir's checkpoint instead of a prefix"),
            cli.Shortcut("output_dir", help="Where runs and the report go"),
        ],
        required=["output_dir"],
    )


if __name__ == "__main__":
    run()
