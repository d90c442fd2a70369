"""The embedded default corpus is built from declared, pinned packages, deterministically,
whatever else is installed."""

import importlib.metadata
import json

import pytest

from common import checks
from data_pipeline import demo_corpus


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


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
    manifest = json.loads((tmp_path / demo_corpus.MANIFEST).read_text())
    assert manifest["files"]["web.jsonl"] == demo_corpus.file_sha256(tmp_path / "web.jsonl")
    assert manifest["sha256"] == demo_corpus.corpus_sha256(manifest["files"])
    assert manifest["distributions"]["numpy"] == importlib.metadata.version("numpy")


def _fake_distribution(site, name="aaa_extra"):
    """A distribution the declared lists do not name: description, a Markdown file, a module
    with formulas; what an extra (test, bench) puts beside the runtime dependencies."""
    long = "The extra package's own words, repeated to pass the length filter. " * 10
    (site / name).mkdir()
    (site / name / "__init__.py").write_text(
        f'"""{long}\n\n.. math:: \\frac{{a}}{{b}} + \\sqrt{{c}}\n"""\n\ndef f():\n    return 1\n' * 3
    )
    (site / name / "README.md").write_text(f"# Extra\n\n{long}\n")
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n{long}\n")
    (info / "RECORD").write_text(f"{name}/__init__.py,,\n{name}/README.md,,\n{info.name}/METADATA,,\n")


def test_extra_distributions_installed_change_no_byte(tmp_path, monkeypatch):
    kwargs = dict(docs_per_domain=12, max_chars=10**9, dup_fraction=0.2, seed=3)
    demo_corpus.build(tmp_path / "runtime_only", **kwargs)
    site = tmp_path / "extra_site"
    site.mkdir()
    _fake_distribution(site)
    monkeypatch.syspath_prepend(str(site))
    assert importlib.metadata.version("aaa_extra") == "1.0"  # visible to anything listing distributions
    demo_corpus.build(tmp_path / "with_extra", **kwargs)
    assert _files(tmp_path / "runtime_only") == _files(tmp_path / "with_extra")


def test_a_missing_or_unpinned_version_stops_before_writing(tmp_path):
    kwargs = dict(docs_per_domain=5, max_chars=10**9, dup_fraction=0.0, seed=0)
    sources = {"web": ["numpy"], "math": ["numpy"], "code": ["absl-py"]}
    with pytest.raises(checks.ConfigError, match=r"config.code_distributions: no-such-dist is not pinned"):
        demo_corpus.build(tmp_path / "a", **kwargs, distributions={**sources, "code": ["no-such-dist"]})
    pins = tmp_path / "constraints.txt"
    pins.write_text("numpy==0.0.1\nabsl-py==" + importlib.metadata.version("absl-py") + "\nno_such_dist==1\n")
    with pytest.raises(
        checks.ConfigError, match=r"config.web_distributions: numpy is installed at .*pins 0.0.1"
    ):
        demo_corpus.build(tmp_path / "b", **kwargs, distributions=sources, constraints=str(pins))
    with pytest.raises(
        checks.ConfigError, match=r"config.code_distributions: no-such-dist==1 is not installed"
    ):
        demo_corpus.build(
            tmp_path / "c",
            **kwargs,
            distributions={**sources, "web": ["absl-py"], "math": [], "code": ["no-such-dist"]},
            constraints=str(pins),
        )
    assert not any((tmp_path / d).exists() for d in "abc")
