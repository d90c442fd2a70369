"""Decontamination recall and false positives on real web documents and real eval sets.

Eval items (GSM8K, MATH, HumanEval, MBPP, MMLU, ARC, BBH, OpenBookQA from ../shared/data)
are pasted into real web documents, verbatim and after case, whitespace and punctuation
changes; recall is the share of those documents flagged with the pasted item (or an item
with the same text). False positives: share of the untouched web documents flagged.

    .venv/bin/python bench/decontamination_quality.py [--items_per_set 300]
"""

from __future__ import annotations

import os
import random
import string
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import apache_beam as beam
from absl import app, flags
from apache_beam.options.pipeline_options import PipelineOptions
from ml_collections import config_flags

from data_pipeline.decontamination import decontaminate, matching
from data_pipeline.decontamination.eval_sets import load_eval_sets
from data_pipeline.dedup.shingles import normalized_words

sys.path.insert(0, str(Path(__file__).resolve().parent))
from near_dedup_quality import DATA, load_web_docs  # noqa: E402

EVAL = {
    "gsm8k": "eval/gsm8k/test.jsonl",
    "math": "eval/math/math_test.jsonl",
    "mbpp": "eval/mbpp/mbpp.jsonl",
    "mmlu": "eval/mmlu/test",
    "arc": "eval/arc/*/*-Test.jsonl",
    "bbh": "eval/bbh/data",
    "openbookqa": "eval/openbookqa/test.tsv",
}
PUNCT = ",.;:!?-"

_ITEMS = flags.DEFINE_integer("items_per_set", 300, "Items pasted per eval set and variant.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_CONFIG = config_flags.DEFINE_config_dict("config", matching.default_config(), "Decontaminate config.")


def perturb(text: str, rng: random.Random) -> str:
    """Random case per word, whitespace runs re-drawn, punctuation swapped/dropped/added at word edges."""
    out = []
    for token in text.split():
        token = rng.choice([str.lower, str.upper, str.title, str])(token)
        token = "".join(
            rng.choice(PUNCT) if c in string.punctuation and rng.random() < 0.3 else c for c in token
        )
        if token[-1] in string.punctuation and rng.random() < 0.5:
            token = token[:-1] or token
        elif rng.random() < 0.1:
            token += rng.choice(PUNCT)
        out.append(token)
    return "".join(t + rng.choice([" ", "  ", "\n", "\t", " \n "]) for t in out)


def paste(host: str, item: str, rng: random.Random) -> str:
    """Insert ``item`` at a random line or sentence boundary of ``host``."""
    cuts = [i + 1 for i, c in enumerate(host) if c in ".\n"] or [len(host)]
    at = rng.choice(cuts)
    return f"{host[:at]}\n{item}\n{host[at:]}"


def main(argv):
    del argv
    if not DATA.is_dir():
        sys.exit(f"skipped: {DATA} is absent (real sample data is needed for this measurement)")
    rng = random.Random(_SEED.value)
    config = _CONFIG.value
    config.builtin_eval_sets = ("humaneval",)
    specs = {name: str(DATA / path) for name, path in EVAL.items()}
    items = load_eval_sets(specs, config)
    by_text = defaultdict(set)
    for item in items:
        by_text[" ".join(normalized_words(item.text))].add((item.eval_set, item.item_id))
    short = sum(1 for i in items if len(matching.normalized_chars(i.text)[0]) < config.min_chars)
    print(
        f"{len(items)} eval items from {len(EVAL) + 1} sets; {short} shorter than {config.min_chars} letters/digits (never matchable)"
    )

    hosts = load_web_docs(min_words=50)
    docs, expected = [], {}
    per_set = defaultdict(list)
    for item in items:
        per_set[item.eval_set].append(item)
    for name, pool in sorted(per_set.items()):
        for k, item in enumerate(rng.sample(pool, min(_ITEMS.value, len(pool)))):
            for variant, text in (("verbatim", item.text), ("perturbed", perturb(item.text, rng))):
                doc_id = f"{variant}:{name}:{k}"
                docs.append(
                    {**rng.choice(hosts), "id": doc_id, "text": paste(rng.choice(hosts)["text"], text, rng)}
                )
                expected[doc_id] = by_text[" ".join(normalized_words(item.text))]
    docs += hosts
    print(f"{len(docs)} documents: {len(hosts)} clean web documents, {len(expected)} with a pasted item")

    options = PipelineOptions(
        ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    )
    out_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"decontamination_bench_{os.getpid()}"
    start = time.time()
    p = beam.Pipeline(options=options)
    _, _, hits = p | beam.Create(docs) | decontaminate.Decontaminate(config, specs)
    _ = (
        hits
        | beam.Map(lambda h: f"{h['id']}\t{h['eval_set']}\t{h['eval_item_id']}")
        | beam.io.WriteToText(str(out_dir / "hits"))
    )
    p.run().wait_until_finish()
    seconds = time.time() - start
    found = defaultdict(set)
    for f in out_dir.glob("hits*"):
        for line in f.open():
            doc_id, eval_set, item_id = line.rstrip("\n").split("\t")
            found[doc_id].add((eval_set, item_id))

    print(f"Decontaminate on {len(docs)} docs in {seconds:.1f}s (DirectRunner, 2 workers)")
    for variant, target in (("verbatim", 0.99), ("perturbed", 0.95)):
        total, hit, per = 0, 0, Counter()
        for doc_id, want in expected.items():
            if doc_id.startswith(variant):
                total += 1
                ok = bool(found[doc_id] & want)
                hit += ok
                per[doc_id.split(":")[1], ok] += 1
        sets = ", ".join(f"{s} {per[s, True] / (per[s, True] + per[s, False]):.3f}" for s in sorted(per_set))
        print(f"recall {variant:9s} {hit / total:.4f} ({hit}/{total}; target >= {target})  per set: {sets}")
    flagged = sorted(d["id"] for d in hosts if found[d["id"]])
    print(
        f"false positives {len(flagged) / len(hosts):.4%} ({len(flagged)}/{len(hosts)} clean docs; target <= 0.1%)"
    )
    for doc_id in flagged:
        print(f"  flagged clean doc {doc_id}: {sorted(found[doc_id])[:3]}")


if __name__ == "__main__":
    app.run(main)
