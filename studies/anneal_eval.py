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
decontamination stage's own index (`evals.contamination.found_in_training`) and reports
the items found (expected: none).
Each checkpoint is scored with `pretrain.tools.evaluate.evaluate` (the trainer's tokenization and
windows), so the numbers are the ones `python -m pretrain.tools.evaluate` prints.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from common import fs
from data_pipeline import prepared
from data_pipeline.decontamination import eval_sets, matching
from evals.contamination import found_in_training
from pretrain.metrics import read_metrics
from pretrain.tools.evaluate import evaluate
from studies import downstream, inputs

VALIDATION_PREFIX = "val_"


def probe_items(probes: ml_collections.ConfigDict) -> list[Any]:
    """The first `max_items` EvalItems of every probe set (question + reference answer)."""
    text_config = matching.default_config()
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
    counts = {item.eval_set: 0 for item in items}
    for i in found_in_training(items, prep_dir):
        counts[items[i].eval_set] += 1
    return counts


def heldout_documents(config: ml_collections.ConfigDict) -> list[dict[str, str]]:
    """The held-out file's documents ({text, source, id}): validation splits, then probe items."""
    prep_dir = config.prep_dir
    docs = []
    for domain in prepared.domains(prep_dir):
        texts = validation_documents(prep_dir, domain, config.probes.validation_docs)
        docs += [
            {"text": t, "source": VALIDATION_PREFIX + domain, "id": f"{domain}-{i}"}
            for i, t in enumerate(texts)
        ]
    return docs + [
        {"text": item.text, "source": item.eval_set, "id": item.item_id}
        for item in probe_items(config.probes)
    ]


def build_heldout(config: ml_collections.ConfigDict, path: str) -> dict[str, Any]:
    """Writes the held-out file; returns its composition and the contamination check."""
    docs = heldout_documents(config)
    # Slices of one mixture search may build it at once: each reader sees a whole file.
    fs.write_text_atomic(path, "".join(json.dumps(d) + "\n" for d in docs))
    counts: dict[str, int] = {}
    for d in docs:
        counts[d["source"]] = counts.get(d["source"], 0) + 1
    items = probe_items(config.probes)
    return {"path": path, "documents": counts, "contaminated_items": contamination(items, config.prep_dir)}


def study_inputs(config: ml_collections.ConfigDict) -> dict[str, str]:
    """The content hash of every input of the study (`studies.inputs`), downstream items included."""
    extra = (
        {"downstream": downstream.items_sha256(downstream.load(config))} if downstream.enabled(config) else {}
    )
    return inputs.input_hashes(config, heldout_documents(config), extra)


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


Scorer = Callable[[str, int], dict[str, Any]]  # (workdir, step) -> {"metrics", "items"}


def item_scorer(config: ml_collections.ConfigDict) -> Scorer:
    """Scores a checkpoint per item: every held-out document and probe item of
    OUTPUT_DIR/heldout.jsonl (built once, by the first caller; `num` its loss sum, `den` its
    tokens) and every downstream task's items (`studies.downstream`; `num`/`den` as evals
    pools them). Returns {"metrics": {name: value}, "items": {set: {"ids", "num", "den"}}}."""
    groups = {k: list(v) for k, v in config.probes.groups.items()}
    path = fs.join(config.output_dir, "heldout.jsonl")
    tasks = downstream.load(config) if downstream.enabled(config) else []

    def score(workdir: str, step: int) -> dict[str, Any]:
        if not fs.exists(fs.join(config.output_dir, "heldout.json")):
            held = build_heldout(config, path)
            fs.write_text_atomic(fs.join(config.output_dir, "heldout.json"), json.dumps(held, indent=2))
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "dump.jsonl")
            result = evaluate(workdir, path, step=step, dump=dump)
            items: dict[str, dict[str, list]] = {}
            for record in fs.read_jsonl(dump):
                entry = items.setdefault(record["source"], {"ids": [], "num": [], "den": []})
                entry["ids"].append(record["id"])
                entry["num"].append(float(np.sum(record["losses"], dtype=np.float64)))
                entry["den"].append(len(record["losses"]))
        metrics = scores_of(result, groups)
        if tasks:
            extra = downstream.per_item(downstream.score(workdir, step, tasks))
            items.update(extra)
            metrics.update({m: float(np.sum(v["num"]) / np.sum(v["den"])) for m, v in extra.items()})
        return {"metrics": metrics, "items": items}

    return score


def item_arrays(record: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """A scored record's items as `studies.noise` Items."""
    return {
        s: {"num": np.asarray(v["num"], np.float64), "den": np.asarray(v["den"], np.float64)}
        for s, v in record["items"].items()
    }


def score_study(
    config: ml_collections.ConfigDict, runs: dict[str, Any], scorer: Scorer | None = None
) -> dict[str, Any]:
    """Scores every seed's prefix and arms per item; {"heldout", "losses": {seed: {run: {metric:
    value}}}, "items": {seed: {run: items}}}."""
    score = scorer or item_scorer(config)
    table: dict[str, dict[str, dict[str, float]]] = {}
    items: dict[str, dict[str, Any]] = {}
    for seed, entry in runs["seeds"].items():
        runs_of_seed = {"prefix": entry["prefix"], **entry["arms"]}
        table[seed], items[seed] = {}, {}
        for name, run in runs_of_seed.items():
            logging.info("seed %s: scoring %s (step %d)", seed, name, run["step"])
            record = score(run["workdir"], run["step"])
            table[seed][name], items[seed][name] = record["metrics"], record["items"]
    heldout = json.loads(fs.read_text(fs.join(config.output_dir, "heldout.json")))
    return {"heldout": heldout, "losses": table, "items": items}


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
