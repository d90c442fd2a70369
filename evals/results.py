"""Per-item records (JSON lines) and the summary JSON beside them.

A record per scored item: `task`, `kind`, `doc_id` (0-based row of its source file),
`source` (that file's name), `loglikelihoods` and `is_greedy` (one per choice; gold-text
tasks have one), `gold` (index), per choice the continuation's `tokens`, `characters` (of
the choice text, lm-eval's acc_norm length) and `bytes` (UTF-8, with the target delimiter:
what bits per byte divides by), `context_tokens`, `truncated` (the request was cut on the
left to fit a row) and `contaminated` (the decontamination index found the item in the
run's training data; null when not checked). Generative records (evals.generative) add
`generation`, `extracted`, `passed`.

Both go through common/outputs.py's single-file rules: an existing one is refused unless
`overwrite`, never a file of a run, and each appears whole (written beside it and renamed),
so a failed run leaves the old one as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from common import fs, outputs
from common.checks import ConfigError
from evals.engine import Score
from evals.requests import DocRequests

ITEMS, SUMMARY = "items.jsonl", "summary.json"


def item_record(
    task: str,
    kind: str,
    request: DocRequests,
    scores: Sequence[Score],
    row_len: int,
    contaminated: bool | None,
) -> dict[str, Any]:
    doc = request.doc
    return {
        "task": task,
        "kind": kind,
        "doc_id": doc.doc_id,
        "source": doc.source,
        "loglikelihoods": [s.loglikelihood for s in scores],
        "is_greedy": [s.is_greedy for s in scores],
        "gold": doc.gold,
        "tokens": [len(r.continuation) for r in request.requests],
        "characters": [len(choice) for choice in doc.choices],
        "bytes": [len(c.encode("utf-8")) for c in request.continuations],
        "context_tokens": len(request.requests[0].context),
        "truncated": any(len(r.context) + len(r.continuation) > row_len + 1 for r in request.requests),
        "contaminated": contaminated,
    }


def check_writable(directory: str, overwrite: bool, field: str = "output") -> None:
    """Refuses (ConfigError naming `field`) results already in `directory` unless `overwrite`,
    and anything in their place that is not ours to replace (common/outputs.py: a folder, a
    file of a run); run before any work is done."""
    for name in (ITEMS, SUMMARY):
        outputs.check_file(fs.join(directory, name), field=f"config.{field}", overwrite=overwrite)


def write(
    directory: str, records: Iterable[dict[str, Any]], summary: dict[str, Any], overwrite: bool = True
) -> tuple[str, str]:
    """DIR/items.jsonl and DIR/summary.json, each appearing whole; returns their paths."""
    fs.makedirs(directory)
    items, summary_path = fs.join(directory, ITEMS), fs.join(directory, SUMMARY)
    texts = {
        items: "".join(json.dumps(r) + "\n" for r in records),
        summary_path: json.dumps(summary, indent=2) + "\n",
    }
    for path, text in texts.items():
        outputs.write_file(path, lambda tmp, text=text: fs.write_text(tmp, text), overwrite=overwrite)
    return items, summary_path


def read_items(path: str, field: str) -> list[dict[str, Any]]:
    """The records of an items.jsonl (or of DIR/items.jsonl); ConfigError naming `field` when absent."""
    if fs.isdir(path):
        path = fs.join(path, ITEMS)
    if not fs.isfile(path):
        raise ConfigError(f"config.{field}: no results file (items.jsonl) at {path}")
    return list(fs.read_jsonl(path))
