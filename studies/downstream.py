"""Downstream metrics for the studies: the `evals` tasks scored on each arm's checkpoint, per item.

A study decides on what a model can do, not only on loss over eval-item text: every arm is
also scored on `config.downstream.tasks` (evals' task registry: `arc_easy`, `mmlu`,
`gsm8k_bpb`, ...), and each metric evals defines for the task becomes a study metric named
`<task>/<metric>`: `arc_easy/prob_correct` (the correct answer's probability normalised over
the choices), `arc_easy/logprob_per_char`, `arc_easy/acc`, `gsm8k_bpb/bpb` (bits per byte
of the gold answer), ... An objective, a constraint or a verdict can name any of them.
Every metric is kept per item as evals computes it, a numerator and a denominator
(`evals.metrics.metrics_for`), so the studies' paired bootstrap pools it exactly as evals
does. Higher is better except for `evals.metrics.LOWER_IS_BETTER` (bits per byte).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from evals import harness, metrics, tasks
from pretrain.checkpoint import load_train_config
from pretrain.tools import checkpoint_scorer
from studies import inputs
from tokenizer.special_ids import bos_prefix

SEPARATOR = "/"


def enabled(config: ml_collections.ConfigDict) -> bool:
    return bool(config.get("downstream") and config.downstream.tasks)


def load(config: ml_collections.ConfigDict) -> list[harness.TaskData]:
    """The scored items of every downstream task (the first `limit` of each), zero-shot."""
    d = config.downstream
    return harness.load_tasks(
        tasks.resolve(list(d.tasks)),
        eval_dir=d.eval_dir,
        eval_set_paths=dict(d.eval_sets),
        limit=d.limit,
    )


def items_sha256(data: Sequence[harness.TaskData]) -> str:
    """One digest of every scored item: task, file, index, prompt, continuations, gold."""
    return inputs.items_sha256(
        [
            {"task": t.task.name, "source": doc.source, "doc_id": doc.doc_id, "query": doc.query}
            | {"choices": list(doc.choices), "gold": doc.gold}
            for t in data
            for doc in t.docs
        ]
    )


def score(
    workdir: str, step: int, data: Sequence[harness.TaskData], batch_rows: int = 8
) -> list[dict[str, Any]]:
    """evals' per-item records of the checkpoint `step` of `workdir`, loaded and scored as the
    downstream command does (its model, tokenizer and BOS policy), in rows of the run's seq_len."""
    run = load_train_config(workdir)
    loaded = checkpoint_scorer.load(workdir, step, batch_rows=batch_rows, row_len=run.data.seq_len)
    with jax.set_mesh(loaded.mesh):
        return harness.score(data, loaded.engine, loaded.vocab.encode, bos_prefix(loaded.bos))


def per_item(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, list]]:
    """{"<task>/<metric>": {"ids", "num", "den"}}: every metric of every task, per item."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    out = {}
    for task, items in by_task.items():
        for name, metric in metrics.metrics_for(items).items():
            pairs = [metric(r) for r in items]
            out[f"{task}{SEPARATOR}{name}"] = {
                "ids": [f"{r.get('source', '')}:{r['doc_id']}" for r in items],
                "num": [p[0] for p in pairs],
                "den": [p[1] for p in pairs],
            }
    return out


def lower_is_better(metric: str) -> bool:
    """Loss-like study metrics (probe losses, bits per byte) go down when the model improves."""
    if SEPARATOR not in metric:
        return True  # held-out and probe losses
    return metric.rsplit(SEPARATOR, 1)[1] in metrics.LOWER_IS_BETTER
