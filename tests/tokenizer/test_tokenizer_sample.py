"""Tokenizer training sample: bounded sentences, seeded per-domain reservoirs, TFDS/JSONL/text inputs."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.checks import ConfigError
from tests.support.mixtures import write_prepared
from tokenizer import sample as sample_lib
from tokenizer.sample import Source, cut_sentences, resolve_inputs, sample_sentences

QUIET = dict(log=lambda *_: None)


def fixture_records(domain: str, split: str, texts: list[str]) -> list[dict]:
    """Prepared-data records (docs/DESIGN.md features) holding `texts`."""
    return [
        {
            "text": text,
            "id": f"{split}-{i}",
            "source": "fixture",
            "domain": domain,
            "language": "en",
            "quality_score": 0.5,
            "high_quality": False,
        }
        for i, text in enumerate(texts)
    ]


@pytest.fixture(scope="module")
def prep_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prep")
    for domain in ("web", "code"):
        splits = {
            "train": [f"{domain} train document {i}\n" * (i + 1) for i in range(20)],
            "validation": [f"{domain} held-out {i}" for i in range(3)],
        }
        write_prepared(
            root, domain, {split: fixture_records(domain, split, texts) for split, texts in splits.items()}
        )
    return root


@settings(max_examples=200, deadline=None)
@given(st.text(), st.integers(min_value=4, max_value=300))
def test_cut_sentences_is_lossless_and_bounded(text, max_bytes):
    pieces = list(cut_sentences(text, max_bytes))
    assert "".join(pieces) == text
    assert all(0 < len(p.encode("utf-8")) <= max_bytes for p in pieces)


def test_cut_sentences_keeps_whole_lines_when_they_fit():
    text = "".join(f"line {i}\n" for i in range(100))
    pieces = list(cut_sentences(text, 64))
    assert all(p.endswith("\n") for p in pieces)
    for piece, following in zip(pieces, pieces[1:]):  # a piece ends only where the next line does not fit
        assert len(piece) + len(following.splitlines(keepends=True)[0]) > 64


def test_reservoir_keeps_quota_by_weight_and_is_seeded(tmp_path):
    for domain, n in (("web", 500), ("code", 300)):
        (tmp_path / f"{domain}.jsonl").write_text(
            "".join(json.dumps({"text": f"{domain} {i}"}) + "\n" for i in range(n))
        )
    sources = resolve_inputs([str(tmp_path / "web.jsonl"), str(tmp_path / "code.jsonl")])
    weights = {"web": 3.0, "code": 1.0, "math": 5.0}  # math absent: its weight is not counted
    a, desc = sample_sentences(sources, weights, 100, 256, seed=1, **QUIET)
    b, _ = sample_sentences(sources, weights, 100, 256, seed=1, **QUIET)
    c, _ = sample_sentences(sources, weights, 100, 256, seed=2, **QUIET)
    assert a == b and a != c
    assert desc["domains"]["web"]["sentences_kept"] == 75 and desc["domains"]["code"]["sentences_kept"] == 25
    assert desc["domains"]["web"]["sentences_seen"] == 500
    kept = [int(s.split()[1]) for s in a if s.startswith("web")]
    assert max(kept) > 250  # drawn from the whole stream, not its head


def test_reservoir_is_uniform():
    counts = np.zeros(100)
    for seed in range(400):
        sample = sample_lib.DomainSample("web", 1.0, 10, [])
        sample_lib.reservoir(sample, iter(str(i) for i in range(100)), random.Random(seed))
        for s in sample.sentences:
            counts[int(s)] += 1
    assert counts.sum() == 4000
    assert counts[:50].sum() == pytest.approx(2000, rel=0.1)  # expected 40 per item


def test_domain_prefix_glob_and_text_files(tmp_path):
    for name in ("a.tex", "b.tex", "notes.md"):
        (tmp_path / name).write_text(f"content of {name}")
    sources = resolve_inputs([f"math={tmp_path}/*.tex", str(tmp_path / "notes.md")])
    assert sources == [
        Source("math", "text", str(tmp_path / "a.tex")),
        Source("math", "text", str(tmp_path / "b.tex")),
        Source("notes", "text", str(tmp_path / "notes.md")),
    ]
    assert list(sample_lib.iter_documents(sources[0], "train")) == ["content of a.tex"]
    with pytest.raises(ConfigError, match=r"^config\.inputs: '.*missing\.jsonl': no TFDS dataset"):
        resolve_inputs([str(tmp_path / "missing.jsonl")])


def test_max_documents_per_domain_stops_the_stream(tmp_path):
    (tmp_path / "web.jsonl").write_text("".join(json.dumps({"text": f"d{i}"}) + "\n" for i in range(50)))
    _, desc = sample_sentences(
        resolve_inputs([str(tmp_path / "web.jsonl")]),
        {"web": 1.0},
        1000,
        256,
        0,
        max_documents_per_domain=7,
        **QUIET,
    )
    assert desc["domains"]["web"]["documents_read"] == 7


def test_prepared_tfds_directory_is_read_per_domain_and_split(prep_dir):
    sources = resolve_inputs([str(prep_dir)])
    assert [(s.domain, s.kind) for s in sources] == [("code", "tfds"), ("web", "tfds")]
    train, desc = sample_sentences(sources, {"web": 1.0, "code": 1.0}, 1000, 128, 0, split="train", **QUIET)
    assert desc["domains"]["web"]["documents_read"] == 20
    assert all(len(s.encode()) <= 128 for s in train)
    held_out = list(sample_lib.iter_documents(sources[1], "validation"))
    assert sorted(held_out) == [f"web held-out {i}" for i in range(3)]
    one = resolve_inputs([f"prose={prep_dir / 'web'}"])
    assert one == [Source("prose", "tfds", str(prep_dir / "web"))]


def test_versioned_tfds_directory_uses_the_newest_version(prep_dir, tmp_path):
    for version in ("1.0.0", "1.10.0", "1.2.0"):
        shutil.copytree(prep_dir / "web", tmp_path / "web" / version)
    assert resolve_inputs([str(tmp_path / "web")]) == [
        Source("web", "tfds", str(tmp_path / "web" / "1.10.0"))
    ]


def test_train_on_prepared_tfds(prep_dir, tmp_path):
    from configs.tokenizer import demo
    from tokenizer.train import train_tokenizer
    from tokenizer.vocab import load_vocabulary

    config = demo.get_config()
    config.inputs = [str(prep_dir)]
    config.spm.vocab_size = 300
    settings = train_tokenizer(config, tmp_path, **QUIET)
    assert settings["sample"]["domains"]["code"]["documents_read"] == 20
    vocab = load_vocabulary(tmp_path / "tokenizer.model")
    assert vocab.decode(vocab.encode("web train document 19\n")) == "web train document 19\n"


def test_a_document_with_a_lone_surrogate_is_skipped_and_counted(tmp_path):
    """`"\\ud83d"` decodes to text no UTF-8 encodes: SentencePiece (and the sample's hash)
    would fail on it; the trainer skips that document and says how many it skipped."""
    path = tmp_path / "web.jsonl"
    path.write_text(
        '{"text": "a whole page"}\n{"text": "half an emoji \\ud83d here"}\n{"text": "another page"}\n'
    )
    said: list[str] = []
    sentences, description = sample_sentences(
        [Source("web", "jsonl", str(path))], {}, 100, 64, 0, log=said.append
    )
    assert sorted(sentences) == ["a whole page", "another page"]
    assert description["domains"]["web"]["documents_skipped_lone_surrogate"] == 1
    assert "skipped 1 holding a lone surrogate" in said[0]
