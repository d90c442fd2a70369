"""Corrupt and foreign state, as a careless or unlucky user leaves it: every JSON state file
cut short, a tokenizer cut short or swapped for another, every checkpoint's metadata
garbled, non-finite optimiser values, gs:// without credentials. Each is one line naming
the file or field (a ConfigError: exit 2 through common.cli), never a traceback, and
nothing is written or moved."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from common import fs, outputs
from common.checks import ConfigError
from configs.mixtures import base as mixture_configs
from mixtures import manifest as manifest_lib
from mixtures import pack
from pretrain import checkpoint, optim
from pretrain import train as train_lib
from pretrain.convert import export
from pretrain.tools import evaluate
from tests.support.mixtures import PACK_SEQ_LEN, demo_mixture, train_tokenizer
from tests.support.train import tiny_config
from tokenizer import model_file as model_file_lib
from tokenizer import vocab as vocab_lib


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tokenized_run(tmp_path_factory) -> Path:
    """A tiny synthetic run (the default 8 steps: shares compiled programs) with a 120-piece tokenizer."""
    root = tmp_path_factory.mktemp("state_faults")
    config = tiny_config(root / "run")
    config.data.tokenizer = str(train_tokenizer(root / "tok"))
    train_lib.train(config)
    return root


@pytest.fixture
def run(tokenized_run, tmp_path) -> Path:
    """This test's own copy of the run, its config.json pointing at its own tokenizer copy."""
    shutil.copytree(tokenized_run / "tok", tmp_path / "tok")
    workdir = Path(shutil.copytree(tokenized_run / "run", tmp_path / "run"))
    recorded = json.loads((workdir / "config.json").read_text())
    recorded["data"]["tokenizer"] = str(tmp_path / "tok" / "tokenizer.model")
    (workdir / "config.json").write_text(json.dumps(recorded))
    return workdir


