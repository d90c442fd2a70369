"""The pod launcher against a fake `gcloud` on PATH: commands, quoting, recovery, exit status.

The fake logs its argv as JSON lines and answers from a scenario file: the queued
resource's states in order, and what `gcloud storage cat` finds for the hosts' exit files
at each poll. `gcloud storage cp` writes into a local directory standing in for gs://.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ODD = '--config.data.packed_dir=/mnt/my packed\'s "dir" $HOME `x`'  # must arrive verbatim

FAKE_GCLOUD = r"""#!/usr/bin/env python3
import json, os, sys
root = os.environ["FAKE_GCLOUD_DIR"]
args = sys.argv[1:]
with open(os.path.join(root, "calls.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\n")
scenario_path = os.path.join(root, "scenario.json")
scenario = json.load(open(scenario_path)) if os.path.exists(scenario_path) else {}

def pop(key, default):
    values = scenario.get(key, [])
    value = values.pop(0) if values else default
    json.dump(scenario, open(scenario_path, "w"))
    return value

if args[:4] == ["compute", "tpus", "queued-resources", "describe"]:
    state = pop("states", "ACTIVE")
    if state is None:
        sys.exit("ERROR: (gcloud) NOT_FOUND")
    print(state)
elif args[:2] == ["storage", "cat"]:
    found = pop("exits", None)
    if found is None:
        sys.exit("ERROR: (gcloud) One or more URLs matched no objects.")
    sys.stdout.write(found)
elif args[:2] == ["storage", "cp"]:
    src, dst = [a for a in args[2:] if not a.startswith("--")]
    dst = os.path.join(root, "gcs", dst.removeprefix("gs://"))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    data = sys.stdin.read() if src == "-" else open(src).read()
    open(dst, "w").write(data)
"""


@pytest.fixture
def fake_gcloud(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_GCLOUD_DIR": str(tmp_path),
        "PYTHONPATH": str(REPO),
    }

    def calls() -> list[list[str]]:
        path = tmp_path / "calls.jsonl"
        return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []

    def scenario(**values) -> None:
        (tmp_path / "scenario.json").write_text(json.dumps(values))

    return env, calls, scenario


def _launch(env, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pretrain.launch",
            "--project=proj",
            "--zone=us-west4-a",
            "--tpu_name=pod-1",
            "--bucket=gs://bkt",
            f"--override={ODD}",
            "--config.poll_s=0",
            *flags,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _remote_train_args(ssh_call: list[str]) -> list[str]:
    """The pretrain.train argv a host will run, as the remote bash parses --command."""
    command = next(a for a in ssh_call if a.startswith("--command=")).removeprefix("--command=")
    line = next(l for l in command.splitlines() if "host.sh" in l)
    words = shlex.split(line)
    return words[words.index("--") + 1 : words.index("</dev/null")]


def _printed_commands(stdout: str) -> list[list[str]]:
    """The `+ CMD` lines, each parsed back into argv (a quoted argument may span lines)."""
    commands, pending = [], None
    for line in stdout.splitlines():
        if pending is None and not line.startswith("+ "):
            continue
        pending = line[2:] if pending is None else pending + "\n" + line
        try:
            commands.append(shlex.split(pending))
            pending = None
        except ValueError:  # inside a quoted multi-line argument
            continue
    return commands


def _kind(call: list[str]) -> str:
    if call[:3] == ["compute", "tpus", "queued-resources"]:
        return call[3]
    if call[:3] == ["compute", "tpus", "tpu-vm"]:
        if call[3] == "scp":
            return "scp"
        command = next(a for a in call if a.startswith("--command="))
        return "setup" if "uv venv" in command else "start" if "host.sh" in command else "stop"
    return " ".join(call[:2])


def test_dry_run_prints_every_command_and_runs_none(fake_gcloud):
    env, calls, _ = fake_gcloud
    result = _launch(env, "--dry_run")
    assert result.returncode == 0, result.stderr
    assert calls() == []  # nothing ran
    printed = _printed_commands(result.stdout)
    gcloud = [c[1:] for c in printed if c[0] == "gcloud"]
    assert [_kind(c) for c in gcloud] == [
        "describe",
        "create",
        "scp",
        "setup",
        "start",
        "describe",
        "storage cat",
    ]
    where = ["--project=proj", "--zone=us-west4-a"]
    assert gcloud[1] == [
        "compute",
        "tpus",
        "queued-resources",
        "create",
        "pod-1",
        "--node-id=pod-1",
        *where,
        "--accelerator-type=v5litepod-256",
        "--runtime-version=v2-alpha-tpuv5-lite",
        "--spot",
    ]
    assert ["git", "archive"] == [c[:2] for c in printed if c[0] == "git"][-1]
    setup = next(a for a in gcloud[3] if a.startswith("--command="))
    assert "set -euo pipefail" in setup and "uv python install 3.11" in setup
    assert "gcloud storage rsync --recursive --quiet gs://bkt/packed /mnt/disks/data/packed" in setup
    assert "| tee" not in result.stdout
    train = _remote_train_args(gcloud[4])
    assert train[:3] == [".venv/bin/python", "-m", "pretrain.train"]
    assert "--workdir=gs://bkt/runs/tpu_v5e_2b" in train
    assert train[-1] == ODD  # quoted once for ssh, parsed back verbatim by the remote bash
    assert "nohup setsid" in gcloud[4][-1] and gcloud[4][-1].rstrip().endswith("&")


def test_preemption_recreates_the_slice_and_a_crash_restarts_training(fake_gcloud):
    env, calls, scenario = fake_gcloud
    scenario(
        # absent -> queued -> ACTIVE; poll 1 ACTIVE; poll 2 preempted; recreated (absent ->
        # ACTIVE); then ACTIVE until the end.
        states=[None, "WAITING_FOR_RESOURCES", "ACTIVE", "ACTIVE", "SUSPENDED", None, "ACTIVE"],
        # poll 1: nothing ended; (poll 2 is the preemption); attempt 2: worker 1 crashed;
        # attempt 3: still running, then both done.
        exits=[None, "0 0\n1 134\n", None, "1 0\n0 0\n"],
    )
    result = _launch(env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    kinds = [_kind(c) for c in calls()]
    assert kinds == [
        "describe",
        "create",
        "describe",
        "describe",  # request, wait for ACTIVE
        "scp",
        "setup",
        "start",  # attempt 1
        "describe",
        "storage cat",  # poll 1: running
        "describe",
        "delete",
        "describe",
        "create",
        "describe",  # poll 2: preempted
        "scp",
        "setup",
        "start",  # attempt 2 on the new slice
        "describe",
        "storage cat",
        "stop",  # poll 3: worker 1 exited 134
        "describe",
        "start",  # attempt 3 on the same slice
        "describe",
        "storage cat",
        "describe",
        "storage cat",  # running, then done
    ]
    starts = [c for c in calls() if _kind(c) == "start"]
    status = [_remote_train_args(c) for c in starts]
    assert all(s == status[0] for s in status)  # the same command resumes from gs://
    attempts = [shlex.split(next(l for l in c[-1].splitlines() if "host.sh" in l))[5] for c in starts]
    assert len(set(attempts)) == 3
    assert "training finished" in result.stdout


def test_config_error_is_not_retried(fake_gcloud):
    env, calls, scenario = fake_gcloud
    scenario(states=["ACTIVE"], exits=["0 2\n"])
    result = _launch(env)
    assert result.returncode == 2
    assert [_kind(c) for c in calls()].count("start") == 1


def test_host_script_reports_exit_status_and_log(tmp_path, fake_gcloud):
    env, calls, _ = fake_gcloud
    env = {**env, "WORKER_ID": "3", "LOG_DIR": str(tmp_path / "logs"), "LOG_SYNC_S": "1"}
    result = subprocess.run(
        [
            "bash",
            str(REPO / "pretrain/launch/host.sh"),
            "gs://bkt/runs/r/launch/a",
            "--",
            sys.executable,
            "-c",
            "import sys; print('step 1 of 2'); sys.exit(7)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 7
    gcs = tmp_path / "gcs" / "bkt/runs/r/launch/a"
    assert (gcs / "worker-3.exit").read_text().split() == ["3", "7"]
    log = (gcs / "worker-3.log").read_text()
    assert "step 1 of 2" in log and "exit status 7" in log
    assert not (tmp_path / "logs" / "train.pid").exists()


def test_a_worker_named_by_its_host_does_not_crash_the_supervisor(fake_gcloud):
    env, calls, scenario = fake_gcloud
    scenario(states=["ACTIVE"], exits=["t1v-n-abc 0\n0 0\n"])
    result = _launch(env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training finished" in result.stdout


@pytest.mark.parametrize("host, worker", [("t1v-n-4f2a-w-3", "3"), ("my-vm", "my-vm")])
def test_host_script_without_metadata_takes_the_worker_from_the_host_name(
    tmp_path, fake_gcloud, host, worker
):
    env, _, _ = fake_gcloud
    bin_dir = Path(env["PATH"].split(os.pathsep)[0])
    (bin_dir / "curl").write_text("#!/bin/sh\nexit 6\n")  # no metadata server
    (bin_dir / "hostname").write_text(f"#!/bin/sh\necho {host}\n")
    for tool in ("curl", "hostname"):
        (bin_dir / tool).chmod(0o755)
    env = {k: v for k, v in env.items() if k != "WORKER_ID"}
    env.update(LOG_DIR=str(tmp_path / "logs"), LOG_SYNC_S="1")
    result = subprocess.run(
        ["bash", str(REPO / "pretrain/launch/host.sh"), "gs://bkt/s", "--", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "gcs" / "bkt/s" / f"worker-{worker}.exit").read_text().split() == [worker, "0"]


def test_concurrent_launches_use_their_own_local_archive(fake_gcloud):
    env, _, _ = fake_gcloud
    archives = []
    for _ in range(2):
        result = _launch(env, "--dry_run")
        assert result.returncode == 0, result.stderr
        printed = _printed_commands(result.stdout)
        git_archive = next(c for c in printed if c[:2] == ["git", "archive"])
        archive = next(a for a in git_archive if a.startswith("--output=")).removeprefix("--output=")
        scp = next(c for c in printed if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"])
        assert scp[5] == archive  # the archive this launch wrote is the one it ships
        archives.append(archive)
    assert archives[0] != archives[1]
