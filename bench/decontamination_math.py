"""Decontamination on clean worked solutions (false positives) and on pasted items (recall).

- False positives: GSM8K *train* (7,473 question + worked answer documents, none of them a
  test item) decontaminated against the default eval suite of configs/data/full.py (GSM8K
  test, MATH test, MBPP, MMLU test, ARC test, BBH, OpenBookQA test; HumanEval built in), read
  from ../shared/data/eval. Every flagged document is listed with the stretch it matched, so
  a reader can judge whether it is a real near-duplicate of a test item. Target <= 0.1%.
- Recall: ``--items_per_set`` items of every suite set pasted into real web pages that pass
  the default filters, verbatim and perturbed two ways (data_pipeline/decontamination/controls.py's
  perturbation, and heldout_data_quality.py's), plus the untouched pages as clean documents.
  Target >= 0.99 on every set.

Matching is the stage's own (``matching.load_index(...).find``, what the Beam DoFn
calls per document), without Beam around it. Writes the stage's contamination_report.md for
the GSM8K-train run to ``--report``.

    SHARED_DATA=../shared/data TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/decontamination_math.py
    ... --config.answer_window_chars=50   # answers matched like questions (the old behaviour)
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from configs.data import full
from data_pipeline.decontamination import controls, matching
from data_pipeline.decontamination import report as decontamination_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout_data_quality import DATA, filtered_pages, paste, perturb_heldout  # noqa: E402

_ITEMS = flags.DEFINE_integer("items_per_set", 100, "Items pasted per eval set and variant.")
_SEED = flags.DEFINE_integer("seed", 3, "Random seed (sampling, pasting, perturbing).")
_REPORT = flags.DEFINE_string("report", "", "Write the GSM8K-train contamination report here.")
_CONFIG = config_flags.DEFINE_config_dict("config", matching.default_config(), "Decontaminate config.")


def hits_of(index: matching.CharWindowIndex, doc: dict) -> list[dict]:
    """The stage's hit records for one document (one per matched item, as the DoFn emits)."""
    out, seen = [], set()
    for start, end, i, match in index.find(doc["text"]):
        item = index.items[i]
        if i not in seen:
            seen.add(i)
            context = matching.highlight(doc["text"], start, end)
            out.append(
                {
                    "id": doc["id"],
                    "source": doc["source"],
                    "eval_set": item.eval_set,
                    "eval_item_id": item.item_id,
                    "match": match,
                    "context": context,
                }
            )
    return out


def false_positives(index: matching.CharWindowIndex) -> list[dict]:
    rows = [json.loads(line) for line in open(os.path.join(DATA, "eval/gsm8k/train.jsonl"))]
    docs = [
        {"id": f"train:{k}", "source": "gsm8k_train", "text": f"{r['question']}\n{r['answer']}"}
        for k, r in enumerate(rows)
    ]
    hits = [h for doc in docs for h in hits_of(index, doc)]
    flagged = sorted({h["id"] for h in hits}, key=lambda d: int(d.split(":")[1]))
    print(
        f"GSM8K train: {len(flagged)}/{len(docs)} flagged ({len(flagged) / len(docs):.3%}; target <= 0.1%), "
        f"match lengths {dict(Counter(len(h['match']) for h in hits))}"
    )
    for h in sorted(hits, key=lambda h: int(h["id"].split(":")[1])):
        print(f"  {h['id']} ~ {h['eval_set']}:{h['eval_item_id']} {h['context']!r}")
    return hits


def recall(index: matching.CharWindowIndex, pages: list[dict], rng: random.Random) -> None:
    by_set: dict[str, list] = {}
    for item in index.items:
        by_set.setdefault(item.eval_set, []).append(item)
    variants = {
        "verbatim": lambda t: t,
        "perturbed_controls": lambda t: controls.perturb(t, rng),
        "perturbed_heldout": lambda t: perturb_heldout(t, rng),
    }
    found, total = Counter(), Counter()
    for name, pool in sorted(by_set.items()):
        for item in rng.sample(pool, min(_ITEMS.value, len(pool))):
            for variant, edit in variants.items():
                doc = {"id": "", "source": "", "text": paste(rng.choice(pages)["text"], edit(item.text), rng)}
                total[name, variant] += 1
                found[name, variant] += any(h["eval_set"] == name for h in hits_of(index, doc))
    for variant in variants:
        per = ", ".join(
            f"{name} {found[name, variant] / total[name, variant]:.3f}" for name in sorted(by_set)
        )
        hit, n = (
            sum(found[k] for k in found if k[1] == variant),
            sum(total[k] for k in total if k[1] == variant),
        )
        print(f"recall {variant}: {hit}/{n} = {hit / n:.4f} (target >= 0.99 every set): {per}")
    flagged = [p["id"] for p in pages if hits_of(index, {**p, "source": "web"})]
    print(f"clean web pages flagged: {len(flagged)}/{len(pages)} {flagged[:10]}")


def main(argv: list[str]) -> None:
    del argv
    if not os.path.isdir(DATA):
        sys.exit(f"skipped: {DATA} is absent (real sample data is needed for this measurement)")
    config = _CONFIG.value
    specs = {name: os.path.join(DATA, "eval", path) for name, path in full.EVAL_SUITE.items()}
    start = time.time()
    index = matching.load_index(config, specs)
    print(
        f"{len(index.items)} eval items ({', '.join(sorted({i.eval_set for i in index.items}))}); "
        f"window {config.window_chars}, answers {config.answer_window_chars}; index {time.time() - start:.0f}s"
    )
    hits = false_positives(index)
    if _REPORT.value:
        Path(_REPORT.value).write_text(decontamination_report.report(hits, {}))
    recall(index, filtered_pages(), random.Random(_SEED.value))
    print(f"total {time.time() - start:.0f}s")


if __name__ == "__main__":
    app.run(main)
