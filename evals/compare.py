"""Paired comparison of two downstream results (two checkpoints, two runs) on the items both scored.

  python -m evals.compare --a DIR_A --b DIR_B [--seed 0] [--json OUT.json]

DIR is what `pretrain.tools.downstream --output` wrote (or its items.jsonl). Per task and
metric: A's value, B's, the difference A - B and its 95% bootstrap interval over the
shared items, resampled together so that item difficulty cancels, and "no difference"
where the interval spans zero.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections

from common import checks, cli, fs
from evals import metrics, results


def compare_results(a: list[dict[str, Any]], b: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """{task: {metric: metrics.compare's entry}} for every task both hold."""
    tasks_b = {r["task"] for r in b}
    out = {}
    for task in dict.fromkeys(r["task"] for r in a):
        if task in tasks_b:
            left = [r for r in a if r["task"] == task]
            right = [r for r in b if r["task"] == task]
            out[task] = metrics.compare(left, right, seed)
    return out


def table(comparison: dict[str, Any]) -> str:
    rows = [("task", "metric", "items", "A", "B", "A - B", "95% interval", "")]
    for task, by_metric in comparison.items():
        for name, c in by_metric.items():
            low, high = c["ci95"]
            verdict = (
                "no difference" if c["no_difference"] else ("A higher" if c["difference"] > 0 else "B higher")
            )
            rows.append(
                (task, name, str(c["items"]), f"{c['a']:.4f}", f"{c['b']:.4f}", f"{c['difference']:+.4f}",
                 f"[{low:+.4f}, {high:+.4f}]", verdict)
            )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"a": "", "b": "", "seed": 0, "json": "", "overwrite": False})


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    checks.require(not argv, "a", "unexpected positional arguments", argv)
    out = fs.resolve(config.json) if config.json else ""
    if out:
        checks.require(not fs.exists(out) or config.overwrite, "json", "exists; pass --overwrite", out)
    comparison = compare_results(
        results.read_items(fs.resolve(config.a), "a"),
        results.read_items(fs.resolve(config.b), "b"),
        config.seed,
    )
    checks.require(bool(comparison), "b", "shares no task with --a", config.b)
    print(table(comparison))
    if out:
        fs.write_text_atomic(out, json.dumps(comparison, indent=2) + "\n")


def run() -> None:
    """Console-script entry point."""
    cli.run(
        main,
        doc=__doc__,
        default_config=default_config,
        shortcuts=[
            cli.Shortcut("a", help="results folder (or items.jsonl) A"),
            cli.Shortcut("b", help="results folder (or items.jsonl) B"),
            cli.Shortcut("seed", help="bootstrap seed"),
            cli.Shortcut("json", help="also write the comparison here"),
            cli.Shortcut("overwrite", help="replace an existing --json file"),
        ],
        required=["a", "b"],
    )


if __name__ == "__main__":
    run()
