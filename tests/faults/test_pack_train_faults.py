"""Faults around packing and training: a failed, killed or concurrent pack leaves its output
as it was; a refused resume writes nothing; a damaged latest checkpoint is set aside (never
deleted) and the run resumes from the one before, exactly; the wrong tokenizer is refused."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grain
import jax
import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from common import outputs, run_lock
from common.checks import ConfigError
from mixtures import manifest as manifest_lib
from mixtures import stream as stream_lib
from pretrain import checkpoint
from pretrain import train as train_lib
from pretrain.metrics import read_metrics
from tests.support.mixtures import build_prepared, demo_mixture, write_mixture_config
from tests.support.train import config_file, tiny_config

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}


# ----------------------------------------------------------------------------- packing


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """(prep_dir, vocab, config file, packed dir) of a small pack (one split)."""
    root = tmp_path_factory.mktemp("faults_pack")
    prep_dir, vocab = build_prepared(root, n_docs=24, validation_docs=4)
    config = write_mixture_config(root / "mixture_config.py", seq_len=32)
    out = root / "packed"
    result = _pack(config, prep_dir, vocab, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return prep_dir, vocab, config, out


def _pack_args(config: Path, prep_dir: Path, vocab: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mixtures.pack",
        f"--config={config}",
        f"--prep_dir={prep_dir}",
        f"--tokenizer={vocab}",
        f"--output={out}",
        "--config.pack.splits=('train',)",
        *extra,
    ]


def _pack(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        _pack_args(*args, **kwargs), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
    )


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _user_copy(packed_dir: Path, target: Path) -> Path:
    """A copy of a pack holding files a user put there too."""
    shutil.copytree(packed_dir, target)
    (target / "NOTES.txt").write_text("keep\n")
    (target / "train" / "web" / "mine.txt").write_text("mine\n")
    return target


def test_failed_pack_leaves_the_output_as_it_was(packed, tmp_path):
    prep_dir, vocab, config, packed_dir = packed
    out = _user_copy(packed_dir, tmp_path / "P")
    before = _snapshot(out)
    broken = tmp_path / "PB"
    shutil.copytree(prep_dir, broken)
    shard = next((broken / "web").glob("web-train.tfrecord-00000-of-*"))
    os.truncate(shard, shard.stat().st_size // 2)
    result = _pack(config, broken, vocab, out, "--overwrite")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"pack.py: prepared data unreadable: {shard} (")
    assert _snapshot(out) == before  # no staging folder left either


def test_a_damaged_prepared_file_stops_the_pack_with_one_line_naming_it(packed, tmp_path):
    """TensorFlow's DataLossError names a byte offset, not the file; the pack names the file."""
    prep_dir, vocab, config, _ = packed
    copy = Path(shutil.copytree(prep_dir, tmp_path / "prep"))
    damaged = max((copy / "web").glob("*-train.tfrecord-*"), key=lambda p: p.stat().st_size)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    damaged.write_bytes(bytes(data))
    result = _pack(config, copy, vocab, tmp_path / "P")
    assert result.returncode == 2, result.stderr[-3000:]
    assert (
        result.stderr.strip().splitlines()[-1].startswith(f"pack.py: prepared data unreadable: {damaged} (")
    )
    assert result.stderr.strip().endswith("restore the file, or prepare the data again")
    assert not (tmp_path / "P").exists()


def test_refuses_a_pack_without_overwrite_and_replaces_only_what_its_manifest_names(packed, tmp_path):
    prep_dir, vocab, config, packed_dir = packed
    out = _user_copy(packed_dir, tmp_path / "P")
    before = _snapshot(out)
    refused = _pack(config, prep_dir, vocab, out)
    assert refused.returncode == 2
    line = refused.stderr.strip().splitlines()[-1]  # after TensorFlow's start-up noise
    assert (
        line.startswith("pack.py: config.pack.output: ")
        and "earlier mixtures.pack run; pass --overwrite" in line
    )
    assert _snapshot(out) == before

    replaced = _pack(config, prep_dir, vocab, out, "--overwrite", "--config.seed=7")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    new = manifest_lib.read(str(out))
    assert new["seed"] == 7
    after = _snapshot(out)
    assert after["NOTES.txt"] == b"keep\n" and after["train/web/mine.txt"] == b"mine\n"
    assert set(after) == {
        "NOTES.txt", "train/web/mine.txt", outputs.RECORD, manifest_lib.FILE_NAME, *manifest_lib.files(new)
    }  # fmt: skip


