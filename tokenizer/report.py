"""Tokenizer report: tokens per byte per domain on held-out text, and encode speed on one core.

    python -m tokenizer.report --tokenizer DIR/tokenizer.model --input PREP_DIR [--input math=x.jsonl ...] [--json OUT]

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

import ml_collections
import sentencepiece as spm

from common import checks, cli, fs, outputs
from tokenizer import sample as sample_lib
from tokenizer.vocab import load_vocabulary


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
    processor: spm.SentencePieceProcessor,
    specs: Sequence[str],
    split: str = "validation",
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


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "model": "",  # tokenizer.model, or its directory
            "inputs": [],  # [domain=]path of held-out text, as tokenizer.train's inputs
            "split": "validation",  # TFDS split to read
            "max_mb_per_domain": 20.0,  # read at most this many MB of text per domain
            "json": "",  # also write the rows here
            "overwrite": False,  # replace an existing `json` file
        }
    )


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    checks.require(not argv, "inputs", "unexpected positional arguments (use --input)", argv)
    checks.positive(config.max_mb_per_domain, "max_mb_per_domain")
    if config.json:  # never the tokenizer, an input or a file of a run
        outputs.check_file(
            config.json,
            field="config.json",
            overwrite=bool(config.overwrite),
            inputs=[config.model, *(str(i).split("=", 1)[-1] for i in config.inputs)],
        )
    try:
        vocab = load_vocabulary(config.model)
    except FileNotFoundError as e:
        raise checks.ConfigError(f"config.model: {e}") from None
    print(f"report: {vocab.sentencepiece_model_file}, {vocab.vocab_size} pieces, split {config.split!r}")
    rows = measure(vocab.tokenizer, list(config.inputs), config.split, int(config.max_mb_per_domain * 1e6))
    print(format_table(rows))
    if config.json:
        text = json.dumps(rows, indent=2) + "\n"
        outputs.write_file(
            fs.resolve(config.json), lambda path: fs.write_text(path, text), overwrite=config.overwrite
        )
        print(f"report: rows written to {config.json}")


def run() -> None:
    """Console entry point."""
    cli.run(
        main,
        doc=__doc__,
        default_config=default_config,
        shortcuts=[
            cli.Shortcut(
                "tokenizer",
                "model",
                "SentencePiece tokenizer.model (or its directory)",
                deprecated=("model",),
            ),
            cli.Shortcut("input", "inputs", "[domain=]path of held-out text; repeatable", multi=True),
            cli.Shortcut("split", help="TFDS split to read"),
            cli.Shortcut("max_mb_per_domain", help="MB of text read per domain"),
            cli.Shortcut("json", help="also write the rows to this JSON file"),
            cli.Shortcut("overwrite", help="replace an existing --json file"),
        ],
        required=["model", "inputs"],
    )


if __name__ == "__main__":
    run()
