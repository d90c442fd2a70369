"""The I/O layer: local paths become absolute, URIs keep their scheme, globbing works on both."""

import os

import pytest

from common import fs
from data_pipeline.readers.sources import match_files


def test_resolve_makes_local_paths_absolute_and_keeps_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert fs.resolve("runs/demo") == str(tmp_path / "runs" / "demo")
    assert fs.resolve("gs://bucket/prep/") == "gs://bucket/prep/"
    with pytest.raises(ValueError):
        fs.resolve("")


def test_join_never_mangles_a_scheme():
    assert fs.join("gs://bucket/prep", "web", "train") == "gs://bucket/prep/web/train"
    assert fs.join("gs://bucket/prep/", "/web") == "gs://bucket/prep/web"
    assert fs.basename("gs://bucket/prep/web/") == "web"
    assert fs.dirname("gs://bucket/prep/web") == "gs://bucket/prep"


def test_write_read_glob_walk_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs.write_text("a/b/one.jsonl", "1\n")
    fs.write_text("a/two.jsonl", "2\n")
    fs.write_bytes("a/b/c/three.txt", b"3")
    assert fs.read_text("a/b/one.jsonl") == "1\n"
    assert fs.glob("a/*.jsonl") == [str(tmp_path / "a" / "two.jsonl")]
    assert fs.glob("a/**/*.jsonl") == sorted(str(tmp_path / p) for p in ("a/two.jsonl", "a/b/one.jsonl"))
    assert fs.glob("a/b") == [str(tmp_path / "a" / "b")] and fs.glob("missing/*") == []
    assert [os.path.relpath(p, tmp_path) for p in fs.walk_files("a")] == [
        "a/b/c/three.txt",
        "a/b/one.jsonl",
        "a/two.jsonl",
    ]
    with fs.open("a/log.txt", "a") as f:
        f.write("x")
    with fs.open("a/log.txt", "a") as f:
        f.write("y")
    assert fs.read_text("a/log.txt") == "xy" and fs.isfile("a/log.txt") and fs.isdir("a")
    fs.rmtree("a/b")
    assert not fs.exists("a/b") and fs.listdir("a") == ["log.txt", "two.jsonl"]


def test_read_jsonl_streams_values_of_plain_and_gzipped_files_and_names_a_bad_line(tmp_path):
    import gzip

    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n  \n{"text": "two"}\r\n')
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write('{"text": "three"}\n[1, 2]\n')
    assert list(fs.read_jsonl(tmp_path / "a.jsonl")) == [{"text": "one"}, {"text": "two"}]
    assert list(fs.read_jsonl(str(tmp_path / "b.jsonl.gz"))) == [{"text": "three"}, [1, 2]]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n\n{"text": \n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 3: "):
        list(fs.read_jsonl(tmp_path / "bad.jsonl"))


def test_replace_overwrites_a_file_where_rename_refuses(tmp_path):
    fs.write_text(tmp_path / "a", "old")
    fs.write_text(tmp_path / "a.partial", "new")
    with pytest.raises(FileExistsError):
        fs.rename(tmp_path / "a.partial", tmp_path / "a")
    fs.replace(tmp_path / "a.partial", tmp_path / "a")
    assert fs.read_text(tmp_path / "a") == "new" and fs.listdir(tmp_path) == ["a"]


def test_a_path_that_exists_is_that_file_even_when_its_name_reads_as_a_pattern(tmp_path):
    """`web[1].jsonl` is a file here, not the pattern matching `web1.jsonl` (which exists too)."""
    literal, lookalike = tmp_path / "web[1].jsonl", tmp_path / "web1.jsonl"
    literal.write_text('{"text": "the file asked for"}\n')
    lookalike.write_text('{"text": "another file"}\n')
    assert fs.glob(str(literal)) == [str(literal)]
    assert match_files(str(literal)) == [str(literal)]
    assert fs.glob(str(tmp_path / "web[[]1].jsonl")) == [str(literal)]  # the pattern for a literal [
    assert fs.glob(str(tmp_path / "web[0-9].jsonl")) == [str(lookalike)]  # a pattern that is no path
    assert "[[] matches a literal [" in fs.PATTERN_HELP
