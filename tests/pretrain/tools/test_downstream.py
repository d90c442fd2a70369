"""pretrain.tools.downstream on a tiny trained run: records and summary, the contamination
report, and bad input (ConfigError: one line and exit 2 through common.cli; nothing written).
--help and a missing input through the real command line: tests/common/test_commands.py."""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
import pytest

from common.checks import ConfigError
from mixtures import manifest as manifest_lib
from pretrain import train as train_lib
from pretrain.tools import downstream
from tests.support.eval_files import write_eval_dir
from tests.support.mixtures import make_documents, train_tokenizer, write_prepared
from tests.support.train import tiny_config
from tokenizer.vocab import model_sha256

LEAKED = "Which of these animals is a mammal that lives in the ocean and breathes air? whale"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run whose config names a tokenizer and a prep dir holding ARC item 2."""
    root = tmp_path_factory.mktemp("downstream")
    config = tiny_config(root / "run")  # the default 8 steps: shares compiled programs
    config.data.tokenizer = str(train_tokenizer(root / "tok"))
    train_lib.train(config)
    docs = make_documents("web", 6)
    docs[3] = {**docs[3], "text": f"Some page. {LEAKED} Another sentence follows here."}
    write_prepared(root / "prep", "web", {"train": docs[:5], "validation": docs[5:]})
    config_json = Path(config.workdir) / "config.json"
    saved = json.loads(config_json.read_text())
    saved["data"]["prep_dir"] = str(root / "prep")
    config_json.write_text(json.dumps(saved))
    return root, config.workdir, write_eval_dir(root / "eval")


def args_config(**fields) -> ml_collections.ConfigDict:
    config = downstream.default_config()
    config.update(fields)
    return config


def test_command_scores_tasks_and_reports_contamination(run, capsys):
    root, workdir, eval_dir = run
    out = root / "out"
    fields = dict(workdir=workdir, tasks="arc_easy,gsm8k_bpb,gsm8k", eval_dir=str(eval_dir), num_fewshot=1,
                  output=str(out), row_len=256, batch_rows=2, max_new_tokens=3)  # fmt: skip
    downstream.main(args_config(**fields), [])
    records = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert [(r["task"], r["doc_id"]) for r in records] == [("arc_easy", i) for i in range(4)] + [
        (task, i) for task in ("gsm8k_bpb", "gsm8k") for i in range(3)
    ]
    assert [r["contaminated"] for r in records] == [False, False, True, False] + [False] * 6
    assert all(isinstance(r["generation"], str) and "passed" in r for r in records[-3:])
    summary = json.loads((out / "summary.json").read_text())
    arc = summary["tasks"]["arc_easy"]
    assert arc["contamination"]["items_found"] == 1 and set(arc["contamination"]["clean"]) >= {"acc"}
    assert arc["metrics"]["acc"]["chance"] == pytest.approx((3 * 0.25 + 1 / 3) / 4)
    assert summary["step"] == 8 and set(summary["tasks"]["gsm8k_bpb"]["metrics"]) == {"bpb"}
    assert set(summary["tasks"]["gsm8k"]["metrics"]) == {"exact_match"}
    printed = capsys.readouterr().out
    assert "95% interval" in printed and "arc_easy: 1 of 4 items found in the training data" in printed
    # --overwrite replaces both files; other files in the folder stay
    (out / "NOTES.md").write_text("mine")
    downstream.main(
        args_config(**{**fields, "tasks": "arc_easy", "overwrite": True, "contamination": False}), []
    )
    again = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert len(again) == 4 and (out / "NOTES.md").read_text() == "mine"
    for a, b in zip(again, records):
        assert (
            a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-5) and a["contaminated"] is None
        )


def test_bad_input_stops_before_writing(run, tmp_path):
    root, workdir, eval_dir = run
    out = tmp_path / "out"
    base = dict(workdir=workdir, eval_dir=str(eval_dir), output=str(out), row_len=256, batch_rows=2)
    cases = [
        (dict(tasks="arc_easy,arc_hard"), "config.tasks: unknown task 'arc_hard'"),
        (dict(tasks="math_bpb"), "--eval_set math: "),  # no math/ in this eval dir
        (dict(tasks="arc_easy", batch_rows=0), "config.batch_rows: must be > 0"),
        (dict(tasks="arc_easy", workdir=str(tmp_path / "nowhere")), "a pretrain.train workdir"),
    ]
    for fields, message in cases:
        with pytest.raises(ConfigError, match=message):
            downstream.main(args_config(**{**base, **fields}), [])
        assert not out.exists()
    out.mkdir()
    (out / "items.jsonl").write_text("earlier\n")
    with pytest.raises(ConfigError, match="items.jsonl exists; pass --overwrite"):
        downstream.main(args_config(**base, tasks="arc_easy"), [])
    assert (out / "items.jsonl").read_text() == "earlier\n"


def test_a_tokenizer_that_is_not_the_runs_is_refused(run, tmp_path):
    root, workdir, eval_dir = run
    packed = tmp_path / "packed"
    packed.mkdir()
    manifest_lib.write(str(packed), {"format": manifest_lib.FORMAT, "vocab": {"sha256": "0" * 64}})
    run_config = ml_collections.ConfigDict({"data": {"tokenizer": str(root / "tok/tokenizer.model"),
                                                     "packed_dir": str(packed)}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"config.tokenizer: is not the run's tokenizer \(sha256 "):
        downstream.run_tokenizer(downstream.default_config(), run_config)
    sha = model_sha256(root / "tok/tokenizer.model")
    manifest_lib.write(str(packed), {"format": manifest_lib.FORMAT, "vocab": {"sha256": sha}})
    assert downstream.run_tokenizer(downstream.default_config(), run_config) == str(
        root / "tok/tokenizer.model"
    )
