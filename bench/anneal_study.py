"""The anneal study of bench/RESULTS.md, end to end on CPU: data, two high-quality recipes, arms, report.

  python bench/anneal_study.py --work_dir /tmp/anneal_study [--seeds 0,1,2]

Needs the real eval sets and reference text in ../shared/data (or $SHARED_DATA; exits with
a reason if they are absent). Stages, each skipped when its output exists (so an interrupted study resumes):

1. probes/: the probe sets (test splits: GSM8K, MATH, MBPP ids 11-510, MMLU, English web
   pages from Common Crawl); reference/: the classifier's positives (GSM8K train items
   0-1499, MBPP train ids 601-974, Wikipedia articles from wikitext-2); candidate/: the
   candidate dataset of arm (c), GSM8K train items 1500-7472 (math word problems with
   worked answers): never the same items as the probes or each other.
2. the study corpus from ../shared/data files (`studies.study_corpus`: web pages, LaTeX
   mathematics, source code; the SHA-256 of every file read is in corpus/corpus.json and in
   the studies' plans); data_pipeline.prepare decontaminated against every probe set, once
   with the heuristic high-quality score (prep_heuristic) and once with the reference
   classifier (prep_reference, `data_pipeline.quality.classifier train`); the candidate prepared the
   same way as a math corpus (prep_candidate); the tokenizer; both preps packed with the
   demo mixture's six tasks (`mixtures.pack`), the reference one with the candidate as a
   seventh task (`--extra_task=gsm8k_train=prep_candidate/math`).
3. `python -m studies.anneal --config=configs/anneal/study.py:WORK_DIR`, timed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable

from common import fs
from common.checks import ConfigError
from data_pipeline import prepared
from studies import study_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
EVAL = os.path.join(SHARED, "eval")


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def build_probes_and_reference(out: str) -> None:
    """Probe sets (test splits) and the quality classifier's reference text (train splits)."""
    mbpp = list(fs.read_jsonl(os.path.join(EVAL, "mbpp", "mbpp.jsonl")))
    write_jsonl(f"{out}/probes/gsm8k_test.jsonl", fs.read_jsonl(os.path.join(EVAL, "gsm8k", "test.jsonl")))
    write_jsonl(f"{out}/probes/math_test.jsonl", fs.read_jsonl(os.path.join(EVAL, "math", "math_test.jsonl")))
    write_jsonl(f"{out}/probes/mbpp_test.jsonl", [r for r in mbpp if 11 <= r["task_id"] <= 510])
    mmlu = []
    test_dir = os.path.join(EVAL, "mmlu", "test")
    for name in sorted(os.listdir(test_dir)):  # 3 questions of every subject, interleaved
        with open(os.path.join(test_dir, name), newline="") as f:
            for k, row in enumerate(csv.DictReader(f)):
                if k < 3:
                    mmlu.append((k, name, {**row, "id": f"{name}:{k}"}))
    write_jsonl(f"{out}/probes/mmlu_test.jsonl", [r for _, _, r in sorted(mmlu, key=lambda t: t[:2])])
    web = fs.read_jsonl(
        os.path.join(
            SHARED, "web", "dolma-cc", "formats__gz__CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"
        )
    )
    write_jsonl(
        f"{out}/probes/web_pages.jsonl",
        [{"id": r["id"], "text": r["text"]} for r in web if _english_page(r["text"])][:150],
    )

    gsm8k_train = list(fs.read_jsonl(os.path.join(EVAL, "gsm8k", "train.jsonl")))
    reference = [{"text": f"{r['question']}\n{r['answer']}"} for r in gsm8k_train[:1500]]
    write_jsonl(
        f"{out}/candidate/gsm8k_train.jsonl",
        [
            {"id": f"gsm8k-train-{i}", "text": f"{r['question']}\n{r['answer']}"}
            for i, r in enumerate(gsm8k_train)
            if i >= 1500
        ],
    )
    reference += [{"text": f"{r['text']}\n{r['code']}"} for r in mbpp if r["task_id"] >= 601]
    articles = study_corpus.wikitext_articles(os.path.join(SHARED, "web", "wikitext-2", "valid.txt"))
    reference += [{"text": a} for a in articles[:400]]
    write_jsonl(f"{out}/reference/positive.jsonl", reference)