def _docs(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": "web page news site people"}) + "\n")
    return path


def _export(workdir: Path, output: Path, **options) -> None:
    config = export.default_config()
    config.update(dict(workdir=str(workdir), output=str(output), dtype="float32", **options))
    export.main(config, [])


# ----------------------------------------------------------------------------- the tokenizer


def test_export_and_evaluate_refuse_a_tokenizer_swapped_in_at_the_runs_path(run, tmp_path):
    """Another tokenizer (here smaller: an export would cut the embedding to it, evaluate give
    another perplexity) put where config.json points: refused, naming both hashes."""
    tokenizer = Path(json.loads((run / "config.json").read_text())["data"]["tokenizer"])
    trained_with = json.loads((run / "config.json").read_text())["data"]["tokenizer_sha256"]
    assert trained_with == fs.sha256(tokenizer)  # the trainer recorded it
    other = train_tokenizer(tmp_path / "other", vocab_size=100)
    shutil.copy(other, tokenizer)
    swapped = fs.sha256(tokenizer)
    message = rf"^config\.tokenizer: is not the tokenizer the run trained with \(sha256 {swapped}; .*{trained_with}\)"
    with pytest.raises(ConfigError, match=message):
        evaluate.evaluate(run, _docs(tmp_path))
    with pytest.raises(ConfigError, match=message):
        _export(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_a_tokenizer_larger_than_the_embedding_is_refused_for_a_run_without_a_record(run, tmp_path):
    """A run whose config.json predates the recorded hash: the size check still holds."""
    recorded = json.loads((run / "config.json").read_text())
    del recorded["data"]["tokenizer_sha256"]
    (run / "config.json").write_text(json.dumps(recorded))
    larger = train_tokenizer(tmp_path / "larger", vocab_size=300)  # the model has 256 rows
    message = r"^config\.tokenizer: has 300 pieces, more than the model's 256 embedding rows"
    with pytest.raises(ConfigError, match=message):
        evaluate.evaluate(run, _docs(tmp_path), tokenizer=str(larger))
    with pytest.raises(ConfigError, match=message):
        _export(run, tmp_path / "hf", tokenizer=str(larger))
    assert not (tmp_path / "hf").exists()


def test_a_truncated_tokenizer_is_one_line_naming_it(run, tmp_path):
    tokenizer = tmp_path / "tok" / "tokenizer.model"
    _truncate(tokenizer)
    with pytest.raises(vocab_lib.UnreadableTokenizer, match=rf"^{tokenizer}: not a SentencePiece model \("):
        vocab_lib.load_vocabulary(tokenizer)
    with pytest.raises(ConfigError, match=r"^config\.tokenizer: is not the tokenizer the run trained with"):
        evaluate.evaluate(run, _docs(tmp_path))


# ----------------------------------------------------------------------------- JSON state files


def test_a_truncated_config_json_stops_resume_export_and_evaluate_in_one_line(run, tmp_path):
    _truncate(run / "config.json")
    before = _snapshot(run)
    line = rf"^{run / 'config.json'}: not a valid JSON state file \(truncated or damaged: .*\); restore"
    with pytest.raises(fs.DamagedState, match=line):
        train_lib.train(tiny_config(run, total_steps=12))
    with pytest.raises(fs.DamagedState, match=line):
        evaluate.evaluate(run, _docs(tmp_path))
    with pytest.raises(fs.DamagedState, match=line):
        _export(run, tmp_path / "hf")
    assert _snapshot(run) == before and not (tmp_path / "hf").exists()


def test_garbage_metadata_in_every_checkpoint_is_one_line_and_nothing_moves(run):
    for step in (4, 8):
        (run / "checkpoints" / str(step) / "state" / "_METADATA").write_text('{"tree_metadata": {')
    before = _snapshot(run)
    with pytest.raises(
        checkpoint.UnrestorableCheckpoint,
        match=rf"^no checkpoint in {run / 'checkpoints'} restores \(step 8: .*; step 4: .*\); nothing was moved",
    ):
        train_lib.train(tiny_config(run, total_steps=8))
    with pytest.raises(
        checkpoint.UnrestorableCheckpoint,
        match=r"choose another step \(the run holds no other; damaged too: \[4\]\)$",
    ):
        checkpoint.restore_params(run)
    assert _snapshot(run) == before


@pytest.mark.parametrize("content", ["", '{"format": "gemma-pretrain packed rows v1", "splits": {', "[1, 2]"])
def test_a_damaged_manifest_is_one_line(tmp_path, content):
    (tmp_path / manifest_lib.FILE_NAME).write_text(content)
    with pytest.raises(
        fs.DamagedState, match=rf"^{tmp_path / manifest_lib.FILE_NAME}: not a valid JSON state file"
    ):
        manifest_lib.read(str(tmp_path))


def test_a_truncated_output_record_is_one_line(tmp_path):
    """OUTPUTS.json, the record of every folder writer (prepare, pack, export, tokenizer.train)."""
    (tmp_path / "web").mkdir()
    (tmp_path / outputs.RECORD).write_text('{"format": 1, "command": "data_pipeline.prepare", "files": ["web')
    with pytest.raises(fs.DamagedState, match=rf"^{tmp_path / outputs.RECORD}: not a valid JSON state file"):
        outputs.read_record(str(tmp_path))


# ----------------------------------------------------------------------------- values and paths


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1e-3, 0.0])
def test_a_learning_rate_that_is_not_a_positive_finite_number_is_refused(value):
    config = tiny_config("unused")
    config.optim.peak_lr = value
    with pytest.raises(ConfigError, match=r"^config\.optim\.peak_lr: must be a finite number > 0, got"):
        optim.validate(config.optim, config.train.total_steps)


@pytest.mark.parametrize("weight", [-0.1, float("nan"), float("inf")])
def test_a_mixture_weight_that_is_not_finite_and_non_negative_stops_the_pack_at_start(tmp_path, weight):
    """mixtures.pack never built the schedule: it packed a mixture every reader then refused."""
    config = demo_mixture(PACK_SEQ_LEN)
    config.pack = mixture_configs.pack_config()
    config.pack.update(
        dict(prep_dir=str(tmp_path), vocab_path=str(tmp_path / "v"), output=str(tmp_path / "P"))
    )
    config.stages[0]["weights"].update({"web": weight, "code": 0.85})
    with pytest.raises(
        ConfigError, match=r"^config\.stages\[0\]\.weights\['web'\]: must be a finite number >= 0"
    ):
        pack.validate(config)
    assert not (tmp_path / "P").exists()