# mixtures.pack's command, SIGKILLed once every row and the manifest are staged, just before
# it would commit (common/outputs.py: tests/faults/test_output_commit.py kills it within).
_KILLED_PACK = """
import os, signal
from common import outputs
from mixtures import pack
outputs.Staged.commit = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
pack.run()
"""


def test_killed_pack_leaves_the_earlier_pack_as_it_was(packed, tmp_path):
    prep_dir, vocab, config, packed_dir = packed
    out = _user_copy(packed_dir, tmp_path / "P")
    before = _snapshot(out)
    args = _pack_args(config, prep_dir, vocab, out, "--overwrite", "--config.seed=7")
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_PACK, *args[3:]], cwd=REPO, env=ENV, capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    (staging,) = [p for p in out.iterdir() if p.name.startswith(outputs.STAGING_PREFIX)]
    assert manifest_lib.read(str(staging))["seed"] == 7  # the killed run's own, complete folder
    (lock,) = [p for p in out.iterdir() if p.name.startswith(run_lock.LOCK_PREFIX)]  # its lock, too
    after = {k: v for k, v in _snapshot(out).items() if not k.startswith((staging.name, lock.name))}
    assert after == before
    earlier = outputs.earlier_files(str(out), command="mixtures.pack", field="f", overwrite=True)
    assert manifest_lib.FILE_NAME in earlier and staging.name not in earlier  # both ignored


# ----------------------------------------------------------------------------- training


def _steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_refused_resume_leaves_config_json(tmp_path):
    train_lib.train(tiny_config(tmp_path, total_steps=4))
    recorded = (tmp_path / "config.json").read_bytes()
    changed = tiny_config(tmp_path, total_steps=8)
    changed.model.num_layers = 3
    with pytest.raises(ConfigError, match=r"config\.model\.num_layers: 2 -> 3: .* holds checkpoints"):
        train_lib.train(changed)
    assert (tmp_path / "config.json").read_bytes() == recorded
    params, config = checkpoint.restore_params(tmp_path)  # what pretrain.convert.export reads
    assert config.model.num_layers == 2 and "layer_1" in params and "layer_2" not in params


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("reference") / "run"
    train_lib.train(tiny_config(workdir, total_steps=8))
    assert _steps(workdir) == [4, 8]
    return workdir


