"""studies.study_corpus: the benches' corpus from declared shared-data files, hashed, and a
changed file refused (a stand-in shared folder: no real shared data needed)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from common.checks import ConfigError
from studies import inputs, study_corpus
from tests.studies.test_inputs import _config

PAGE = "A page about gardens and the people who keep them, written for the web. " * 5


def fake_shared(root: Path) -> Path:
    """Every file SOURCES declares, a few documents each, in its format."""
    for sources in study_corpus.SOURCES.values():
        for source, _ in sources:
            path = root / source
            if source.startswith("math/"):
                path.mkdir(parents=True)
                sections = [
                    f"\\section{{S{i}}} {source}: " + "A group is a set with an operation. " * 8
                    for i in range(2)
                ]
                (path / "intro.tex").write_text("\\chapter{Intro}\n" + "\n".join(sections))
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if source.endswith("code_sample.jsonl"):
                rows = [
                    {
                        "repo": repo,
                        "path": f"f{i}.py",
                        "text": f"# {repo}\n" + f"def f{i}():\n    return {i}\n" * 20,
                    }
                    for repo in ("a/one", "b/two")
                    for i in range(3)
                ]
            elif "trafilatura" in source:
                rows = [
                    {"id": f"p{i}", "html_lang": lang, "text": f"{lang} {i} {PAGE}"}
                    for i, lang in enumerate("en de en".split())
                ]
            elif source.endswith(".txt"):
                path.write_text("".join(f" = Article {i} = \n\n {PAGE}{PAGE}\n" for i in range(2)))
                continue
            else:
                rows = [{"text": f"{source} {i} {PAGE}"} for i in range(2)]
            lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
            path.write_bytes(gzip.compress(lines, mtime=0) if source.endswith(".gz") else lines)
    return root


def test_corpus_comes_from_the_declared_files_the_same_every_time(tmp_path):
    shared = fake_shared(tmp_path / "shared")
    counts = study_corpus.build(str(shared), str(tmp_path / "a"))
    # web: 7 files x 2 pages, trafilatura's 2 English pages, 2 articles; math: 2 sections x 2 books
    assert counts == {"web": 18, "math": 4, "code": 6}
    study_corpus.build(str(shared), str(tmp_path / "b"))
    for name in ("web.jsonl", "math.jsonl", "code.jsonl", "corpus.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    manifest = json.loads((tmp_path / "a" / "corpus.json").read_text())
    assert not any(name.startswith("eval/") for name in manifest["inputs"])
    web = [json.loads(line) for line in (tmp_path / "a" / "web.jsonl").read_text().splitlines()]
    assert not any(r["text"].startswith("de ") for r in web)  # trafilatura: English pages only
    code = [json.loads(line)["origin"] for line in (tmp_path / "a" / "code.jsonl").read_text().splitlines()]
    assert [c.split("/")[0] for c in code[:4]] == ["a", "b", "a", "b"]  # repositories in turn
    hashes = study_corpus.verify(str(tmp_path / "a"))
    assert set(hashes) == {f"source/{s}" for sources in study_corpus.SOURCES.values() for s, _ in sources}


def test_a_changed_or_missing_shared_file_is_refused_naming_it(tmp_path):
    shared = fake_shared(tmp_path / "shared")
    corpus = tmp_path / "corpus"
    study_corpus.build(str(shared), str(corpus))
    (tmp_path / "prep").mkdir()  # the corpus alone: no prepared data, packs or tokenizer yet
    heldout = [{"source": "quiz", "id": "0", "text": "question answer"}]
    before = inputs.input_hashes(_config(tmp_path / "prep", "", "", corpus), heldout)
    assert "source/math/hott-book" in before
    tex = shared / "math" / "hott-book" / "intro.tex"
    tex.write_text(tex.read_text() + "% an edit\n")
    with pytest.raises(ConfigError, match=r"config.corpus_dir: .* was built from .*hott-book/intro.tex"):
        inputs.input_hashes(_config(tmp_path / "prep", "", "", corpus), heldout)
    rebuilt = tmp_path / "rebuilt"  # the same paths, rebuilt on the edited file: another study's inputs
    study_corpus.build(str(shared), str(rebuilt))
    after = inputs.input_hashes(_config(tmp_path / "prep", "", "", rebuilt), heldout)
    with pytest.raises(ConfigError, match=r"planned on other inputs \(corpus .*source/math/hott-book"):
        inputs.check_same(before, after, "OUT")
    (shared / "code" / "code_sample.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"config.shared_data: the study corpus needs .*code_sample.jsonl"):
        study_corpus.build(str(shared), str(tmp_path / "c"))
