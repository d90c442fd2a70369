"""The CLI as users run it: --input/--eval_set flags, config overrides, and Beam
options passed through unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.data import prose, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_pipeline.prepare", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_run_with_flags_only(tmp_path):
    question = "A farmer has 17 sheep and all but 9 run away; how many sheep does the farmer have left at the end of the day?"
    docs = [{"id": f"d{i}", "text": prose(i)} for i in range(4)] + [
        {"id": "leak", "text": prose(9, sentences=60) + " " + question}
    ]
    write_jsonl(tmp_path / "web.jsonl", docs)
    write_jsonl(tmp_path / "gsm.jsonl", [{"question": question, "answer": "9"}])
    out = tmp_path / "out"
    result = _cli(
        "--config=configs/data/demo.py", f"--input=web={tmp_path / 'web.jsonl'}", f"--eval_set=gsm={tmp_path / 'gsm.jsonl'}",
        f"--output={out}", "--config.filters.web.gopher_quality.min_words=300",
        "--direct_running_mode=in_memory",  # a Beam option, passed through
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    invariant = stats["invariant"]
    assert invariant["ok"] and invariant["input"] == invariant["kept_plus_rejected_plus_dead_letter"] == 5
    assert invariant["lost_or_duplicated"] == 0
    assert set(stats["sources"]) == {"web:web.jsonl"}
    assert stats["total"]["rejected"] == {
        "gopher_quality": 4,
        "contaminated": 1,
    }  # prose(i) has < 300 words, the leak more
    assert stats["contamination"] == {"gsm": 1}
    # Positive controls: the one gsm item and 20 HumanEval items, each verbatim and perturbed.
    assert (
        "controls caught (recall: verbatim, perturbed): gsm 1.000 (1/1, 1/1), humaneval 1.000 (20/20, 20/20)"
        in (result.stdout)
    )


def test_runs_without_config_and_reads_each_file_by_its_own_format(tmp_path):
    """Base defaults apply without --config; `web=DIR/*` reads .jsonl and .jsonl.gz as JSONL."""
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": f"a{i}", "text": prose(i)} for i in range(3)])
    write_jsonl(
        tmp_path / "in" / "b.jsonl.gz",
        [{"id": f"b{i}", "text": prose(10 + i)} for i in range(2)],
        compress="gz",
    )
    out = tmp_path / "out"
    result = _cli(f"--input=web={tmp_path / 'in'}/*", f"--output={out}", "--direct_running_mode=in_memory")
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total"]["input"] == stats["invariant"]["held_by_files"] == 5
    assert stats["invariant"]["ok"]
    again = _cli(f"--input=web={tmp_path / 'in'}/*", f"--output={out}", "--direct_running_mode=in_memory")
    assert again.returncode == 2 and "pass --overwrite" in again.stderr


def test_a_run_with_decontamination_broken_on_purpose_fails_on_its_controls(tmp_path):
    """Windows longer than every item: the quiz controls go uncaught, the run exits non-zero
    naming the set and commits nothing (HumanEval's items, all code, are still matched whole
    in their expression form, so only quiz is named)."""
    write_jsonl(tmp_path / "web.jsonl", [{"id": "d0", "text": prose(0)}])
    write_jsonl(tmp_path / "quiz.jsonl", [{"question": prose(100 + i)[:300]} for i in range(3)])
    out = tmp_path / "out"
    big = 100_000
    result = _cli(
        f"--input=web={tmp_path / 'web.jsonl'}", f"--eval_set=quiz={tmp_path / 'quiz.jsonl'}", f"--output={out}",
        *(f"--config.decontamination.{f}={big}" for f in ("window_chars", "answer_window_chars", "min_chars")),
        f"--config.decontamination.min_item_chars={big}", "--direct_running_mode=in_memory",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "for eval set(s) quiz 0.000 (0/6)\n" in result.stderr
    assert f"{out} is unchanged; this run's outputs are in {out}/_staging-" in result.stderr
    assert not (out / "stats.json").exists()
