"""Perplexity of a checkpoint on a file of documents.

  python -m pretrain.tools.evaluate --workdir W [--step N] --input FILE [--dtype float32] [--dump PATH]

FILE is JSON lines (a `text` field, optional `source` and `id`) or plain text (documents
separated by blank lines). Each document is tokenized as in training (<bos> per the
mixture's policy, text, <eos>) and scored in windows of the training sequence length,
split like the packer splits long documents: window k holds tokens[k*L : k*L + L + 1], so
every token after the first is predicted exactly once, with the context of its window.
Prints the mean loss per predicted token and its perplexity, overall and per source.
`--dump` writes one JSON line per document with the exact `tokens` and per-token `losses`
(losses[i] = -log p(tokens[i+1] | its window)), so another implementation can check them;
an existing PATH is replaced only with `--overwrite`, and never when it is an input or a
file of a run (common/outputs.py).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from common import checks, cli, fs, outputs
from common.text import has_lone_surrogate, replace_lone_surrogates
from pretrain.checkpoint import load_train_config, restore_params
from pretrain.model.transformer import DTYPES, Transformer, TransformerConfig
from pretrain.train_config import check_tokenizer
from pretrain.train_step import token_losses
from tokenizer.special_ids import EOS_ID, bos_prefix


def read_documents(path: fs.PathLike) -> list[dict[str, str]]:
    """[{text, source, id}] from JSON lines or blank-line-separated plain text."""
    if fs.basename(path).endswith((".jsonl", ".json")):
        docs = []
        for i, record in enumerate(fs.read_jsonl(path)):
            if "text" not in record:
                raise ValueError(f"{path}: line {i + 1} has no 'text' field")
            docs.append(
                {
                    "text": str(record["text"]),
                    "source": str(record.get("source", "")),
                    "id": str(record.get("id", i)),
                }
            )
        return docs
    paragraphs = [p.strip() for p in fs.read_text(path).split("\n\n") if p.strip()]
    return [{"text": p, "source": "", "id": str(i)} for i, p in enumerate(paragraphs)]


def windows(tokens: list[int], seq_len: int) -> Iterator[list[int]]:
    """Overlapping by one token, so each token after the first is a target once."""
    for start in range(0, max(len(tokens) - 1, 1), seq_len):
        yield tokens[start : start + seq_len + 1]


def score(
    model: Transformer, params: Any, token_lists: list[list[int]], seq_len: int, batch_size: int
) -> list[np.ndarray]:
    """Per-token losses of every document (len(tokens) - 1 each), batched by window."""
    rows = [(d, w) for d, tokens in enumerate(token_lists) for w in windows(tokens, seq_len)]

    @jax.jit
    def forward(params, inputs, targets, positions, segment_ids):
        return token_losses(model.apply({"params": params}, inputs, positions, segment_ids), targets)[0]

    losses: list[list[np.ndarray]] = [[] for _ in token_lists]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = np.zeros((4, batch_size, seq_len), np.int32)  # inputs, targets, pos, segment
        for r, (_, window) in enumerate(chunk):
            n = len(window) - 1
            batch[0, r, :n], batch[1, r, :n] = window[:-1], window[1:]
            batch[2, r, :n], batch[3, r, :n] = np.arange(n), 1
        out = np.asarray(forward(params, *batch))
        for r, (d, window) in enumerate(chunk):
            losses[d].append(out[r, : len(window) - 1])
    return [np.concatenate(parts) if parts else np.zeros(0, np.float32) for parts in losses]


def evaluate(
    workdir: fs.PathLike,
    input_path: fs.PathLike,
    step: int | None = None,
    dtype: str = "float32",
    dump: fs.PathLike | None = None,
    tokenizer: str | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """{'loss', 'perplexity', 'tokens', 'documents', 'per_source': {...}} of the checkpoint."""
    config = load_train_config(workdir)
    vocab_path = tokenizer or config.data.tokenizer
    checks.require(bool(vocab_path), "tokenizer", "required: the training config has no data.tokenizer")
    vocab = check_tokenizer(config, fs.resolve(vocab_path), "tokenizer")
    params, config = restore_params(workdir, step)
    model_cfg = TransformerConfig.from_config_dict({**config.model.to_dict(), "dtype": dtype})
    bos = bos_prefix(config.get("mixture", {}).get("bos", "document"))
    docs = read_documents(input_path)
    replaced = sum(has_lone_surrogate(d["text"]) for d in docs)  # not UTF-8: scored as U+FFFD
    docs = [{**d, "text": replace_lone_surrogates(d["text"])} for d in docs]
    token_lists = [bos + list(vocab.encode(d["text"])) + [EOS_ID] for d in docs]
    losses = score(Transformer(model_cfg), params, token_lists, config.data.seq_len, batch_size)

    by_source: dict[str, list[np.ndarray]] = defaultdict(list)
    for doc, doc_losses in zip(docs, losses):
        by_source[doc["source"]].append(doc_losses)

    def summary(parts: list[np.ndarray]) -> dict[str, float]:
        flat = np.concatenate(parts).astype(np.float64)
        mean = float(flat.mean()) if flat.size else float("nan")
        return {"loss": mean, "perplexity": math.exp(mean), "tokens": int(flat.size), "documents": len(parts)}

    result = summary(losses)
    if replaced:
        result["documents_with_lone_surrogates"] = replaced
    if any(doc["source"] for doc in docs):
        result["per_source"] = {s: summary(p) for s, p in sorted(by_source.items())}
    if dump:
        rows = zip(docs, token_lists, losses)
        outputs.write_file(fs.resolve(dump), lambda path: _write_dump(path, rows), overwrite=True)
    return result


def _write_dump(path: str, rows: Iterable[tuple[dict[str, str], list[int], np.ndarray]]) -> None:
    with fs.open(path, "w") as f:
        for doc, tokens, doc_losses in rows:
            line = {"id": doc["id"], "source": doc["source"], "tokens": tokens}
            f.write(json.dumps({**line, "losses": [float(x) for x in doc_losses]}) + "\n")


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "workdir": "",  # training workdir (config.json, checkpoints/)
            "step": -1,  # checkpoint step; -1: the latest
            "input": "",  # documents: .jsonl (text, source, id) or plain text
            "dtype": "float32",  # activation dtype
            "dump": "",  # write per-document tokens and losses here (JSON lines)
            "tokenizer": "",  # tokenizer.model; default: the training config's
            "batch_size": 8,  # windows scored per forward pass
            "overwrite": False,  # replace an existing `dump` file
        }
    )


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    checks.require(not argv, "input", "unexpected positional arguments", argv)
    checks.one_of(config.dtype, DTYPES, "dtype")
    checks.positive(config.batch_size, "batch_size")
    checks.require(fs.isfile(fs.resolve(config.input)), "input", "no such file", config.input)
    if config.dump:  # never one of the inputs, nor a file of a run (W/config.json, say)
        outputs.check_file(
            config.dump,
            field="config.dump",
            overwrite=bool(config.overwrite),
            inputs=[config.input, config.tokenizer, fs.join(fs.resolve(config.workdir), "config.json")],
        )
    result = evaluate(
        fs.resolve(config.workdir),
        fs.resolve(config.input),
        None if config.step < 0 else config.step,
        config.dtype,
        config.dump or None,
        config.tokenizer or None,
        config.batch_size,
    )
    print(
        f"{config.input}: {result['documents']} documents, {result['tokens']} tokens: "
        f"loss {result['loss']:.4f} nats/token, perplexity {result['perplexity']:.3f}"
    )
    if result.get("documents_with_lone_surrogates"):
        print(
            f"  {result['documents_with_lone_surrogates']} document(s) held lone UTF-16 surrogates "
            "(not UTF-8 text): each was scored with U+FFFD in its place"
        )
    for source, r in result.get("per_source", {}).items():
        print(
            f"  {source or '(no source)'}: {r['documents']} documents, {r['tokens']} tokens: "
            f"loss {r['loss']:.4f}, perplexity {r['perplexity']:.3f}"
        )
    if config.dump:
        print(f"per-token losses: {config.dump}")


def run() -> None:
    """Console-script entry point."""
    cli.run(
        main,
        doc=__doc__,
        default_config=default_config,
        shortcuts=[
            cli.Shortcut("workdir", help="training workdir (config.json, checkpoints/)"),
            cli.Shortcut("step", help="checkpoint step; default: the latest"),
            cli.Shortcut("input", help="documents: .jsonl (text, source, id) or plain text"),
            cli.Shortcut("dtype", help="activation dtype"),
            cli.Shortcut("dump", help="write per-document tokens and losses (JSON lines)"),
            cli.Shortcut("tokenizer", help="tokenizer.model; default: the training config's"),
            cli.Shortcut("batch_size", help="windows scored per forward pass"),
            cli.Shortcut("overwrite", help="replace an existing --dump file"),
        ],
        required=["workdir", "input"],
    )


if __name__ == "__main__":
    run()