@pytest.mark.parametrize("field", ["end_lr_ratio", "weight_decay", "clip_norm", "b1", "b2", "eps"])
def test_every_optimiser_number_must_be_finite(field):
    config = tiny_config("unused")
    config.optim[field] = float("nan")
    with pytest.raises(ConfigError, match=rf"^config\.optim\.{field}: must be"):
        optim.validate(config.optim, config.train.total_steps)


def test_gs_without_credentials_fails_at_once_in_one_line(tmp_path, monkeypatch):
    for name in (*fs._CREDENTIAL_ENV, "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # nothing answers: not a Google Cloud VM
    monkeypatch.setattr(fs, "_gcs_credentials_found", False)
    start = time.perf_counter()
    with pytest.raises(fs.NoCredentials, match=r"^gs://bucket/run/config\.json: no Google Cloud credentials"):
        fs.exists("gs://bucket/run/config.json")
    assert time.perf_counter() - start < 3


def test_evaluate_scores_a_lone_surrogate_as_the_replacement_character_and_counts_it(run, tmp_path):
    """A document holding `"\\ud83d"` crashed the tokenizer; it is scored with U+FFFD in its place."""
    broken, replaced = tmp_path / "broken.jsonl", tmp_path / "replaced.jsonl"
    broken.write_text('{"text": "half an emoji \\ud83d in a page"}\n{"text": "a page"}\n')
    replaced.write_text(json.dumps({"text": "half an emoji \ufffd in a page"}) + '\n{"text": "a page"}\n')
    result = evaluate.evaluate(run, broken)
    assert result["documents_with_lone_surrogates"] == 1
    expected = evaluate.evaluate(run, replaced)
    assert "documents_with_lone_surrogates" not in expected
    assert (result["loss"], result["tokens"]) == (expected["loss"], expected["tokens"])


# ----------------------------------------------------------------------------- more attacks


def test_an_empty_tokenizer_file_is_one_line_naming_it(tmp_path):
    empty = tmp_path / "tokenizer.model"
    empty.write_bytes(b"")
    with pytest.raises(vocab_lib.UnreadableTokenizer, match=rf"^{empty}: not a SentencePiece model"):
        vocab_lib.load_vocabulary(empty)


@pytest.mark.parametrize("content", ["[]", '"a string"', "null"])
def test_a_config_json_that_is_json_but_not_an_object_is_one_line(run, content):
    (run / "config.json").write_text(content)
    with pytest.raises(
        fs.DamagedState, match=r"config\.json: not a valid JSON state file \(a JSON \w+, not dict\)"
    ):
        checkpoint.restore_params(run)


@pytest.mark.parametrize("tail", [b'{"step": 9, "loss": 1.', b"\xff\xfe\x00garbage"])
def test_a_torn_or_garbled_last_metrics_line_is_dropped_at_resume(run, tail):
    """A kill mid-append (or a bad sector) leaves half a line: the resume drops it, keeps the rest."""
    metrics = run / "metrics.jsonl"
    good = metrics.read_bytes()
    metrics.write_bytes(good + tail)
    summary = train_lib.train(tiny_config(run, total_steps=8))
    assert summary["resumed_from"] == 8
    assert metrics.read_bytes() == good


def test_a_sigterm_before_the_first_step_is_noted_and_the_old_handler_comes_back():
    """On one host the notice is the run's own handler, installed only while it trains."""
    before = signal.getsignal(signal.SIGTERM)
    with train_lib.PreemptionNotice() as notice:
        assert not notice(0)
        os.kill(os.getpid(), signal.SIGTERM)
        assert notice(1) and notice(2)  # noted once, answered at every later step
    assert signal.getsignal(signal.SIGTERM) is before


def test_export_with_a_tokenizer_that_is_not_there_is_one_line(run, tmp_path):
    with pytest.raises(
        model_file_lib.MissingTokenizer, match=r"^no SentencePiece tokenizer.model at .*nowhere"
    ):
        _export(run, tmp_path / "hf", tokenizer=str(tmp_path / "nowhere"))
    assert not (tmp_path / "hf").exists()
