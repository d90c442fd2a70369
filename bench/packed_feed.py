"""The packed data feed on real documents (../shared/data): packing job vs SeqIO, per-host reading.

    .venv/bin/python bench/packed_feed.py --work_dir=/tmp/packed_bench [--max_docs=600] [--rounds=2]

1. Builds PREP_DIR (TFDS layout of docs/DESIGN.md) from the shared sample (web: dolma-cc and
   C4 jsonl.gz; math: the LaTeX of two books; code: code_sample.jsonl; `high_quality` = a
   fixed third by id hash) and trains a 16k SentencePiece model with the Gemma ids on it.
2. Packing, alternating rounds on the same documents (tasks web, math, code; train split):
   a) `mixtures.pack` (Beam DirectRunner, in-process, one worker) at seq_len 8192;
   b) SeqIO's own path: its Beam caching transforms (`seqio.beam_utils.PreprocessTask` +
      `WriteExampleTfRecord`, what `seqio.scripts.cache_tasks_main` runs), then reading the
      cache and `seqio.utils.trim_and_pack_dataset` at 8192.
   Tokens/s wall and per CPU-second of this process (one core's worth of work), fill, tokens dropped.
3. Reading (`mixtures.stream.MixtureStream`) the rows of configs/mixtures/gemma_anneal.py:
   a) P = 1, 2, 4, 64 simulated processes, global batch 64: the union of the slices equals
      the P=1 batch, and the bytes each process reads;
   b) one process's throughput at seq_len 8192 (global batch 512 on 32 processes: 16 rows),
      one read thread, tokens/s wall and per CPU-second;
   c) realized token shares per 50-step window across the anneal switch (global batch 64);
   d) exact resume: a child process is SIGKILLed mid-epoch and a new one resumes from its
      last saved state; its batches are compared (SHA-256) with an uninterrupted run;
   e) the cost of the first batch after resuming at step 100,000 (batch 512).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from common.domains import DOMAINS  # noqa: E402

_SHARED = flags.DEFINE_string("shared_data", str(REPO.parent / "shared" / "data"), "The shared sample data.")
_WORK = flags.DEFINE_string(
    "work_dir", None, "Keeps PREP, the tokenizer and the packed rows between runs (default: a temp dir)."
)
_MAX_DOCS = flags.DEFINE_integer("max_docs", 0, "Documents per domain (0: all).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds of the packing comparison (0 skips it).")
_STEPS = flags.DEFINE_integer("steps", 120, "Steps for the single-process throughput.")
_CHILD = flags.DEFINE_string("child", None, "Internal: run the resume child writing to this file.")
_RESUME = flags.DEFINE_string("resume_state", None, "Internal: the child resumes from this JSON state.")

SEQ_LEN = 8192


# ----------------------------------------------------------------------------- data


def _record(domain: str, doc_id: str, text: str) -> dict:
    high = int(hashlib.sha1(doc_id.encode()).hexdigest(), 16) % 3 == 0
    return dict(
        text=text,
        id=doc_id,
        source=f"shared_{domain}",
        domain=domain,
        language="en",
        quality_score=1.0 if high else 0.5,
        high_quality=high,
    )


def shared_corpus(shared: Path, max_docs: int) -> dict[str, list[dict]]:
    """Real documents per domain from ../shared/data."""
    web = []
    for path in sorted((shared / "web/dolma-cc").glob("*.jsonl.gz")) + sorted(
        (shared / "web/olmo-c4").glob("*.json*.gz")
    ):
        with gzip.open(path, "rt") as f:
            for i, line in enumerate(f):
                text = json.loads(line).get("text", "")
                if text.strip():
                    web.append(_record("web", f"{path.name}:{i}", text))
    math = [
        _record("math", str(p), p.read_text(errors="replace"))
        for p in sorted((shared / "math").glob("*/*.tex"))
        if p.stat().st_size > 0
    ]
    with open(shared / "code/code_sample.jsonl") as f:
        code = [
            _record("code", f"{r['repo']}/{r['path']}", r["text"])
            for r in map(json.loads, f)
            if r["text"].strip()
        ]
    corpus = {"web": web, "math": math, "code": code}
    return {d: docs[:max_docs] if max_docs else docs for d, docs in corpus.items()}


def build_inputs(work: Path) -> tuple[Path, Path]:
    """(prep_dir, tokenizer.model), built once per work dir."""
    import sentencepiece as spm

    from tests.mixtures_fixtures import write_prepared

    prep, vocab = work / "prep", work / "tok" / "tokenizer.model"
    if not (prep / "code" / "dataset_info.json").exists():
        corpus = shared_corpus(Path(_SHARED.value), _MAX_DOCS.value)
        prep.mkdir(parents=True, exist_ok=True)
        for domain, records in corpus.items():
            n_val = max(2, len(records) // 50)
            write_prepared(prep, domain, {"train": records[n_val:], "validation": records[:n_val]}, shards=4)
            print(f"prepared {domain}: {len(records)} documents", flush=True)
    if not vocab.exists():
        vocab.parent.mkdir(parents=True, exist_ok=True)
        corpus = shared_corpus(Path(_SHARED.value), _MAX_DOCS.value)
        lines = [
            line for docs in corpus.values() for d in docs for line in d["text"].splitlines() if line.strip()
        ]
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines[::3]),
            model_prefix=str(vocab.with_suffix("")),
            vocab_size=16384,
            model_type="bpe",
            pad_id=0,
            eos_id=1,
            bos_id=2,
            unk_id=3,
            byte_fallback=True,
            split_digits=True,
            input_sentence_size=200_000,
            shuffle_input_sentence=True,
            minloglevel=2,
        )
        print(f"trained {vocab}", flush=True)
    return prep, vocab


def mixture_config(prep: Path, vocab: Path, output: Path, tasks=DOMAINS):
    from configs.mixtures import gemma_anneal

    cfg = gemma_anneal.get_config()
    cfg.tasks = list(tasks)
    cfg.pack.update(dict(prep_dir=str(prep), vocab_path=str(vocab), output=str(output)))
    return cfg


# ----------------------------------------------------------------------------- packing


def run_pack(prep: Path, vocab: Path, output: Path) -> dict:
    from mixtures import pack

    cfg = mixture_config(prep, vocab, output)
    cfg.pack.splits = ("train",)
    wall, cpu = time.perf_counter(), time.process_time()
    manifest = pack.pack(cfg)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = manifest["splits"]["train"]
    tokens = sum(s["tokens_out"] for s in stats.values())
    rows = sum(s["rows"] for s in stats.values())
    return dict(
        tokens=tokens,
        wall=wall,
        cpu=cpu,
        fill=tokens / (rows * SEQ_LEN),
        dropped=0.0,
        fill_per_task={t: round(s["fill"], 5) for t, s in stats.items()},
    )


def run_seqio(prep: Path, vocab: Path, output: Path) -> dict:
    """SeqIO's caching transforms (Beam) + trim_and_pack over the cache."""
    import apache_beam as beam
    import seqio
    import seqio.beam_utils
    import tensorflow as tf
    from apache_beam.options.pipeline_options import PipelineOptions

    from mixtures import tasks as tasks_lib

    tasks_lib.register_tasks(prep, vocab)
    for (
        name
    ) in DOMAINS:  # the same task, cached after all its preprocessors (SeqIO caches up to the placeholder)
        task = seqio.get_mixture_or_task(name)
        seqio.TaskRegistry.remove(f"{name}_cached")
        seqio.TaskRegistry.add(
            f"{name}_cached",
            source=task.source,
            output_features=task.output_features,
            preprocessors=[*task.preprocessors, seqio.CacheDatasetPlaceholder()],
        )
    wall, cpu = time.perf_counter(), time.process_time()
    options = PipelineOptions(
        ["--runner=FnApiRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    )
    with beam.Pipeline(options=options) as p:
        for task in DOMAINS:
            _ = (
                p
                | f"Pre_{task}"
                >> seqio.beam_utils.PreprocessTask(seqio.get_mixture_or_task(f"{task}_cached"), "train")
                | f"Write_{task}"
                >> seqio.beam_utils.WriteExampleTfRecord(str(output / task / "train.tfrecord"), num_shards=4)
            )
    files = sorted(str(f) for f in output.glob("*/train.tfrecord*"))
    ds = tf.data.TFRecordDataset(files).map(
        lambda r: {
            "targets": tf.io.parse_single_example(r, {"targets": tf.io.VarLenFeature(tf.int64)})[
                "targets"
            ].values
        }
    )
    tokens_in = 0
    for ex in ds.as_numpy_iterator():
        tokens_in += len(ex["targets"])
    packed = seqio.utils.trim_and_pack_dataset(ds, {"targets": SEQ_LEN})
    kept = rows = 0
    for ex in packed.as_numpy_iterator():
        kept += int((ex["targets_segment_ids"] > 0).sum())
        rows += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return dict(
        tokens=tokens_in, wall=wall, cpu=cpu, fill=kept / (rows * SEQ_LEN), dropped=1 - kept / tokens_in
    )


def compare_packing(prep: Path, vocab: Path, work: Path, rounds: int) -> None:
    print("\n== packing at seq_len 8192 (tasks web, math, code; train split), alternating rounds")
    results: dict[str, list[dict]] = {"mixtures.pack": [], "seqio cache + trim_and_pack": []}
    for r in range(rounds):
        for name, fn in (("mixtures.pack", run_pack), ("seqio cache + trim_and_pack", run_seqio)):
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                res = fn(prep, vocab, Path(tmp) / "out")
            results[name].append(res)
            print(
                f"  round {r} {name}: {res['tokens']:,} tokens in {res['wall']:.1f}s wall / {res['cpu']:.1f} CPU-s "
                f"= {res['tokens'] / res['cpu']:,.0f} tokens per CPU-second; fill {res['fill']:.4%}, "
                f"dropped {res['dropped']:.2%}",
                flush=True,
            )
    for name, rs in results.items():
        per_cpu = [x["tokens"] / x["cpu"] for x in rs]
        per_wall = [x["tokens"] / x["wall"] for x in rs]
        print(
            f"  {name}: tokens per CPU-second {min(per_cpu):,.0f}-{max(per_cpu):,.0f}, wall tokens/s "
            f"{min(per_wall):,.0f}-{max(per_wall):,.0f}, fill {rs[-1]['fill']:.4%}, dropped {rs[-1]['dropped']:.2%}"
            + (f", fill per task {rs[-1]['fill_per_task']}" if "fill_per_task" in rs[-1] else "")
        )


# ----------------------------------------------------------------------------- reading


def _stream(packed: Path, cfg, batch: int, total_steps: int, p: int = 0, count: int = 1, **kw):
    from mixtures.stream import MixtureStream

    return MixtureStream(
        cfg,
        str(packed),
        batch_size=batch,
        total_steps=total_steps,
        process_index=p,
        process_count=count,
        **kw,
    )


def _digest(batch: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(batch):
        h.update(np.ascontiguousarray(batch[k]).tobytes())
    return h.hexdigest()


def processes_check(packed: Path, cfg) -> None:
    print("\n== P simulated processes, global batch 64, 6 steps: same global batches, bytes read per process")
    steps, batch = 6, 64
    with _stream(packed, cfg, batch, 1000) as one:
        reference = [next(one) for _ in range(steps)]
        total = one.read_bytes
    for count in (1, 2, 4, 64):
        streams = [
            _stream(packed, cfg, batch, 1000, p, count, read_threads=1, prefetch=1) for p in range(count)
        ]
        slices = [[next(s) for _ in range(steps)] for s in streams]
        same = all(
            np.array_equal(np.concatenate([sl[i][k] for sl in slices]), reference[i][k])
            for i in range(steps)
            for k in reference[i]
        )
        read = np.array([s.read_bytes for s in streams])
        for s in streams:
            s.close()
        print(
            f"  P={count:>2}: union == P=1 batches: {same}; bytes read per process mean {read.mean() / 1e6:.2f} MB "
            f"(min {read.min() / 1e6:.2f}, max {read.max() / 1e6:.2f}) = {read.mean() / total:.4f} of the "
            f"global {total / 1e6:.2f} MB (1/P = {1 / count:.4f}); sum/global = {read.sum() / total:.4f}",
            flush=True,
        )


def throughput(packed: Path, cfg, steps: int) -> None:
    print(
        f"\n== one process (index 0 of 32, global batch 512: 16 rows of {SEQ_LEN}), one read thread, {steps} steps"
    )
    for threads, workers in ((1, 0), (2, 0)):
        with _stream(packed, cfg, 512, 10_000, 0, 32, read_threads=threads, prefetch=2, workers=workers) as s:
            next(s)
            wall, cpu = time.perf_counter(), time.process_time()
            tokens = 0
            for _ in range(steps):
                tokens += int((next(s)["segment_ids"] > 0).sum())
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"  read_threads={threads}: {tokens / wall:,.0f} tokens/s wall, {tokens / cpu:,.0f} tokens per "
            f"CPU-second ({steps * 16 / wall:,.0f} rows/s)",
            flush=True,
        )


def schedule_windows(packed: Path, cfg) -> None:
    from mixtures.report import windows_report

    total, batch = 500, 64
    with _stream(packed, cfg, batch, total) as s:
        switch = [st.start_step for st in s.schedule.stages]
        counts = np.zeros((total, len(s.task_names)), np.int64)
        for step in range(total):
            b = next(s)
            np.add.at(counts[step], b["task_ids"], (b["segment_ids"] > 0).sum(1))
        windows = windows_report(s.schedule, s.task_names, counts, 50)
    worst = max(abs(w["realized"][t] - w["scheduled"][t]) for w in windows for t in w["realized"])
    print(
        f"\n== realized token shares, gemma_anneal over {total} steps (stages start at {switch}), batch {batch}, "
        f"50-step windows: max |realized - scheduled| = {worst:.4f}"
    )
    for w in windows[-4:]:
        print(
            f"  {w['start_step']}-{w['end_step']}: "
            + ", ".join(
                f"{t} {w['realized'][t]:.3f} ({w['scheduled'][t]:.3f})"
                for t in w["realized"]
                if w["scheduled"][t] or w["realized"][t]
            )
        )


def child(packed: Path, cfg, out: str, resume: str | None) -> None:
    """Reads 60 steps of global batch 64, appending `step digest state` lines (flushed)."""
    with _stream(packed, cfg, 64, 1000) as s, open(out, "a") as f:
        if resume:
            s.set_state(json.loads(resume))
        while s.step < 60:
            step = s.step
            digest = _digest(next(s))
            f.write(json.dumps(dict(step=step, digest=digest, state=s.get_state())) + "\n")
            f.flush()
            time.sleep(0.05)


def resume_check(packed: Path, work: Path) -> None:
    print("\n== exact resume: child SIGKILLed mid-run, a new child resumes from its last saved state")
    base = [
        sys.executable,
        str(Path(__file__).resolve()),
        f"--work_dir={work}",
        f"--shared_data={_SHARED.value}",
    ]
    clean, killed = work / "clean.jsonl", work / "killed.jsonl"
    for f in (clean, killed):
        f.unlink(missing_ok=True)
    subprocess.run(base + [f"--child={clean}"], check=True, capture_output=True)
    proc = subprocess.Popen(
        base + [f"--child={killed}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while not killed.exists() or len(killed.read_text().splitlines()) < 25:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = [json.loads(x) for x in killed.read_text().splitlines()]
    last = lines[-1]
    print(f"  killed after step {last['step']} (state {last['state']['step']})")
    subprocess.run(
        base + [f"--child={killed}", f"--resume_state={json.dumps(last['state'])}"],
        check=True,
        capture_output=True,
    )
    got = [json.loads(x) for x in killed.read_text().splitlines()]
    want = [json.loads(x) for x in clean.read_text().splitlines()]
    same = [g["digest"] for g in got] == [w["digest"] for w in want] and [g["step"] for g in got] == list(
        range(60)
    )
    print(f"  steps 0-59 of (killed + resumed) identical to the uninterrupted run: {same}")
    m = json.loads((work / "packed" / "manifest.json").read_text())["splits"]["train"]
    rows = ", ".join(f"{t}: {s['rows']}" for t, s in m.items())
    print(f"  rows per task (one epoch): {rows}; the kill at step {last['step']} (batch 64) is mid-epoch")


def resume_cost(packed: Path, cfg) -> None:
    print("\n== resuming deep into gemma_anneal (715k steps, batch 512)")
    for step in (100_000, 640_000):
        with _stream(packed, cfg, 512, 715_000) as s:
            t = time.perf_counter()
            state = {"version": 2, "step": step, "fingerprints": s.fingerprints(step)}  # what get_state saves
            saved = time.perf_counter() - t
            t = time.perf_counter()
            s.set_state(state)
            next(s)
            print(
                f"  step {step:,}: get_state {saved:.2f}s; set_state + first batch ({step * 512 / 1e6:.0f}M "
                f"earlier rows counted) {time.perf_counter() - t:.2f}s",
                flush=True,
            )


def main(argv: list[str]) -> None:
    del argv
    if not Path(_SHARED.value).is_dir():
        raise SystemExit(
            f"skipped: {_SHARED.value} is absent (the shared sample data is not part of the project)"
        )
    work = Path(_WORK.value or tempfile.mkdtemp(prefix="packed_bench_"))
    prep, vocab = build_inputs(work)
    packed = work / "packed"
    cfg = mixture_config(prep, vocab, packed, tasks=("web", "math", "code", "web_hq", "math_hq", "code_hq"))
    if _CHILD.value:
        return child(packed, cfg, _CHILD.value, _RESUME.value)
    if not (packed / "manifest.json").exists():
        from mixtures import pack

        start = time.perf_counter()
        print(pack.format_report(pack.pack(cfg), time.perf_counter() - start))
    if _ROUNDS.value:
        compare_packing(prep, vocab, work, _ROUNDS.value)
    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    processes_check(packed, cfg)
    throughput(packed, cfg, _STEPS.value)
    schedule_windows(packed, cfg)
    resume_check(packed, work)
    resume_cost(packed, cfg)


if __name__ == "__main__":
    app.run(main)
