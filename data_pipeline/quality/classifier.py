"""Model-based quality: a linear classifier on hashed word n-grams, saved without pickle.

Like the fastText/logistic-regression quality filters of GPT-3 and the Llama/DCLM line,
a document is scored by ``P(high quality | hashed unigram+bigram features)``. Features come
from scikit-learn's stateless ``HashingVectorizer``, so a model file only needs the
vectoriser parameters and the weights: it is an ``.npz`` of plain arrays plus a JSON
header, loaded with ``allow_pickle=False``, so opening a file cannot run code.

CLI:  python -m data_pipeline.quality.classifier train --positive GLOB --negative GLOB --output MODEL
Job:  ``config.quality.model_path`` = MODEL; the job's quality stage (``data_pipeline.quality.scoring``)
      calls ``QualityScorer.load(MODEL).score(text)`` and marks each domain's top documents.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections
import numpy as np

from common import checks, cli, fs
from data_pipeline.readers.sources import guess_format, match_files

FORMAT = "gemma-pretrain-quality-v1"


def default_train_config() -> ml_collections.ConfigDict:
    """Fields of the ``train`` command's ``--config``."""
    return ml_collections.ConfigDict(
        {
            "n_features": 2**18,
            "ngram_max": 2,  # word 1..ngram_max grams
            "C": 1.0,  # inverse L2 strength of the logistic regression
            "max_iter": 1000,
            "holdout_fraction": 0.1,
            "seed": 0,
            "text_field": "text",  # for jsonl inputs; other files are one document each
            "max_chars": 100_000,
            "positive": [],  # GLOBs of high-quality documents (--positive, repeatable)
            "negative": [],  # GLOBs of low-quality documents (--negative, repeatable)
            "output": "",  # the model file to write (--output)
            "overwrite": False,  # replace an earlier quality model at `output` (--overwrite)
        }
    )


def _vectorizer(params: dict[str, Any]):
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        n_features=int(params["n_features"]),
        ngram_range=(1, int(params["ngram_max"])),
        alternate_sign=False,
        norm="l2",
        lowercase=True,
    )


class QualityScorer:
    """Loaded model: ``score(text) -> float`` in [0, 1], higher is better."""

    def __init__(self, params: dict[str, Any], coef: np.ndarray, intercept: float) -> None:
        self.params = params
        self.coef = coef.astype(np.float64)
        self.intercept = float(intercept)
        self._vectorizer = _vectorizer(params)

    @classmethod
    def load(cls, path: str) -> QualityScorer:
        with np.load(io.BytesIO(fs.read_bytes(path)), allow_pickle=False) as data:
            params = json.loads(str(data["params"]))
            if params.get("format") != FORMAT:
                raise ValueError(f"{path}: not a quality model ({FORMAT})")
            return cls(params, data["coef"], float(data["intercept"]))

    def save(self, path: str) -> None:
        buffer = io.BytesIO()  # a file object, so numpy does not append ".npz"
        np.savez_compressed(
            buffer,
            params=np.array(json.dumps(self.params)),
            coef=self.coef.astype(np.float32),
            intercept=np.array(self.intercept),
        )
        fs.write_bytes(path, buffer.getvalue())

    def score_batch(self, texts: Sequence[str]) -> np.ndarray:
        features = self._vectorizer.transform([t[: self.params["max_chars"]] for t in texts])
        return 1.0 / (1.0 + np.exp(-(features @ self.coef + self.intercept)))

    def score(self, text: str) -> float:
        return float(self.score_batch([text])[0])


def read_documents(pattern: str, text_field: str) -> Iterator[str]:
    """Texts from a glob (through common/fs.py): JSONL files' ``text_field``, any other file
    as one document; the format is decided per file, as in the job's reader."""
    paths = match_files(fs.resolve(pattern))
    if not paths:
        raise ValueError(f"no files match {pattern!r}")
    for path in paths:
        if guess_format(path) == "jsonl":
            for record in fs.read_jsonl(path):
                text = record.get(text_field)
                if isinstance(text, str) and text.strip():
                    yield text
        else:
            with fs.open_decompressed(path) as f:
                text = f.read().decode("utf-8", errors="replace")
            if text.strip():
                yield text


