"""From task names to per-item records and a summary: what the command and the trainer call.

`load_tasks` reads each task's scored items and few-shot pool (checking the few-shot source
is not the scored one), `score` builds every request of every task and scores them in one
engine call (requests of all tasks share the packed rows), `summarize` computes each task's
metrics with their intervals, over all items and, when the contamination check ran, apart
for the items found in the training data and the clean ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from common.checks import ConfigError
from evals import metrics, results
from evals.engine import Engine
from evals.requests import Encode, doc_requests
from evals.tasks import Doc, Task, eval_files, read_docs, task_paths


@dataclasses.dataclass(frozen=True)
class TaskData:
    task: Task
    docs: list[Doc]  # the scored items
    pool: list[Doc]  # few-shot examples ([] when num_fewshot is 0)


def load_tasks(
    tasks: Sequence[Task],
    *,
    eval_dir: str = "",
    eval_set_paths: dict[str, str] | None = None,
    fewshot_paths: dict[str, str] | None = None,
    limit: int = 0,
    num_fewshot: int = 0,
) -> list[TaskData]:
    """Each task's first `limit` items (0: all) and, for `num_fewshot` > 0, its few-shot pool.

    `eval_set_paths` / `fewshot_paths`: {dataset: path} replacing the defaults under `eval_dir`.
    """
    out = []
    for task in tasks:
        test, fewshot = task_paths(task, eval_dir, eval_set_paths or {}, fewshot_paths or {})
        docs = read_docs(task, test, task.test_filter, limit)
        pool: list[Doc] = []
        if num_fewshot:
            if not fewshot:
                raise ConfigError(
                    f"config.num_fewshot: task {task.name} has no few-shot file; name one with "
                    f"--fewshot_set {task.dataset}=PATH (a train or dev split) or use --num_fewshot 0"
                )
            same = eval_files(task, fewshot) == eval_files(task, test)
            if same and task.fewshot_filter is None:
                raise ConfigError(
                    f"--fewshot_set {task.dataset}: {fewshot} is the scored file of {task.name}; "
                    "few-shot examples must come from a train or dev split"
                )
            pool = read_docs(task, fewshot, task.fewshot_filter)
        out.append(TaskData(task, docs, pool))
    return out


def score(
    data: Sequence[TaskData],
    engine: Engine,
    encode: Encode,
    bos: Sequence[int],
    *,
    num_fewshot: int = 0,
    seed: int = 0,
    contaminated: dict[str, set[int]] | None = None,
) -> list[dict[str, Any]]:
    """Per-item records of every task, in task then item order.

    `contaminated`: {task name: indices into its docs found in the training data}; None: not checked.
    """
    built = [(d, doc_requests(d.task, d.docs, d.pool, num_fewshot, seed, encode, bos)) for d in data]
    flat = [r for _, requests in built for dr in requests for r in dr.requests]
    scores = iter(engine.score(flat))
    records = []
    for d, requests in built:
        found = None if contaminated is None else contaminated.get(d.task.name, set())
        for i, dr in enumerate(requests):
            item_scores = [next(scores) for _ in dr.requests]
            flag = None if found is None else i in found
            records.append(
                results.item_record(d.task.name, d.task.kind, dr, item_scores, engine.row_len, flag)
            )
    return records


def summarize(records: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """{task: {items, truncated, metrics: {name: {value, ci95[, chance, differs_from_chance]}},
    contamination: {checked, items_found[, clean: metrics, contaminated: metrics]}}}."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    out = {}
    for task, items in by_task.items():
        entry: dict[str, Any] = {
            "items": len(items),
            "truncated": sum(bool(r.get("truncated")) for r in items),
            "metrics": {k: v.to_json() for k, v in metrics.summarize(items, seed).items()},
        }
        checked = all(r.get("contaminated") is not None for r in items)
        found = [r for r in items if r.get("contaminated")]
        contamination: dict[str, Any] = {"checked": checked, "items_found": len(found) if checked else None}
        if checked and found:
            clean = [r for r in items if not r["contaminated"]]
            contamination["clean"] = {k: v.to_json() for k, v in metrics.summarize(clean, seed).items()}
            contamination["contaminated"] = {
                k: v.to_json() for k, v in metrics.summarize(found, seed).items()
            }
        entry["contamination"] = contamination
        out[task] = entry
    return out
