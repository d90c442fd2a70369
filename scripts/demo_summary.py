"""Writes DEMO/SUMMARY.md after `make demo`: each stage's wall time and key figures, and where
every output lies, read back from the files the stages wrote (never from memory of the run).

    python scripts/demo_summary.py runs/demo

Figures a stage only prints (perplexity, the downstream table, the anneal verdict) are quoted
from its log in DEMO/logs/, which keeps each stage's whole output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Stage -> (what it wrote, relative to DEMO), in the order scripts/demo.sh runs them.
OUTPUTS = {
    "corpus": "corpus/{web,math,code}.jsonl",
    "prepare": "prep/{web,math,code} (TFDS), prep/stats.json, prep/rejected/, prep/dead_letter/",
    "tokenizer": "tokenizer/tokenizer.model",
    "pack": "packed/ (ArrayRecord rows, manifest.json)",
    "mixture": "mixture.png, mixture.json",
    "evalset": "evals/docstrings.jsonl, evals/docstrings_task.json",
    "train": "train/ (checkpoints/, metrics.jsonl, loss.png, tensorboard/, config.json)",
    "anneal": "anneal/report.{md,json,png}",
    "evaluate": "logs/evaluate.log",
    "downstream": "downstream/ (items.jsonl, summary.json)",
    "export": "hf/ (transformers.AutoModelForCausalLM.from_pretrained, with torch installed)",
}


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _lines(path: Path, after: str | tuple[str, ...]) -> list[str]:
    """The lines of a stage's log from the first one starting with `after` (its table or verdict)."""
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(after)), None)
    return [] if start is None else lines[start:]


def prepare_figures(demo: Path) -> str:
    stats = _json(demo / "prep/stats.json")
    if not stats:
        return ""
    total = stats["total"]
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(total["rejected"].items()))
    ok = "ok" if stats["invariant"]["ok"] else "NOT OK"
    return (
        f"{total['input']} records in: {total['kept']} kept, {total['rejected_total']} rejected ({reasons}), "
        f"{total['dead_letter']} dead letter; accounting {ok}"
    )


def pack_figures(demo: Path) -> str:
    manifest = _json(demo / "packed/manifest.json")
    if not manifest:
        return ""
    train = manifest["splits"]["train"]
    tokens = sum(task["tokens_out"] for task in train.values())
    rows = sum(task["rows"] for task in train.values())
    return f"{tokens:,} tokens in {rows} rows of {manifest['seq_len']} (train split, {len(train)} tasks)"


def train_figures(demo: Path) -> str:
    path = demo / "train/metrics.jsonl"
    if not path.is_file():
        return ""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    last = next((r for r in reversed(records) if "loss" in r), None)
    evals = next((r["eval_loss"] for r in reversed(records) if "eval_loss" in r), None)
    if last is None:
        return ""
    text = f"step {last['step']}: train loss {last['loss']:.4f}"
    if evals:
        text += "; validation loss " + ", ".join(f"{k} {v:.4f}" for k, v in evals.items())
    return text


def summary(demo: Path) -> str:
    timings = {}
    for line in (
        (demo / "logs/timings.tsv").read_text().splitlines() if (demo / "logs/timings.tsv").is_file() else []
    ):
        name, seconds = line.split("\t")
        timings[name] = int(seconds)
    figures = {
        "prepare": prepare_figures(demo),
        "pack": pack_figures(demo),
        "train": train_figures(demo),
    }
    quoted = {
        "evaluate": _lines(demo / "logs/evaluate.log", str(demo / "corpus")),
        "downstream": _lines(demo / "logs/downstream.log", "task"),
        "anneal": _lines(demo / "anneal/report.md", ("Verdict", "## Verdict")),
    }
    out = [f"# Demo run: {demo}", "", f"Total {sum(timings.values())} s.", ""]
    out += ["| stage | wall time | figures | outputs |", "|---|---|---|---|"]
    for stage, where in OUTPUTS.items():
        if stage in timings:
            out.append(f"| {stage} | {timings[stage]} s | {figures.get(stage, '')} | `{where}` |")
    for stage, lines in quoted.items():
        if lines:
            out += ["", f"## {stage}", "", "```", *lines, "```"]
    out += ["", f"Each stage's full output: `{demo}/logs/<stage>.log`."]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> None:
    demo = Path(argv[1])
    text = summary(demo)
    (demo / "SUMMARY.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main(sys.argv)