def _damage(step_dir: Path, how: str, every_blob: bool = False) -> None:
    """`every_blob`: truncate all data files, not only the largest. A reader of the parameters
    alone may never touch the largest (Orbax's threads decide which file holds which array):
    with one blob cut, such a test passed or failed by the write's luck."""
    state = step_dir / "state"
    blobs = sorted((p for p in state.rglob("d/*") if p.is_file()), key=lambda p: p.stat().st_size)
    blob = blobs[-1]
    if how == "truncated blob":
        for each in blobs if every_blob else [blob]:
            os.truncate(each, each.stat().st_size // 2)
    elif how == "deleted blob":
        blob.unlink()
    else:
        (state / "_METADATA").unlink()


@pytest.mark.parametrize("how", ["truncated blob", "deleted blob", "deleted _METADATA"])
def test_damaged_latest_checkpoint_is_set_aside_and_the_run_resumes_exactly(reference_run, tmp_path, how):
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    _damage(workdir / "checkpoints" / "8", how)
    damaged = _snapshot(workdir / "checkpoints" / "8")
    lines: list[str] = []
    summary = train_lib.train(tiny_config(workdir, total_steps=8), say=lines.append)
    assert summary["resumed_from"] == 4
    skipped = [line for line in lines if "does not restore" in line]
    assert len(skipped) == 1 and "checkpoint step 8" in skipped[0] and "step 4" in skipped[0], lines
    (kept,) = (workdir / checkpoint.SET_ASIDE).iterdir()
    assert kept.name.startswith("8-") and str(kept) in skipped[0]
    assert _snapshot(kept) == damaged  # moved whole, not deleted
    assert _steps(workdir) == [4, 8]
    losses = [(r["step"], r["loss"]) for r in read_metrics(workdir)]
    assert losses == [(r["step"], r["loss"]) for r in read_metrics(reference_run)]
    a, _ = checkpoint.restore_params(workdir)
    b, _ = checkpoint.restore_params(reference_run)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_no_checkpoint_restores_raises_and_moves_nothing(reference_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    for step in ("4", "8"):
        _damage(workdir / "checkpoints" / step, "deleted _METADATA")
    with pytest.raises(ValueError):  # what Orbax says of the newest one
        train_lib.train(tiny_config(workdir, total_steps=8))
    assert _steps(workdir) == [4, 8] and not (workdir / checkpoint.SET_ASIDE).exists()


def test_training_with_another_tokenizer_than_the_packed_rows_is_refused(packed, tmp_path):
    import sentencepiece as spm

    prep_dir, vocab, _, packed_dir = packed
    other = tmp_path / "other"
    spm.SentencePieceTrainer.train(
        input=str(vocab.parent / "corpus.txt"),
        model_prefix=str(other),
        vocab_size=120,  # the same size as the packed rows' tokenizer, other pieces
        model_type="bpe",
        user_defined_symbols=["<extra>"],
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        minloglevel=2,
    )
    from tests.support.mixtures import demo_mixture

    config = tiny_config(tmp_path / "run", total_steps=2)
    config.data.update(dict(synthetic=False, packed_dir=str(packed_dir), tokenizer=f"{other}.model"))
    config.mixture = demo_mixture(seq_len=config.data.seq_len)
    packed_with = manifest_lib.read(str(packed_dir))["vocab"]["sha256"]
    with pytest.raises(ConfigError, match=rf"config\.data\.tokenizer: is not the tokenizer .*{packed_with}"):
        train_lib.train(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_damaged_packed_file_stops_training_with_one_line_naming_it(packed, tmp_path, damage):
    """array_record's own error names no file; the stream names it. A truncated file is
    found when the stream opens (before anything is written), an overwritten one when read."""
    from tests.support.mixtures import demo_mixture

    prep_dir, vocab, _, packed_dir = packed
    copy = Path(shutil.copytree(packed_dir, tmp_path / "packed"))
    shards = sorted((copy / "train" / "web").glob("*.array_record"))
    for shard in shards[:1] if damage == "truncated" else shards:  # overwritten: any web row read fails
        data = bytearray(shard.read_bytes())
        if damage == "truncated":
            shard.write_bytes(data[: len(data) * 6 // 10])
        else:
            lo, hi = len(data) // 5, len(data) * 7 // 10
            data[lo:hi] = np.random.default_rng(0).integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
            shard.write_bytes(bytes(data))
    config = tiny_config(tmp_path / "run", total_steps=4)
    config.data.update(dict(synthetic=False, packed_dir=str(copy), tokenizer=str(vocab)))
    config.mixture = demo_mixture(seq_len=config.data.seq_len)
    named = "|".join(re.escape(str(p)) for p in shards)
    with pytest.raises(
        stream_lib.UnreadablePackedFile, match=rf"^packed rows unreadable: ({named}) \(.*\); it is not"
    ):
        train_lib.train(config)
    if damage == "truncated":
        assert not (tmp_path / "run").exists()


def test_one_trainer_per_workdir_and_a_killed_trainers_lock_is_not_in_the_way(tmp_path):
    """A second pretrain.train on a running workdir stops at once (exit 2, the first untouched);
    after the first is SIGKILLed, rerunning the same command resumes (its lock removed, one line)."""
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "pretrain.train", f"--config={config_file(tmp_path, total_steps=10_000)}"]
    cmd.append(f"--workdir={workdir}")
    first = subprocess.Popen(
        cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 240
        while not (workdir / "checkpoints" / "4").exists():  # it is in its training loop
            assert first.poll() is None and time.monotonic() < deadline, (
                first.stderr and first.stderr.read()[-2000:]
            )
            time.sleep(0.2)
        config_json = (workdir / "config.json").read_bytes()
        second = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        assert (
            second.stderr.strip()
            .splitlines()[-1]
            .startswith(f"train.py: config.workdir: {workdir} is in use by another pretrain.train run (run ")
        )
        assert f"pid {first.pid} on " in second.stderr
        assert first.poll() is None and (workdir / "config.json").read_bytes() == config_json
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert [p.name for p in workdir.iterdir() if p.name.startswith(run_lock.LOCK_PREFIX)]  # left by the kill
    latest = max(_steps(workdir))
    third = subprocess.run(
        [*cmd, f"--config.train.total_steps={latest + 2}"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert third.returncode == 0, third.stderr[-2000:]
    assert "removed the lock of a run that no longer runs (run " in third.stdout
    assert f"pid {first.pid} on " in third.stdout
    assert max(_steps(workdir)) == latest + 2
    assert not [p.name for p in workdir.iterdir() if p.name.startswith(run_lock.LOCK_PREFIX)]


@pytest.mark.parametrize("how", ["truncated blob", "deleted _METADATA"])
def test_readers_of_a_damaged_checkpoint_name_it_and_the_other_steps_and_move_nothing(
    reference_run, tmp_path, how
):
    """export and evaluate read through checkpoint.restore_params: one line (exit 2), no traceback
    of Orbax's; unlike the trainer they never set the damaged step aside."""
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    _damage(workdir / "checkpoints" / "8", how, every_blob=True)
    before = _snapshot(workdir)
    with pytest.raises(
        checkpoint.UnrestorableCheckpoint,
        match=rf"^checkpoint step 8 in {workdir / 'checkpoints'} does not restore \(\w+: .+\); "
        r"choose another step \(the run holds \[4\]\)$",
    ):
        checkpoint.restore_params(workdir)
    assert _snapshot(workdir) == before
    params, _ = checkpoint.restore_params(workdir, step=4)
    assert "embedder" in params


# pretrain.train's command on one host (no distributed.initialize), sent a real SIGTERM by
# itself once step 5 is done: between checkpoints (every 4 steps), where a preemption lands.
_SIGTERM_AT_5 = """
import os, signal
from pretrain import report, train
collect = report.Reporter.collect
def collect_then_sigterm(self, done, metrics):
    collect(self, done, metrics)
    if done == 5:
        os.kill(os.getpid(), signal.SIGTERM)
report.Reporter.collect = collect_then_sigterm
train.run()
"""


def test_sigterm_on_one_host_saves_the_step_and_exits_preempted_and_the_rerun_resumes_exactly(
    reference_run, tmp_path
):
    workdir = tmp_path / "run"
    args = [f"--config={config_file(tmp_path, total_steps=8)}", f"--workdir={workdir}"]
    proc = subprocess.run(
        [sys.executable, "-c", _SIGTERM_AT_5, *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == train_lib.PREEMPTED, proc.stderr[-3000:]
    assert "preemption notice (SIGTERM): saved step 5" in proc.stderr
    assert _steps(workdir) == [4, 5]
    summary = train_lib.train(tiny_config(workdir, total_steps=8))
    assert summary["resumed_from"] == 5
    losses = [(r["step"], r["loss"]) for r in read_metrics(workdir)]
    assert losses == [(r["step"], r["loss"]) for r in read_metrics(reference_run)]
    a, _ = checkpoint.restore_params(workdir)
    b, _ = checkpoint.restore_params(reference_run)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_a_row_file_swapped_for_another_with_the_same_row_count_is_refused_at_open(packed, tmp_path):
    """The same rows in another order: same row count, same size, reads fine, trains on other
    rows. The manifest's size and sampled sha256 find it before anything is read or written."""
    _, vocab, _, packed_dir = packed
    copy = Path(shutil.copytree(packed_dir, tmp_path / "packed"))
    shard = sorted((copy / "train" / "web").glob("*.array_record"))[0]
    source = grain.sources.ArrayRecordDataSource([str(shard)])
    records = source.__getitems__(list(range(len(source))))
    size = shard.stat().st_size
    shard.unlink()
    writer = ArrayRecordWriter(str(shard), manifest_lib.WRITER_OPTIONS)
    for record in reversed(records):
        writer.write(record)
    writer.close()
    assert shard.stat().st_size == size and len(grain.sources.ArrayRecordDataSource([str(shard)])) == len(
        records
    )
    config = tiny_config(tmp_path / "run", total_steps=4)
    config.data.update(dict(synthetic=False, packed_dir=str(copy), tokenizer=str(vocab)))
    config.mixture = demo_mixture(seq_len=config.data.seq_len)
    with pytest.raises(
        stream_lib.UnreadablePackedFile,
        match=rf"^packed rows unreadable: {re.escape(str(shard))} \(its content differs from the manifest's sampled sha256",
    ):
        train_lib.train(config)
    assert not (tmp_path / "run").exists()
