"""Throughput of the data-prep job on real documents, side by side with datatrove.

  python bench/data_pipeline_throughput.py [--repeat 4] [--workers 2] [--rounds 3] [--per_stage]

Corpus: ../shared/data web (dolma CC, C4, trafilatura), math (.tex of two books), code
(10 repositories), each web document copied ``--repeat`` times under new ids so fixed
start-up costs do not dominate. Measured in one run, on the same documents and cores, in
``--rounds`` alternating rounds (the machine is shared: each round runs both systems, the
order flips every round, and the spread of the per-round ratio is reported):

- ours, the whole job (all filters, language id, PII, exact + near dedup, decontamination
  against HumanEval, quality score, TFDS output) over web + math + code, Beam DirectRunner
  multi-processing with ``--workers`` workers, run as a user runs it (a subprocess);
- datatrove 0.10.1 over the same files: JsonlReader -> GopherQuality -> C4 -> JsonlWriter,
  then its four MinHash stages (signature, buckets, clusters, filter + write),
  LocalPipelineExecutor with ``--workers`` tasks and workers.

``--per_stage`` adds documents/s of each per-document step in one process.
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
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds of both systems.")
_PER_STAGE = flags.DEFINE_bool("per_stage", False, "Also time each per-document step in one process.")


def _jsonl_rows(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def build_corpus(data: Path, work: Path, repeat: int) -> dict[str, list[dict]]:
    """Writes work/<domain>/part-*.jsonl; returns the records per domain."""
    web_files = sorted((data / "web" / "dolma-cc").glob("*.json*.gz")) + sorted(
        (data / "web" / "olmo-c4").glob("*.json*.gz")
    )
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
    from data_pipeline import prepared
    from data_pipeline.clean import normalize, pii
    from data_pipeline.dedup import exact, shingles
    from data_pipeline.dedup.near import MinHasher
    from data_pipeline.filters.chain import build_chain, run_chain
    from data_pipeline.quality import heuristic
    from data_pipeline.writers import tfds_output

    config = base.get_config()
    docs = [
        {"id": r["id"], "text": r["text"], "source": d, "domain": d, "language": r.get("language", "")}
        for d, rows in corpus.items() for r in rows
    ]  # fmt: skip
    lines = [json.dumps(r) for r in docs]
    features = prepared.features()
    hasher = MinHasher(config.near_dedup.num_perm, 1)
    chains = {d: build_chain(d, config.filters) for d in corpus}
    redactor = pii.Redactor()
    stages = {
        "parse JSON": lambda i: json.loads(lines[i]),
        "normalize": lambda i: normalize.normalize_text(docs[i]["text"]),
        "filters (domain chain)": lambda i: run_chain(chains[docs[i]["domain"]], docs[i]),
        "PII redaction": lambda i: redactor(docs[i]),
        "exact-dedup hash": lambda i: exact.text_hash(docs[i]["text"], "case_whitespace"),
        "MinHash signature": lambda i: hasher.signature(shingles.shingle_set(docs[i]["text"], 5)),
        "quality score (heuristic)": lambda i: heuristic.heuristic_score(docs[i]),
        "TFDS serialize": lambda i: features.serialize_example(
            features.encode_example(tfds_output.example_of(docs[i]))
        ),
    }
    results = []
    mb = _mb(docs)
    for name, fn in stages.items():
        start = time.perf_counter()
        for i in range(len(docs)):
            fn(i)
        results.append((name, len(docs), time.perf_counter() - start, mb))
    return results


def run_ours(work: Path, out: Path, workers: int) -> float:
    """Wall seconds of the whole Beam job (a subprocess, as a user runs it)."""
    args = [
        sys.executable,
        "-m",
        "data_pipeline.prepare",
        f"--output_dir={out}",
        f"--direct_num_workers={workers}",
    ]
    args += [f"--input={d}={work / d / 'part-*.jsonl'}" for d in ("web", "math", "code")]
    start = time.perf_counter()
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"data_pipeline.prepare failed:\n{result.stderr[-5000:]}")
    print(result.stdout[result.stdout.find("source ") :])
    return elapsed


def run_datatrove(work: Path, dt: Path, workers: int) -> dict[str, float]:
    """Wall seconds per datatrove stage on the same shards (web + math + code)."""
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

    minhash = MinhashConfig(
        n_grams=5, num_buckets=14, hashes_per_bucket=8, hash_config=HashConfig(hash_fc="sha1")
    )
    stages = {
        "read + Gopher + C4 + write": [
            JsonlReader(str(work), glob_pattern="*/part-*.jsonl"),
            GopherQualityFilter(),
            C4QualityFilter(),
            JsonlWriter(str(dt / "filtered")),
        ],
        "MinHash signatures": [
            JsonlReader(str(dt / "filtered")),
            MinhashDedupSignature(str(dt / "sigs"), config=minhash),
        ],
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
        all_docs = sum(len(v) for v in corpus.values())
        all_mb = sum(_mb(v) for v in corpus.values())
        print(
            f"corpus: web {len(corpus['web'])} docs ({_REPEAT.value} copies each), math {len(corpus['math'])}, "
            f"code {len(corpus['code'])}; {all_docs} docs, {all_mb:.1f} MB",
            flush=True,
        )
        if _PER_STAGE.value:
            stage_rows = [(n, d, f"{d / s:,.0f}", f"{mb / s:.1f}") for n, d, s, mb in per_stage(corpus)]
            print(_table(stage_rows, ("stage (1 process)", "docs", "docs/s", "MB/s")))
        rows, ratios = [], []
        for r in range(_ROUNDS.value):
            times = {}
            for system in ("ours", "datatrove") if r % 2 == 0 else ("datatrove", "ours"):
                if system == "ours":
                    times[system] = run_ours(work, work / f"out_{r}", _WORKERS.value)
                else:
                    times[system] = sum(run_datatrove(work, work / f"datatrove_{r}", _WORKERS.value).values())
                print(f"round {r}: {system} {times[system]:.1f}s", flush=True)
            ratio = times["datatrove"] / times["ours"]
            ratios.append(ratio)
            rows.append(
                (
                    r,
                    " then ".join(times),
                    f"{times['ours']:.1f}",
                    f"{all_docs / times['ours']:,.0f}",
                    f"{times['datatrove']:.1f}",
                    f"{all_docs / times['datatrove']:,.0f}",
                    f"{ratio:.2f}x",
                )
            )
        print(
            _table(
                rows,
                (
                    "round",
                    "order",
                    "ours s",
                    "ours docs/s",
                    "datatrove s",
                    "datatrove docs/s",
                    "ours/datatrove docs/s",
                ),
            )
        )
        print(
            f"ratio over {len(ratios)} rounds: min {min(ratios):.2f}x, median {sorted(ratios)[len(ratios) // 2]:.2f}x, "
            f"max {max(ratios):.2f}x ({all_docs} docs, {all_mb:.1f} MB, {_WORKERS.value} workers, {os.cpu_count()} cores)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
