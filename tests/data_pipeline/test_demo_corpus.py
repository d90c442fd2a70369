"""The embedded default corpus is built from installed packages, deterministically."""

import json

from data_pipeline import demo_corpus


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_builds_three_domains_with_planted_duplicates(tmp_path):
    counts = demo_corpus.build(tmp_path, docs_per_domain=20, max_chars=10**9, dup_fraction=0.1, seed=0)
    assert set(counts) == {"web", "math", "code"}
    for domain in counts:
        records = _read(tmp_path / f"{domain}.jsonl")
        assert len(records) == counts[domain] == 22, domain
        ids = [r["id"] for r in records]
        assert len(set(ids)) == len(ids)
        texts = [r["text"] for r in records]
        assert len(set(texts)) == 20, "two planted exact copies per domain"
        assert all(200 <= len(t) <= 30_000 for t in texts)
    math_text = " ".join(r["text"] for r in _read(tmp_path / "math.jsonl"))
    assert ":math:`" in math_text or ".. math::" in math_text
    assert "def " in " ".join(r["text"] for r in _read(tmp_path / "code.jsonl"))


def test_same_seed_same_corpus(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    demo_corpus.build(a, docs_per_domain=10, max_chars=10**9, dup_fraction=0.2, seed=3)
    demo_corpus.build(b, docs_per_domain=10, max_chars=10**9, dup_fraction=0.2, seed=3)
    for domain in ("web", "math", "code"):
        assert (a / f"{domain}.jsonl").read_bytes() == (b / f"{domain}.jsonl").read_bytes()
