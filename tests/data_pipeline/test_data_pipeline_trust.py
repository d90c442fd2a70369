"""What a user must be able to trust about the data job: every configured stage runs or the
job fails, it never deletes what it did not create, and a read error is never a silent loss."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import fs  # noqa: E402
from common.checks import ConfigError  # noqa: E402
from data_pipeline import prepare, stats
from data_pipeline.readers import sources
from data_pipeline.writers import outputs  # noqa: E402
from tests.support.data import prepare_config, prose, write_jsonl  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ no silent skipping


def test_a_stage_that_cannot_be_imported_fails_the_job(tmp_path):
    """Before: `except ImportError` around the stages wrote never-deduplicated data, exit 0."""
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": f"d{i}", "text": prose(i)} for i in range(3)])
    code = (
        "import sys; sys.modules['data_pipeline.dedup.near'] = None\n"
        "from configs.data import base\nfrom data_pipeline import prepare\n"
        f"c = base.getprepare_config(); c.inputs = ['web={tmp_path / 'in' / '*'}']; c.output_dir = '{tmp_path / 'out'}'\n"
        "c.runner.direct_running_mode = 'in_memory'\nprepare.prepare(c)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode != 0
    assert "near_dedup" in result.stderr
    assert not (tmp_path / "out" / "stats.json").exists()


def test_eval_rows_without_text_fail_the_job_before_it_runs(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "d", "text": prose(1)}])
    write_jsonl(tmp_path / "ev.jsonl", [{"query": "What is two plus two?", "label": 4}])
    config = prepare_config([f"web={tmp_path / 'in' / '*'}"], tmp_path / "out")
    config.eval_sets = [f"ev={tmp_path / 'ev.jsonl'}"]
    with pytest.raises(ValueError, match=r"ev.jsonl has no text field; fields seen: \['label', 'query'\]"):
        prepare.prepare(config)


# ------------------------------------------------------------------ never delete what it did not create


def test_refuses_an_output_folder_holding_the_inputs(tmp_path):
    """Before: OUT/web/ (here: the raw inputs) was deleted, then the job 'succeeded' on nothing."""
    raw = tmp_path / "out" / "web" / "raw.jsonl"
    write_jsonl(raw, [{"id": f"d{i}", "text": prose(i)} for i in range(3)])
    config = prepare_config([f"web={raw}"], tmp_path / "out")
    with pytest.raises(ConfigError, match="is not empty; pass --overwrite"):
        prepare.prepare(config)
    config.overwrite = True
    with pytest.raises(ConfigError, match="has no PREPARE_OUTPUTS.json"):
        prepare.prepare(config)
    assert raw.exists() and len(raw.read_text().splitlines()) == 3
    assert sorted(os.listdir(tmp_path / "out")) == ["web"]


def test_overwrite_replaces_only_the_jobs_own_outputs(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": f"d{i}", "text": prose(i)} for i in range(4)])
    out = tmp_path / "out"
    config = prepare_config([f"web={tmp_path / 'in' / 'a.jsonl'}"], out)
    first = prepare.prepare(config)
    assert first["invariant"]["ok"] and first["total"]["kept"] == 4
    marker = json.loads((out / outputs.MARKER).read_text())
    assert set(marker["outputs"]) == {
        "web",
        "rejected",
        "dead_letter",
        "contamination.jsonl",
        "contamination_report.md",
        "stats.json",
    }
    (out / "notes.txt").write_text("mine")  # the user's file, next to the outputs
    (out / "web" / "stale-from-an-old-run").write_text("x")
    config.overwrite = True
    second = prepare.prepare(config)
    assert second["total"]["kept"] == 4
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "web" / "stale-from-an-old-run").exists()
    assert not [n for n in os.listdir(out) if n.startswith(outputs.STAGING_PREFIX)]
    assert json.loads((out / "stats.json").read_text())["total"]["kept"] == 4


def test_commit_on_a_uri_moves_file_by_file(tmp_path, monkeypatch):
    """Object stores have no directory rename: on a URI the commit moves each file."""
    out, staging = str(tmp_path / "out"), str(tmp_path / "out" / "_staging-x")
    for name in ("web/a", "web/sub/b", "stats.json"):
        fs.write_text(fs.join(staging, name), name)
    fs.write_text(fs.join(staging, outputs.MARKER), json.dumps({"job": outputs.JOB, "outputs": []}))
    moved = []
    monkeypatch.setattr(outputs.fs, "is_uri", lambda path: True)
    real_rename = fs.rename
    monkeypatch.setattr(outputs.fs, "rename", lambda a, b: (moved.append(a), real_rename(a, b)))
    names = outputs.commit(out, staging, [])
    assert sorted(names) == ["stats.json", "web"] and len(moved) == 3
    assert fs.read_text(fs.join(out, "web", "sub", "b")) == "web/sub/b" and not fs.exists(staging)


# ------------------------------------------------------------------ read errors


def _read(path: Path, spec: sources.InputSpec | None = None) -> tuple[list, list, list, dict]:
    spec = spec or sources.InputSpec(domain="web", glob=str(path.parent / "*"))
    fn = sources.ReadFileFn(spec, max_doc_bytes=1 << 20, max_raw_bytes=256)
    kept, dead, rejected, counts = [], [], [], {}
    for out in fn.process(str(path)):
        tag = getattr(out, "tag", None)
        value = getattr(out, "value", out)
        if tag == sources.FILE_COUNTS:
            counts = value
        elif tag is None:
            kept.append(value)
        elif tag == sources.DEAD_LETTER:
            dead.append(value)
        else:
            rejected.append(value)
    return kept, dead, rejected, counts


def test_transient_io_error_raises_so_the_runner_retries(tmp_path, monkeypatch):
    path = tmp_path / "a.jsonl"
    write_jsonl(path, [{"id": f"d{i}", "text": "x" * 100} for i in range(50)])

    class Flaky(io.BytesIO):
        """A connection that drops after the first 500 bytes."""

        def readinto(self, buffer):
            if self.tell() > 500:
                raise OSError(5, "Input/output error")
            return super().readinto(memoryview(buffer)[:256])

        def read(self, size=-1):
            if self.tell() > 500:
                raise OSError(5, "Input/output error")
            return super().read(256 if size is None or size < 0 else min(size, 256))

        def readline(self, size=-1):
            if self.tell() > 500:
                raise OSError(5, "Input/output error")
            return super().readline(size)

    monkeypatch.setattr(fs, "open", lambda p, mode="r": Flaky(path.read_bytes()))
    with pytest.raises(OSError, match="Input/output error"):
        _read(path)


def test_corrupt_stream_is_one_dead_letter_and_the_file_is_reported_incomplete(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    data = gzip.compress(
        "".join(json.dumps({"id": f"d{i}", "text": prose(i)}) + "\n" for i in range(40)).encode()
    )
    path.write_bytes(data[: len(data) // 2])  # truncated mid-stream
    kept, dead, _, counts = _read(path)
    assert 0 < len(kept) < 40
    assert (
        len(dead) == 1 and dead[0]["error"].startswith("corrupt_stream") and "unreadable" in dead[0]["error"]
    )
    assert counts == {
        "source": "web:*",
        "path": str(path),
        "held": len(kept) + 1,
        "complete": False,
        "error": "EOFError: Compressed file ended before the end-of-stream marker was reached",
    }
    entry = [
        ((stats.HELD, "web:*", ""), counts["held"]),
        ((stats.INCOMPLETE_FILES, "web:*", ""), 1),
        ((stats.INPUT, "web:*", ""), len(kept) + 1),
        ((stats.KEPT, "web:*", ""), len(kept)),
        ((stats.DEAD_LETTER, "web:*", ""), 1),
    ]
    result = stats.assemble(entry, {"web:*": "web"}, [], {}, {stats.INCOMPLETE_FILES: [counts]})
    assert result["invariant"]["ok"]  # every record is accounted for; the broken file is a finding
    failures, _ = stats.findings(result, accept_incomplete_files=False)
    assert failures == [
        f"1 input file could not be read to the end: {path} ({counts['error']}); the unreadable rest of "
        "each is one dead letter in dead_letter/; pass --accept_incomplete_files "
        "(config.read.accept_incomplete_files) to keep the rest"
    ]
    assert stats.findings(result, accept_incomplete_files=True) == ([], [failures[0].rsplit("; pass", 1)[0]])


def test_a_bad_line_is_one_dead_letter_and_the_rest_is_read(tmp_path):
    path = tmp_path / "a.jsonl"
    write_jsonl(
        path, [{"id": "a", "text": "one"}, b'{"id": "b", "text": "unterminated', {"id": "c", "text": "three"}]
    )
    kept, dead, _, counts = _read(path)
    assert [r["id"] for r in kept] == ["a", "c"] and [d["id"] for d in dead] == ["a.jsonl:1"]
    assert counts["held"] == 3 and counts["complete"]


def test_format_is_decided_per_file_not_from_the_glob(tmp_path):
    """Before: `web=DIR/*` read every .jsonl(.gz) file as ONE plain-text document."""
    write_jsonl(tmp_path / "a.jsonl", [{"id": "a1", "text": "one"}, {"id": "a2", "text": "two"}])
    write_jsonl(tmp_path / "b.jsonl.gz", [{"id": "b1", "text": "three"}], compress="gz")
    (tmp_path / "c.txt").write_text("a plain text page")
    (tmp_path / "d.parquet").write_bytes(b'{"id": "not parquet"}\n')
    spec = sources.InputSpec(domain="web", glob=str(tmp_path / "*"))
    assert spec.format == "auto"
    got = {p.name: _read(p, spec) for p in sorted(tmp_path.iterdir())}
    assert [r["id"] for r in got["a.jsonl"][0]] == ["a1", "a2"]
    assert [r["text"] for r in got["b.jsonl.gz"][0]] == ["three"]
    assert [r["text"] for r in got["c.txt"][0]] == ["a plain text page"]
    assert got["d.parquet"][0] == [] and got["d.parquet"][1][0]["error"].startswith("not_parquet")


def test_what_a_failed_run_left_behind_does_not_block_the_next(tmp_path):
    out = str(tmp_path / "out")
    failed = outputs.new_staging(out, "failed")  # a run that died before its commit
    fs.write_text(fs.join(failed, "web", "part"), "half")
    assert outputs.check_output_dir(out, overwrite=False) == []
    staging = outputs.new_staging(out, "next")
    fs.write_text(fs.join(staging, "stats.json"), "{}")
    assert outputs.commit(out, staging, []) == ["stats.json"]
    assert sorted(os.listdir(out)) == [outputs.MARKER, failed.rsplit("/", 1)[1], "stats.json"]
    (tmp_path / "out" / "mine.txt").write_text("user file")
    with pytest.raises(ConfigError, match="not empty"):
        outputs.check_output_dir(out, overwrite=False)
    assert outputs.check_output_dir(out, overwrite=True) == ["stats.json"]
