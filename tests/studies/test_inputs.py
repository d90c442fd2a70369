"""studies.inputs: every input a study reads is hashed by content, and a change is named."""

from __future__ import annotations

import json
import shutil

import pytest

from common.checks import ConfigError
from configs.anneal import demo
from data_pipeline import prepared
from mixtures import manifest
from studies import inputs
from tests.support.mixtures import packed_fixture, write_prepared


def _config(prep_dir, packed_dir, vocab, corpus_dir=""):
    c = demo.get_config()
    c.prep_dir, c.corpus_dir = str(prep_dir), str(corpus_dir)
    c.train.data.packed_dir, c.train.data.tokenizer = str(packed_dir), str(vocab)
    return c


def test_packed_hash_ignores_where_the_tokenizer_lay(tmp_path_factory, tmp_path):
    _, _, packed_dir = packed_fixture(tmp_path_factory)
    moved = tmp_path / "packed"
    shutil.copytree(packed_dir, moved)
    record = json.loads((moved / "manifest.json").read_text())
    record["vocab"]["path"] = "/elsewhere/tokenizer.model"  # as a pack into another folder records it
    (moved / "manifest.json").write_text(json.dumps(manifest.with_fingerprint(record)))
    assert inputs.packed_sha256(str(moved)) == inputs.packed_sha256(str(packed_dir))
    record["vocab"]["sha256"] = "0" * 64  # another tokenizer: another input
    (moved / "manifest.json").write_text(json.dumps(manifest.with_fingerprint(record)))
    assert inputs.packed_sha256(str(moved)) != inputs.packed_sha256(str(packed_dir))


def test_hashes_follow_content_not_paths(tmp_path_factory, tmp_path):
    prep_dir, vocab, packed_dir = packed_fixture(tmp_path_factory)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "web.jsonl").write_text('{"id": "a", "text": "x"}\n')
    heldout = [{"source": "quiz", "id": "0", "text": "question answer"}]
    first = inputs.input_hashes(_config(prep_dir, packed_dir, vocab, corpus), heldout)
    assert set(first) >= {"corpus", "packed", "tokenizer", "heldout"} and any(
        k.startswith("prepared/") for k in first
    )
    copy = tmp_path / "prep_copy"  # the same bytes elsewhere: the same inputs
    shutil.copytree(prep_dir, copy)
    assert inputs.input_hashes(_config(copy, packed_dir, vocab, corpus), heldout) == first
    (corpus / "web.jsonl").write_text('{"id": "a", "text": "y"}\n')
    changed = inputs.input_hashes(_config(copy, packed_dir, vocab, corpus), heldout)
    assert {k for k in first if first[k] != changed[k]} == {"corpus"}
    domain = next(k for k in first if k.startswith("prepared/")).split("/")[1]
    records = {split: list(prepared.examples(copy / domain, split)) for split in ("train", "validation")}
    shutil.rmtree(copy / domain)  # the same records, in another order over 3 shards: the same input
    write_prepared(copy, domain, {split: rows[::-1] for split, rows in records.items()}, shards=3)
    assert inputs.input_hashes(_config(copy, packed_dir, vocab, corpus), heldout) == changed
    shutil.rmtree(copy / domain)  # one record's text changed: another input
    records["train"][0] = {**records["train"][0], "text": records["train"][0]["text"] + b" more"}
    write_prepared(copy, domain, records)
    edited = [{**heldout[0], "text": "question other answer"}]
    again = inputs.input_hashes(_config(copy, packed_dir, vocab, corpus), edited)
    assert {k for k in first if first[k] != again[k]} == {"corpus", f"prepared/{domain}", "heldout"}
    with pytest.raises(
        ConfigError, match=r"config.output_dir: OUT was planned on other inputs \(corpus .* -> "
    ):
        inputs.check_same(first, changed, "OUT")
    inputs.check_same(first, dict(first), "OUT")
