"""Throughput of the data-prep job on real documents, side by side with datatrove.

  python bench/data_pipeline_throughput.py [--repeat 4] [--workers 2] [--results /tmp/figures.md]

Corpus: ../shared/data web (dolma CC, C4, trafilatura), math (.tex of two books), code
(10 repositories), each web document copied ``--repeat`` times under new ids so fixed
start-up costs do not dominate. Measured in one run, on the same documents and cores:

1. per stage, in one process: documents/s and MB/s of each per-document step;
2. ours, "same work" as datatrove: web only, Gopher quality + C4 + MinHash near-dedup,
   Beam DirectRunner multi-processing with ``--workers`` workers, TFDS output;
3. datatrove: the same web documents through JsonlReader -> GopherQuality -> C4 ->
   JsonlWriter, then its four MinHash stages (signature, buckets, clusters, filter),
   LocalPipelineExecutor with ``--workers`` tasks and workers;
4. ours, the whole job (all filters, PII, exact + near dedup, decontamination against
   HumanEval, quality score) over web + math + code.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SHARDS = 8

_DATA_DIR = flags.DEFINE_string("data_dir", str(DATA), "The shared sample data (README there).")
_REPEAT = flags.DEFINE_integer("repeat", 4, "Copies of every web document (new ids).")
_WORKERS = flags.DEFINE_integer("workers", 2, "Worker processes for both systems.")
_RESULTS = flags.DEFINE_string("results", "", "Markdown file to write the figures to.")
_SKIP_DATATROVE = flags.DEFINE_bool("skip_datatrove", False, "Measure only this project.")


def _jsonl_rows(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def build_corpus(data: Path, work: Path, repeat: int) -> dict[str, list[dict]]:
    """Writes work/<domain>/part-*.jsonl; returns the records per domain."""
    web_files = sorted((data / "web" / "dolma-cc").glob("*.json*.gz")) + sorted((data / "web" / "olmo-c4").glob("*.json*.gz"))
    web_files += [data / "web" / "trafilatura" / "trafilatura_tests_extracted.jsonl"]
    web = []
    for path in web_files:
        for i, row in enumerate(_jsonl_rows(path)):
            if isinstance(row.get("text"), str):
                web.extend({"id": f"{path.name}:{i}#{r}", "text": row["text"]} for r in range(repeat))
    math = [
        {"id": str(p.relative_to(data)), "text": p.read_text(encoding="utf-8", errors="replace")}
        for p in sorted((data / "math").glob("*/*.tex"))
    ]
    code = [
        {"id": f"{row['repo']}/{row['path']}", "text": row["text"], "language": row["language"].lower()}
        for row in _jsonl_rows(data / "code" / "code_sample.jsonl")
    ]
    corpus = {"web": web, "math": math, "code": code}
    for domain, rows in corpus.items():
        (work / domain).mkdir(parents=True)
        for shard in range(SHARDS):
            with open(work / domain / f"part-{shard:02d}.jsonl", "w", encoding="utf-8") as f:
                for row in rows[shard::SHARDS]:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return corpus


def _mb(rows: list[dict]) -> float:
    return sum(len(r["text"].encode("utf-8")) for r in rows) / 1e6


def per_stage(corpus: dict[str, list[dict]]) -> list[tuple[str, int, float, float]]:
    """(stage, documents, seconds, MB) of each per-document step, one process."""
    from configs.data import base
    from data_pipeline import dedup, heuristic_quality, normalize, pii, shingles, tfds_output
    from data_pipeline.filters.chain import build_chain, run_chain
    from data_pipeline.near_dedup import MinHasher

    config = base.get_config()
    docs = [
        {"id": r["id"], "text": r["text"], "source": d, "domain": d, "language": r.get("language", "")}
        for d, rows in corpus.items() for r in rows
    ]  # fmt: skip
    lines = [json.dumps(r) for r in docs]
    features = tfds_output.features()
    hasher = MinHasher(config.near_dedup.num_perm, 1)
    chains = {d: build_chain(d, config.filters) for d in corpus}
    redactor = pii.Redactor()
    stages = {
        "parse JSON": lambda i: json.loads(lines[i]),
        "normalize": lambda i: normalize.normalize_text(docs[i]["text"]),
        "filters (domain chain)": lambda i: run_chain(chains[docs[i]["domain"]], docs[i]),
        "PII redaction": lambda i: redactor(docs[i]),
        "exact-dedup hash": lambda i: dedup.text_hash(docs[i]["text"], "case_whitespace"),
        "MinHash signature": lambda i: hasher.signature(shingles.shingle_set(docs[i]["text"], 5)),
        "quality score (heuristic)": lambda i: heuristic_quality.heuristic_score(docs[i]),
        "TFDS serialize": lambda i: features.serialize_example(features.encode_example(tfds_output.example_of(docs[i]))),
    }
    results = []
    mb = _mb(docs)
    for name, fn in stages.items():
        start = time.perf_counter()
        for i in range(len(docs)):
            fn(i)
        results.append((name, len(docs), time.perf_counter() - start, mb))
    return results


def run_ours(work: Path, domains: tuple[str, ...], same_work: bool, workers: int) -> float:
    """Wall seconds of the Beam job (a subprocess, as a user runs it)."""
    out = work / ("out_same" if same_work else "out_full")
    args = [sys.executable, "-m", "data_pipeline.prepare", "--config=configs/data/base.py", f"--output_dir={out}",
            f"--direct_num_workers={workers}"]  # fmt: skip
    args += [f"--input={d}={work / d / 'part-*.jsonl'}" for d in domains]
    if same_work:
        for name in ("language", "gopher_repetition", "fineweb"):
            args.append(f"--config.filters.web.{name}.enabled=False")
        args += ["--config.pii.enabled=False", "--config.dedup.enabled=False", "--config.decontamination.enabled=False"]
    start = time.perf_counter()
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"data_pipeline.prepare failed:\n{result.stderr[-5000:]}")
    print(result.stdout[result.stdout.find("source "):])
    return elapsed


def run_datatrove(work: Path, workers: int) -> dict[str, float]:
    """Wall seconds per datatrove stage on the web shards."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    dt = work / "datatrove"
    minhash = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, hash_config=HashConfig(hash_fc="sha1"))
    stages = {
        "read + Gopher + C4 + write": [
            JsonlReader(str(work / "web"), glob_pattern="*.jsonl"),
            GopherQualityFilter(),
            C4QualityFilter(),
            JsonlWriter(str(dt / "filtered")),
        ],
        "MinHash signatures": [JsonlReader(str(dt / "filtered")), MinhashDedupSignature(str(dt / "sigs"), config=minhash)],
        "MinHash buckets": [MinhashDedupBuckets(str(dt / "sigs"), str(dt / "buckets"), config=minhash)],
        "MinHash clusters": [MinhashDedupCluster(str(dt / "buckets"), str(dt / "remove"), config=minhash)],
        "MinHash filter + write": [
            JsonlReader(str(dt / "filtered")),
            MinhashDedupFilter(str(dt / "remove")),
            JsonlWriter(str(dt / "deduped")),
        ],
    }
    times = {}
    for name, pipeline in stages.items():
        tasks = {"MinHash buckets": minhash.num_buckets, "MinHash clusters": 1}.get(name, workers)
        executor = LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(workers, tasks),
                                         logging_dir=str(dt / "logs" / name.replace(" ", "_")))  # fmt: skip
        start = time.perf_counter()
        executor.run()
        times[name] = time.perf_counter() - start
    return times


