"""Branching anneals: K short annealing arms from one checkpoint, compared on the same held-out sets.

  python -m studies.anneal --config=configs/anneal/demo.py [--from_workdir W] [--output D]

The arms are branched from the prefix's checkpoint and trained as `pretrain.train`
subprocesses (`studies.anneal_arms`: why a branch is the exact continuation, and cheap).
Each arm is then scored per item with `pretrain.tools.evaluate` on the same held-out file
(per-domain validation documents and eval-set probes, see `studies.anneal_eval`) and on the
downstream tasks (`studies.downstream`), and `studies.anneal_report` writes the table, the
noise, the controls, the curves and the verdicts to OUTPUT_DIR/report.{json,md,png}.
OUTPUT_DIR/plan.json holds the content hash of every input (`studies.inputs`).

Layout: OUTPUT_DIR/seed<S>/prefix (unless --from_workdir), OUTPUT_DIR/seed<S>/<arm>,
OUTPUT_DIR/heldout.jsonl, OUTPUT_DIR/logs/, OUTPUT_DIR/report.*.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import logging

from common import cli, fs
from studies import anneal_arms, anneal_eval, anneal_report, controls, inputs
from studies.anneal_arms import Trainer, train_subprocess


def study(
    config: ml_collections.ConfigDict,
    progress: Callable[[str], None] = logging.info,
    trainer: Trainer = train_subprocess,
    scorer: anneal_eval.Scorer | None = None,
) -> dict[str, Any]:
    """Runs, scores and reports the whole study; returns the report (also in OUTPUT_DIR).

    OUTPUT_DIR/plan.json records the content hash of every input (`studies.inputs`); a rerun
    into the same OUTPUT_DIR on inputs that hash differently is refused before anything runs.
    """
    anneal_arms.validate(config)
    controls.validate(config)
    anneal_arms.resolve_paths(config)
    fs.makedirs(config.output_dir)
    plan_path = fs.join(config.output_dir, "plan.json")
    hashes = anneal_eval.study_inputs(config)
    recorded = inputs.read_recorded(plan_path)
    if recorded is not None:
        inputs.check_same(recorded, hashes, config.output_dir)
    fs.write_text_atomic(plan_path, json.dumps({"inputs": hashes}, indent=1, sort_keys=True) + "\n")
    fs.write_text(
        fs.join(config.output_dir, "study_config.json"), config.to_json_best_effort(indent=2) + "\n"
    )
    t0 = time.perf_counter()
    runs = anneal_arms.run_arms(config, progress, trainer)
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    progress("scoring every checkpoint on the held-out sets")
    scores = anneal_eval.score_study(config, runs, scorer)
    eval_seconds = time.perf_counter() - t1
    runs["timings"].update(train_seconds=train_seconds, eval_seconds=eval_seconds)
    return anneal_report.write(config, runs, scores, hashes)


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
            cli.Shortcut("output", "output_dir", "Where runs and the report go", deprecated=("output_dir",)),
        ],
        required=["output_dir"],
    )


if __name__ == "__main__":
    run()
