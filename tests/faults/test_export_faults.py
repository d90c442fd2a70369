"""Faults around export: an export never overwrites a folder that holds anything but an
earlier export (the training workdir included), replaces an earlier one only when told,
and a failed export leaves the output as it was, with no half-written files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from common.checks import ConfigError
from pretrain import train as train_lib
from pretrain.convert import export, safetensors_stream
from tests.support.devices import REPO
from tests.support.train import tiny_config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    train_lib.train(tiny_config(path, total_steps=2))
    return path


def _export(workdir, output, **options):
    config = export.default_config()
    config.update(dict(workdir=str(workdir), output=str(output), dtype="float32", **options))
    export.main(config, [])


def test_a_folder_that_holds_anything_is_refused_before_anything_is_written(workdir, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "config.json").write_text("mine")
    with pytest.raises(
        ConfigError, match=r"^config\.output: .* is not the output of an earlier pretrain.export run"
    ):
        _export(workdir, taken, overwrite=True)
    assert (taken / "config.json").read_text() == "mine"
    recorded = (workdir / "config.json").read_bytes()
    with pytest.raises(ConfigError, match=r"^config\.output: .* \(a pretrain.train run wrote it\)"):
        _export(workdir, workdir, overwrite=True)  # the training run's config.json survives
    assert (workdir / "config.json").read_bytes() == recorded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no staging folder either


def test_a_failed_export_leaves_the_output_as_it_was(workdir, tmp_path, monkeypatch):
    real_write = safetensors_stream.write_file

    def write_then_fail(path, *args, **kwargs):
        real_write(path, *args, **kwargs)  # a whole file written, then the disk "fills up"
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors_stream, "write_file", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        _export(workdir, tmp_path / "hf")
    assert list(tmp_path.iterdir()) == []  # no output, no partial folder
    monkeypatch.undo()
    _export(workdir, tmp_path / "hf")
    before = {p.name: p.read_bytes() for p in (tmp_path / "hf").iterdir()}
    monkeypatch.setattr(safetensors_stream, "write_file", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        _export(workdir, tmp_path / "hf", overwrite=True)  # replacing an earlier export fails midway
    assert {p.name: p.read_bytes() for p in (tmp_path / "hf").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_an_export_into_an_empty_folder_completes_it(workdir, tmp_path):
    (tmp_path / "hf").mkdir()
    _export(workdir, tmp_path / "hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
    files = sorted(p.name for p in (tmp_path / "hf").iterdir())
    assert files == [
        "OUTPUTS.json", "README.md", "config.json", "export_info.json", "generation_config.json", "model.safetensors"
    ]  # fmt: skip
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["GemmaForCausalLM"]


def test_an_earlier_export_is_replaced_only_with_overwrite(workdir, tmp_path):
    """Through the command line, as the demo reruns it: `--overwrite` is a switch."""
    command = [sys.executable, "-m", "pretrain.convert.export", f"--workdir={workdir}", "--format=orbax-params",
               f"--output={tmp_path / 'out'}", "--dtype=float32"]  # fmt: skip
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith("export.py: config.output: ")
    assert "holds the output of an earlier pretrain.export run; pass --overwrite" in again.stderr
    (tmp_path / "out" / "tokenizer.model").write_text("mine")  # the user's file: no export wrote it
    replaced = subprocess.run(
        [*command, "--overwrite"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "OUTPUTS.json", "config.json", "export_info.json", "params", "tokenizer.model"
    ]  # fmt: skip
    assert (tmp_path / "out" / "tokenizer.model").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_export_to_gcs_commits_and_replaces_like_a_local_folder(workdir, monkeypatch):
    """gs:// has no folder rename: the staged files move one by one, then the earlier export goes."""
    from common import fs
    from tests.support.fake_gcs import FakeGCS

    with FakeGCS("bkt"):
        fs.write_text("gs://bkt/notes/README.md", "mine")
        with pytest.raises(ConfigError, match="not the output of an earlier pretrain.export run"):
            _export(workdir, "gs://bkt/notes", overwrite=True)
        _export(workdir, "gs://bkt/hf")
        first = fs.read_bytes("gs://bkt/hf/model.safetensors")
        with pytest.raises(ConfigError, match="pass --overwrite"):
            _export(workdir, "gs://bkt/hf")
        monkeypatch.setattr(
            safetensors_stream, "write_file", lambda *a, **k: (_ for _ in ()).throw(OSError("boom"))
        )
        with pytest.raises(OSError, match="boom"):
            _export(workdir, "gs://bkt/hf", overwrite=True)
        monkeypatch.undo()
        assert fs.read_bytes("gs://bkt/hf/model.safetensors") == first
        _export(workdir, "gs://bkt/hf", overwrite=True)
        assert fs.read_bytes("gs://bkt/hf/model.safetensors") == first  # same checkpoint, same bytes
        assert sorted(p.rsplit("/", 1)[-1] for p in fs.walk_files("gs://bkt")) == [
            "OUTPUTS.json", "README.md", "README.md", "config.json", "export_info.json",
            "generation_config.json", "model.safetensors",
        ]  # fmt: skip


def test_the_export_carries_a_model_card_and_export_info(workdir, tmp_path):
    """What a user handed the folder learns from it alone, from the run's own records."""
    _export(workdir, tmp_path / "hf")
    info = json.loads((tmp_path / "hf" / "export_info.json").read_text())
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((workdir / "config.json").read_text())
    assert info["step"] == 2 and info["hf_model_type"] == "gemma" and info["parameters"] > 0
    assert info["tokens"] == 2 * config["data"]["global_batch_size"] * config["data"]["seq_len"]
    assert info["train_loss"] == {"step": 2, "loss": records[-1]["loss"]}
    card = (tmp_path / "hf" / "README.md").read_text()
    assert f"| train loss | {records[-1]['loss']:.4f} (step 2) |" in card
    assert f"{info['parameters']:,}" in card and "AutoModelForCausalLM.from_pretrained" in card