def train(
    positive: Sequence[str], negative: Sequence[str], config: ml_collections.ConfigDict
) -> tuple[QualityScorer, dict[str, float]]:
    """Fit logistic regression on hashed n-grams; returns the scorer and held-out metrics."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    if not positive or not negative:
        raise ValueError(f"need positive and negative documents, got {len(positive)} and {len(negative)}")
    params = {
        "format": FORMAT,
        "n_features": int(config.n_features),
        "ngram_max": int(config.ngram_max),
        "max_chars": int(config.max_chars),
    }
    texts = [t[: params["max_chars"]] for t in (*positive, *negative)]
    labels = np.array([1] * len(positive) + [0] * len(negative))
    rng = np.random.default_rng(config.seed)
    holdout = rng.random(len(texts)) < config.holdout_fraction
    if len(set(labels[holdout])) < 2 or len(set(labels[~holdout])) < 2:
        holdout[:] = False
    features = _vectorizer(params).transform(texts)
    model = LogisticRegression(C=config.C, max_iter=config.max_iter, class_weight="balanced")
    model.fit(features[~holdout], labels[~holdout])
    scorer = QualityScorer(params, model.coef_[0], model.intercept_[0])
    metrics = {"train_docs": int((~holdout).sum()), "holdout_docs": int(holdout.sum())}
    if holdout.any():
        scores = scorer.score_batch([texts[i] for i in np.flatnonzero(holdout)])
        metrics["holdout_accuracy"] = float(np.mean((scores >= 0.5) == labels[holdout]))
        metrics["holdout_auc"] = float(roc_auc_score(labels[holdout], scores))
    return scorer, metrics


def check_output(output: str, overwrite: bool) -> None:
    """Fails unless `output` is new or (with `overwrite`) an earlier quality model: a trained
    classifier that prepare runs were scored with, or any other file, is never replaced unasked."""
    if not fs.exists(output):
        return
    try:
        QualityScorer.load(output)
        earlier = True
    except Exception:  # a folder, another kind of file, an unreadable one
        earlier = False
    checks.require(earlier, "output", "exists and is not a quality model; refusing to replace it", output)
    checks.require(
        overwrite, "output", "holds a quality model already; pass --overwrite to replace it", output
    )


def main(config: ml_collections.ConfigDict, argv: Sequence[str]) -> None:
    checks.require(
        list(argv) == ["train"],
        "command",
        "usage: python -m data_pipeline.quality.classifier train --positive GLOB --negative GLOB --output MODEL",
        list(argv),
    )
    checks.require(
        0.0 <= config.holdout_fraction < 1.0, "holdout_fraction", "must be in [0, 1)", config.holdout_fraction
    )
    checks.require(config.n_features >= 2, "n_features", "must be >= 2", config.n_features)
    checks.positive(config.ngram_max, "ngram_max")
    output = fs.resolve(config.output)
    check_output(output, bool(config.overwrite))
    start = time.time()
    docs = {}
    for label in ("positive", "negative"):
        docs[label] = [t for pattern in config[label] for t in read_documents(pattern, config.text_field)]
        print(f"read {len(docs[label])} {label} documents", flush=True)
    scorer, metrics = train(docs["positive"], docs["negative"], config)
    scorer.save(output + ".partial")
    fs.replace(output + ".partial", output)  # whole or not at all: prepare runs may read it
    print(f"wrote {output} in {time.time() - start:.1f}s")
    for key, value in metrics.items():
        print(f"  {key:18s} {value:.4f}" if isinstance(value, float) else f"  {key:18s} {value}")


def run(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``gemma-quality``)."""
    cli.run(
        main,
        doc=__doc__,
        default_config=default_train_config,
        argv=argv,
        shortcuts=[
            cli.Shortcut("positive", help="GLOB of high-quality documents (repeatable).", multi=True),
            cli.Shortcut("negative", help="GLOB of low-quality documents (repeatable).", multi=True),
            cli.Shortcut("output", help="Path of the model file to write (.npz)."),
            cli.Shortcut("overwrite", help="Replace an earlier quality model at --output."),
        ],
        required=["positive", "negative", "output"],
    )


if __name__ == "__main__":
    run()
