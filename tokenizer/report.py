"""Tokenizer report: tokens per byte per domain on held-out text, and encode speed on one core.

    python -m tokenizer.report --model DIR/tokenizer.model --input PREP_DIR [--input math=x.jsonl ...]

Tokens per byte (UTF-8 bytes of the original text) is the compression figure that decides
how many training tokens a corpus yields; it is read on the `validation` split of the
prepared TFDS datasets (or on the JSONL/text files given). Throughput: the process is pinned
to a single CPU core and SentencePiece encodes one document per call; MB/s is per second of
that thread's CPU time (steady on a shared machine), wall MB/s per second of elapsed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import sentencepiece as spm
from absl import app, flags

from tokenizer import sample as sample_lib
from tokenizer.vocab import load_vocabulary

FLAGS = flags.FLAGS


@contextlib.contextmanager
def one_core() -> Iterator[int]:
    """Pins this process to one of its allowed cores for the duration."""
    allowed = os.sched_getaffinity(0)
    core = min(allowed)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, allowed)


def read_domains(specs: Sequence[str], split: str, max_bytes_per_domain: int) -> dict[str, list[str]]:
    """Held-out documents per domain, up to about `max_bytes_per_domain` UTF-8 bytes each."""
    texts: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for source in sample_lib.resolve_inputs(specs):
        docs = texts.setdefault(source.domain, [])
        for text in sample_lib.iter_documents(source, split):
            if sizes.get(source.domain, 0) >= max_bytes_per_domain:
                break
            docs.append(text)
            sizes[source.domain] = sizes.get(source.domain, 0) + len(text.encode("utf-8"))
    return texts


def measure_domain(processor: spm.SentencePieceProcessor, domain: str, docs: list[str]) -> dict:
    """Tokens per byte, encode MB/s on one core, and lossless-round-trip failures."""
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    with one_core():
        wall, cpu = time.perf_counter(), time.thread_time()
        encoded = [processor.encode(d) for d in docs]
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    n_tokens = sum(len(ids) for ids in encoded)
    errors = sum(processor.decode(ids) != d for ids, d in zip(encoded, docs))
    return {
        "domain": domain,
        "documents": len(docs),
        "bytes": n_bytes,
        "tokens": n_tokens,
        "tokens_per_byte": n_tokens / max(n_bytes, 1),
        "bytes_per_token": n_bytes / max(n_tokens, 1),
        "mb_per_s": n_bytes / 1e6 / max(cpu, 1e-9),
        "wall_mb_per_s": n_bytes / 1e6 / max(wall, 1e-9),
        "round_trip_errors": errors,
    }


def measure(
    processor: spm.SentencePieceProcessor, specs: Sequence[str], split: str = "validation",
    max_bytes_per_domain: int = 20_000_000,
) -> list[dict]:
    """One row per domain, in sorted order."""
    texts = read_domains(specs, split, max_bytes_per_domain)
    return [measure_domain(processor, domain, texts[domain]) for domain in sorted(texts) if texts[domain]]


def format_table(rows: list[dict]) -> str:
    header = f"{'domain':<10}{'docs':>8}{'MB':>9}{'tokens':>11}{'tokens/byte':>13}{'bytes/token':>13}{'MB/s':>8}{'wall MB/s':>11}{'rt_err':>8}"
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['domain']:<10}{r['documents']:>8}{r['bytes'] / 1e6:>9.2f}{r['tokens']:>11}"
            f"{r['tokens_per_byte']:>13.4f}{r['bytes_per_token']:>13.3f}{r['mb_per_s']:>8.2f}{r['wall_mb_per_s']:>11.2f}{r['round_trip_errors']:>8}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.max_mb_per_domain <= 0:
        raise ValueError(f"--max_mb_per_domain: must be > 0, got {FLAGS.max_mb_per_domain}")
    vocab = load_vocabulary(FLAGS.model)
    print(f"report: {vocab.sentencepiece_model_file}, {vocab.vocab_size} pieces, split {FLAGS.split!r}")
    rows = measure(vocab.tokenizer, FLAGS.input, FLAGS.split, int(FLAGS.max_mb_per_domain * 1e6))
    print(format_table(rows))
    if FLAGS.json:
        Path(FLAGS.json).write_text(json.dumps(rows, indent=2) + "\n")
        print(f"report: rows written to {FLAGS.json}")


def run() -> None:
    """Console entry point; flags are defined here so that importing the module defines none."""
    flags.DEFINE_string("model", None, "SentencePiece tokenizer.model (or its directory).", required=True)
    flags.DEFINE_multi_string("input", None, "[domain=]path of held-out text (as tokenizer.train).", required=True)
    flags.DEFINE_string("split", "validation", "TFDS split to read.")
    flags.DEFINE_float("max_mb_per_domain", 20.0, "Read at most this many MB of text per domain.")
    flags.DEFINE_string("json", None, "Also write the rows to this JSON file.")
    app.run(main)


if __name__ == "__main__":
    run()
