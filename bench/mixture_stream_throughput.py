"""Stream throughput at seq_len 8192 and packing fill on real documents (../shared/data).

    .venv/bin/python bench/mixture_stream_throughput.py \\
        --vocab_path=runs/bench/tokenizer/v16384/tokenizer.model --steps=40

Builds PREP_DIR in a temp dir from the shared sample (web: dolma-cc and C4 jsonl.gz;
math: the LaTeX of two books; code: code_sample.jsonl), with the TFDS layout of
docs/DESIGN.md. `high_quality` marks a fixed third of each domain by id hash: there is
no quality model here and the flag only selects the annealing subset. Then:
  1. PackedStream with configs/mixtures/gemma_anneal.py (anneal over the last 10%):
     tokens/s wall and per CPU-second (one core), fill of the emitted rows.
  2. Fill of the packer vs seqio.utils.trim_and_pack_dataset on the same tokenized
     documents, at 1024 and 8192 (trim_and_pack also drops the tail of long documents).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import seqio
import tensorflow as tf
from absl import app, flags

from configs.mixtures import gemma_anneal
from mixtures.packing import DocumentPacker
from mixtures.stream import PackedStream, read_documents
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.mixtures_fixtures (TFDS writer)
from tests.mixtures_fixtures import write_prepared  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
_SHARED = flags.DEFINE_string("shared_data", str(REPO.parent / "shared" / "data"), "The shared sample data.")
_VOCAB = flags.DEFINE_string("vocab_path", str(REPO / "runs/bench/tokenizer/v16384/tokenizer.model"),
                             "SentencePiece model with Gemma ids (tokenizer.train output).")
_STEPS = flags.DEFINE_integer("steps", 40, "Stream steps to time.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Rows per step.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 8192, "Row length for the stream measurement.")


def _record(domain: str, doc_id: str, text: str) -> dict:
    high = int(hashlib.sha1(doc_id.encode()).hexdigest(), 16) % 3 == 0
    return dict(text=text, id=doc_id, source=f"shared_{domain}", domain=domain, language="en",
                quality_score=1.0 if high else 0.5, high_quality=high)


def shared_corpus(shared: Path) -> dict[str, list[dict]]:
    """Real documents per domain from ../shared/data."""
    web = []
    for path in sorted((shared / "web/dolma-cc").glob("*.jsonl.gz")) + sorted((shared / "web/olmo-c4").glob("*.json*.gz")):
        with gzip.open(path, "rt") as f:
            for i, line in enumerate(f):
                text = json.loads(line).get("text", "")
                if text.strip():
                    web.append(_record("web", f"{path.name}:{i}", text))
    math = [_record("math", str(p), p.read_text(errors="replace"))
            for p in sorted((shared / "math").glob("*/*.tex")) if p.stat().st_size > 0]
    with open(shared / "code/code_sample.jsonl") as f:
        code = [_record("code", f"{r['repo']}/{r['path']}", r["text"]) for r in map(json.loads, f) if r["text"].strip()]
    return {"web": web, "math": math, "code": code}


def fill_of_packer(lengths: list[int], seq_len: int) -> tuple[float, float]:
    """(fill, documents cut per document) of DocumentPacker over documents of these lengths."""
    packer = DocumentPacker([(i, np.zeros(n, np.int32)) for i, n in enumerate(lengths)], seq_len)
    rows = list(iter(packer.next_row, []))
    tokens = sum(p.end - p.start for row in rows for p in row)
    cuts = sum(not p.ends_document for row in rows for p in row)
    assert tokens == sum(lengths)
    return tokens / (len(rows) * seq_len), cuts / len(lengths)


def fill_of_seqio(docs: list[np.ndarray], seq_len: int) -> tuple[float, float]:
    """(fill, share of tokens dropped) of seqio.utils.trim_and_pack_dataset."""
    ds = tf.data.Dataset.from_generator(lambda: ({"targets": d} for d in docs),
                                        output_signature={"targets": tf.TensorSpec([None], tf.int32)})
    packed = seqio.utils.trim_and_pack_dataset(ds, {"targets": seq_len})
    kept = rows = 0
    for ex in packed.as_numpy_iterator():
        kept += int((ex["targets_segment_ids"] > 0).sum())
        rows += 1
    total = sum(len(d) for d in docs)
    return kept / (rows * seq_len), 1 - kept / total


def main(argv: list[str]) -> None:
    del argv
    shared, vocab = Path(_SHARED.value), Path(_VOCAB.value)
    if not shared.is_dir():
        raise SystemExit(f"skipped: {shared} is absent (the shared sample data is not part of the project)")
    if not vocab.is_file():
        raise SystemExit(f"skipped: no tokenizer at {vocab}; train one with tokenizer.train and pass --vocab_path")
    with tempfile.TemporaryDirectory() as tmp:
        prep = Path(tmp) / "prep"
        prep.mkdir()
        for domain, records in shared_corpus(shared).items():
            write_prepared(prep, domain, {"train": records})
            print(f"prepared {domain}: {len(records)} documents, {sum(r['high_quality'] for r in records)} high quality")

        cfg = gemma_anneal.get_config()
        stream = PackedStream(cfg, prep, vocab, batch_size=_BATCH.value, total_steps=_STEPS.value,
                              seq_len=_SEQ_LEN.value, prefetch=0)
        next(stream)  # opens the pipelines
        wall, cpu = time.perf_counter(), time.process_time()
        tokens = rows_tokens = 0
        for step in range(1, _STEPS.value):
            batch = next(stream)
            tokens += int((batch["segment_ids"] > 0).sum())
            rows_tokens += batch["segment_ids"].size
            if step % 10 == 0:
                print(f"  step {step}/{_STEPS.value} stage={stream.stage_at(step)}", flush=True)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stream.close()
        print(f"stream seq_len={_SEQ_LEN.value} batch={_BATCH.value}: {tokens / wall:,.0f} tokens/s wall, "
              f"{tokens / cpu:,.0f} tokens per CPU-second, fill {tokens / rows_tokens:.4%}")

        docs = [t for name in ("web", "math", "code")
                for _, t in read_documents(seqio.get_mixture_or_task(name), "train", 0,
                                           seqio.get_mixture_or_task(name).source.num_input_examples("train"))]
        lengths = [len(d) for d in docs]
        print(f"documents: {len(docs)}, tokens {sum(lengths):,}, median length {int(np.median(lengths))}, "
              f"p90 {int(np.percentile(lengths, 90))}")
        for seq_len in (1024, 8192):
            fill, cuts = fill_of_packer(lengths, seq_len)
            s_fill, dropped = fill_of_seqio(docs, seq_len)
            print(f"seq_len {seq_len}: packer fill {fill:.4%} ({cuts:.3f} cuts/document, nothing dropped); "
                  f"seqio trim_and_pack fill {s_fill:.4%} (drops {dropped:.2%} of tokens)")


if __name__ == "__main__":
    app.run(main)
