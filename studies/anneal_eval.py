"""The held-out sets every anneal arm is scored on, and the scoring.

One JSON-lines file, OUTPUT_DIR/heldout.jsonl, whose `source` says which set a document
belongs to:

- `val_<domain>`: the first `probes.validation_docs` documents of PREP/<domain>'s
  `validation` split (held out by data_pipeline.prepare, never trained on);
- `<probe>`: the first `probes.max_items` items of each eval set in `probes.sets`, as
  question + reference answer text: the exact text data_pipeline.prepare decontaminates
  against (`data_pipeline.decontamination.eval_sets`), so a lower loss means the model predicts the
  benchmark's answers better, scored without generation (loss-based probes).

Decontamination is what keeps the probes out of training; `contamination()` checks it
rather than assuming it: it looks every probe item up in the training split with the
decontamination stage's own index (`data_pipeline.decontamination.decontaminate.CharWindowIndex`) and reports
the items found (expected: none).
Each checkpoint is scored with `pretrain.tools.evaluate.evaluate` (the trainer's tokenization and
windows), so the numbers are the ones `python -m pretrain.tools.evaluate` prints.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from common import fs
from data_pipeline import prepared
from data_pipeline.decontamination import decontaminate, eval_sets
from pretrain.metrics import read_metrics
from pretrain.tools.evaluate import evaluate

VALIDATION_PREFIX = "val_"


def probe_items(probes: ml_collections.ConfigDict) -> list[Any]:
    """The first `max_items` EvalItems of every probe set (question + reference answer)."""
    text_config = decontaminate.default_config()
    text_config.builtin_eval_sets = ()
    items = []
    for name, spec in probes.sets.items():
        path = spec if spec == eval_sets.BUILTIN else fs.resolve(spec)
        found = eval_sets.load_eval_sets({name: path}, text_config)
        items.extend(found[: probes.max_items] if probes.max_items else found)
    return items


def validation_documents(prep_dir: str, domain: str, limit: int) -> list[str]:
    """The first `limit` texts (0: all) of PREP/<domain>'s validation split."""
    return list(prepared.texts(prepared.domain_dir(prep_dir, domain), "validation", limit))


def contamination(items: list[Any], prep_dir: str) -> dict[str, int]:
    """{probe set: items sharing a decontamination window with PREP's train split}."""
    cfg = decontaminate.default_config()
    index = decontaminate.build_index(items, cfg)
    found: set[int] = set()
    if index.keys:
        for domain in prepared.domains(prep_dir):
            for text in prepared.texts(prepared.domain_dir(prep_dir, domain), "train"):
                found.update(i for _, _, i, _ in index.find(text))
    counts = {item.eval_set: 0 for item in items}
    for i in found:
        counts[items[i].eval_set] += 1
    return counts


def build_heldout(config: ml_collections.ConfigDict, path: str) -> dict[str, Any]:
    """Writes the held-out file; returns its composition and the contamination check."""
    prep_dir = config.prep_dir
    docs = []
    for domain in prepared.domains(prep_dir):
        texts = validation_documents(prep_dir, domain, config.probes.validation_docs)
        docs += [
            {"text": t, "source": VALIDATION_PREFIX + domain, "id": f"{domain}-{i}"}
            for i, t in enumerate(texts)
        ]
    items = probe_items(config.probes)
    docs += [{"text": item.text, "source": item.eval_set, "id": item.item_id} for item in items]
    # Slices of one mixture search may build it at once: each reader sees a whole file.
    fs.write_text_atomic(path, "".join(json.dumps(d) + "\n" for d in docs))
    counts: dict[str, int] = {}
    for d in docs:
        counts[d["source"]] = counts.get(d["source"], 0) + 1
    return {"path": path, "documents": counts, "contaminated_items": contamination(items, prep_dir)}


def scores_of(result: dict[str, Any], groups: dict[str, list[str]]) -> dict[str, float]:
    """{set or group: mean loss per token}; groups pool their sets' tokens."""
    per = result.get("per_source", {})
    out = {name: r["loss"] for name, r in per.items()}
    for group, members in groups.items():
        parts = [per[m] for m in members if m in per]
        tokens = sum(p["tokens"] for p in parts)
        if tokens:
            out[group] = float(sum(p["loss"] * p["tokens"] for p in parts) / tokens)
    return out


def score_study(config: ml_collections.ConfigDict, runs: dict[str, Any]) -> dict[str, Any]:
    """Scores every seed's prefix and arms on the held-out file; {seed: {run: {metric: loss}}}."""
    heldout = build_heldout(config, fs.join(config.output_dir, "heldout.jsonl"))
    groups = {k: list(v) for k, v in config.probes.groups.items()}
    table: dict[str, dict[str, dict[str, float]]] = {}
    for seed, entry in runs["seeds"].items():
        runs_of_seed = {"prefix": entry["prefix"], **entry["arms"]}
        table[seed] = {}
        for name, run in runs_of_seed.items():
            logging.info("seed %s: scoring %s (step %d)", seed, name, run["step"])
            result = evaluate(run["workdir"], heldout["path"], step=run["step"])
            table[seed][name] = scores_of(result, groups)
    return {"heldout": heldout, "losses": table}


def curves(workdir: str) -> dict[str, list[tuple[int, float]]]:
    """{domain: [(step, validation loss)]} from a run's metrics.jsonl (none for a workdir
    that was not trained here, e.g. a Hugging Face import)."""
    out: dict[str, list[tuple[int, float]]] = {}
    if not fs.exists(fs.join(workdir, "metrics.jsonl")):
        return out
    for record in read_metrics(workdir):
        for domain, loss in record.get("eval_loss", {}).items():
            if np.isfinite(loss):
                out.setdefault(domain, []).append((int(record["step"]), float(loss)))
    return out