def _table(rows: list[tuple], header: tuple) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    data = Path(_DATA_DIR.value)
    if not (data / "web").is_dir():
        sys.exit(f"no shared data at {data}: this benchmark needs ../shared/data (see its README)")
    work = Path(tempfile.mkdtemp(prefix="dp_bench_"))
    try:
        corpus = build_corpus(data, work, _REPEAT.value)
        web_docs, web_mb = len(corpus["web"]), _mb(corpus["web"])
        all_docs = sum(len(v) for v in corpus.values())
        all_mb = sum(_mb(v) for v in corpus.values())
        print(f"corpus: web {web_docs} docs ({web_mb:.1f} MB, {_REPEAT.value} copies each), "
              f"math {len(corpus['math'])}, code {len(corpus['code'])}; {all_docs} docs, {all_mb:.1f} MB")  # fmt: skip
        stage_rows = [(n, d, f"{d / s:,.0f}", f"{mb / s:.1f}") for n, d, s, mb in per_stage(corpus)]
        print(_table(stage_rows, ("stage (1 process)", "docs", "docs/s", "MB/s")))
        ours_same = run_ours(work, ("web",), True, _WORKERS.value)
        ours_full = run_ours(work, ("web", "math", "code"), False, _WORKERS.value)
        rows = [
            ("ours: Gopher + C4 + MinHash dedup, web", web_docs, f"{ours_same:.1f}", f"{web_docs / ours_same:,.0f}", f"{web_mb / ours_same:.2f}"),
            ("ours: whole job, web + math + code", all_docs, f"{ours_full:.1f}", f"{all_docs / ours_full:,.0f}", f"{all_mb / ours_full:.2f}"),
        ]  # fmt: skip
        if not _SKIP_DATATROVE.value:
            dt = run_datatrove(work, _WORKERS.value)
            total = sum(dt.values())
            rows += [(f"datatrove: {name}", web_docs, f"{s:.1f}", "", "") for name, s in dt.items()]
            rows.append(("datatrove: Gopher + C4 + MinHash dedup, web", web_docs, f"{total:.1f}", f"{web_docs / total:,.0f}", f"{web_mb / total:.2f}"))
            rows.append(("ours / datatrove documents/s (same work)", "", "", f"{total / ours_same:.2f}x", ""))
        end_to_end = _table(rows, ("run", "docs", "wall s", "docs/s", "MB/s"))
        print(end_to_end)
        if _RESULTS.value:
            cpus = os.cpu_count()
            Path(_RESULTS.value).write_text(
                "# Data pipeline throughput\n\n"
                f"`python bench/data_pipeline_throughput.py --repeat {_REPEAT.value} --workers {_WORKERS.value}` "
                f"on {cpus} CPU cores (shared machine). Corpus: {all_docs} documents, {all_mb:.1f} MB "
                f"(web {web_docs} = real documents x {_REPEAT.value} copies).\n\n"
                "## Per stage, one process\n\n" + _table(stage_rows, ("stage", "docs", "docs/s", "MB/s")) + "\n\n"
                "## End to end (wall clock, including start-up)\n\n" + end_to_end + "\n"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