def _english_page(text: str) -> bool:
    """A Common Crawl page of 500-20,000 characters that reads as English prose."""
    words = text.lower().split()
    ascii_share = sum(c.isascii() for c in text) / max(len(text), 1)
    return (
        500 <= len(text) <= 20_000
        and ascii_share > 0.97
        and sum(w in ("the", "and", "of", "to") for w in words) / max(len(words), 1) > 0.05
    )


def subset_table(out: str) -> str:
    """Markdown: per recipe and domain, train documents and tokens, and the high-quality share."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=f"{out}/tokenizer/tokenizer.model")
    lines = [
        "| recipe | domain | docs (HQ) | tokens (HQ) | mean HQ doc | mean other doc |",
        "|---|---|---|---|---|---|",
    ]

    def train_lengths(dataset_dir: str) -> list[tuple[int, bool]]:
        """(tokens, high_quality) of every train document."""
        return [
            (len(sp.encode(ex["text"].decode())), bool(ex["high_quality"]))
            for ex in prepared.examples(dataset_dir, "train")
        ]

    for recipe in ("heuristic", "reference"):
        for domain in ("web", "math", "code"):
            lengths = train_lengths(f"{out}/prep_{recipe}/{domain}")
            hq = [n for n, high in lengths if high]
            other = [n for n, high in lengths if not high]
            lines.append(
                f"| {recipe} | {domain} | {len(hq) + len(other)} ({len(hq)}) | {sum(hq) + sum(other):,} "
                f"({sum(hq):,}) | {sum(hq) // max(len(hq), 1):,} | {sum(other) // max(len(other), 1):,} |"
            )
    sizes = [n for n, _ in train_lengths(f"{out}/prep_candidate/math")]
    lines.append(
        f"| candidate | gsm8k_train | {len(sizes)} | {sum(sizes):,} | | {sum(sizes) // len(sizes)} |"
    )
    return "\n".join(lines)


def stage(name: str, out: str, done: str, command: list[str], timings: dict) -> None:
    if os.path.exists(done):
        print(f"[{name}] done already ({done})")
        return
    print(f"[{name}] $ {' '.join(command)}", flush=True)
    start = time.perf_counter()
    with open(f"{out}/logs/{name}.log", "w") as log:
        code = subprocess.run(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"},
        ).returncode
    timings[name] = round(time.perf_counter() - start, 1)
    if code:
        sys.exit(f"[{name}] failed; see {out}/logs/{name}.log")
    print(f"[{name}] {timings[name]}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "runs", "anneal_study"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        help="one more flag for studies.anneal, repeatable: --extra=--config.anneal_steps=40",
    )
    parser.add_argument(
        "--data_only", action="store_true", help="stop after the data stages (bench/mixture_search_study.py)"
    )
    args = parser.parse_args()
    if not os.path.isdir(EVAL):
        sys.exit(f"skipped: {EVAL} is absent (the study needs the real eval sets)")
    out = os.path.abspath(args.work_dir)
    os.makedirs(f"{out}/logs", exist_ok=True)
    py = sys.executable
    timings: dict[str, float] = {}
    if not os.path.exists(f"{out}/reference/positive.jsonl"):
        build_probes_and_reference(out)
    evals = [
        f"--eval_set={n}={out}/probes/{f}"
        for n, f in (
            ("gsm8k", "gsm8k_test.jsonl"),
            ("math", "math_test.jsonl"),
            ("mbpp", "mbpp_test.jsonl"),
            ("mmlu", "mmlu_test.jsonl"),
            ("web", "web_pages.jsonl"),
        )
    ]
    inputs = [f"--input={d}={out}/corpus/{d}.jsonl" for d in ("web", "math", "code")]
    if not os.path.exists(f"{out}/corpus/{study_corpus.MANIFEST}"):
        start = time.perf_counter()
        try:
            counts = study_corpus.build(SHARED, f"{out}/corpus")
        except ConfigError as e:  # a declared shared-data file is absent
            sys.exit(f"skipped: {e}")
        timings["corpus"] = round(time.perf_counter() - start, 1)
        print(f"[corpus] {counts} from {SHARED}: {timings['corpus']}s", flush=True)
    stage(
        "prepare_heuristic",
        out,
        f"{out}/prep_heuristic/stats.json",
        [
            py,
            "-m",
            "data_pipeline.prepare",
            "--config=configs/data/demo.py",
            *inputs,
            *evals,
            f"--output={out}/prep_heuristic",
        ],
        timings,
    )
    stage(
        "tokenizer",
        out,
        f"{out}/tokenizer/tokenizer.model",
        [
            py,
            "-m",
            "tokenizer.train",
            "--config=configs/tokenizer/demo.py",
            f"--input={out}/prep_heuristic",
            f"--output={out}/tokenizer",
        ],
        timings,
    )
    stage(
        "quality_classifier",
        out,
        f"{out}/reference/quality.npz",
        [
            py,
            "-m",
            "data_pipeline.quality.classifier",
            "train",
            f"--positive={out}/reference/positive.jsonl",
            *[f"--negative={out}/corpus/{d}.jsonl" for d in ("web", "math", "code")],
            f"--output={out}/reference/quality.npz",
        ],
        timings,
    )
    stage(
        "prepare_reference",
        out,
        f"{out}/prep_reference/stats.json",
        [
            py,
            "-m",
            "data_pipeline.prepare",
            "--config=configs/data/demo.py",
            *inputs,
            *evals,
            f"--config.quality.model_path={out}/reference/quality.npz",
            f"--output={out}/prep_reference",
        ],
        timings,
    )
    stage(
        "prepare_candidate",
        out,
        f"{out}/prep_candidate/stats.json",
        [
            py,
            "-m",
            "data_pipeline.prepare",
            "--config=configs/data/demo.py",
            f"--input=math={out}/candidate/gsm8k_train.jsonl",
            *evals,
            f"--output={out}/prep_candidate",
        ],
        timings,
    )
    for recipe, extra in (
        ("heuristic", []),
        ("reference", [f"--extra_task=gsm8k_train={out}/prep_candidate/math"]),
    ):
        stage(
            f"pack_{recipe}",
            out,
            f"{out}/packed_{recipe}/manifest.json",
            [
                py,
                "-m",
                "mixtures.pack",
                "--config=configs/mixtures/demo_two_stage.py",
                f"--prep_dir={out}/prep_{recipe}",
                f"--tokenizer={out}/tokenizer/tokenizer.model",
                f"--output={out}/packed_{recipe}",
                *extra,
            ],
            timings,
        )
    if args.data_only:
        print(json.dumps(timings))
        return
    stage(
        "anneal",
        out,
        f"{out}/study/report.json",
        [
            py,
            "-m",
            "studies.anneal",
            f"--config=configs/anneal/study.py:{out}",
            f"--config.seeds=({args.seeds},)",
            *args.extra,
        ],
        timings,
    )
    print(json.dumps(timings))
    with open(f"{out}/study/report.md") as f:
        print(f.read())
    table = subset_table(out)
    print("Training documents and tokens (demo tokenizer) of each prepared domain:\n\n" + table)
    with open(f"{out}/study/subsets.md", "w") as f:
        f.write(table + "\n")
    path = f"{out}/study/stage_timings.json"
    if os.path.exists(path):  # keep the timings of stages an earlier invocation ran
        with open(path) as f:
            timings = {**json.load(f), **timings}
    with open(path, "w") as f:
        json.dump(timings, f)


if __name__ == "__main__":
    main()
