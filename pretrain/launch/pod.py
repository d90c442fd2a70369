"""Train on a Cloud TPU pod slice and keep it training through preemptions and host failures.

  python -m pretrain.launch --project=P --zone=Z --tpu_name=gemma-2b --bucket=gs://B \
      [--train_config=configs/train/tpu_v5e_2b.py] [--override=--config.train.total_steps=1000] \
      [--action=run|stop|delete] [--dry_run]

`run` (default): requests the slice as a queued resource (Spot unless `spot=False`) and waits
until it is ACTIVE; ships `git archive` of the repository (committed files plus any
uncommitted changes to tracked files) to every host; installs the pinned environment
(uv-managed CPython 3.11: the v5e image's Ubuntu 22.04 has 3.10, and the project needs
3.11); starts `python -m pretrain.train` detached on every host (pretrain/launch/host.sh
under nohup + setsid: a dropped ssh connection does not stop it; logs on the VM's disk
and copied to gs://B/runs/RUN/launch/ATTEMPT/); then supervises. Every `poll_s` it reads
the queued resource's state and the hosts' exit files: a preempted or failed slice
(SUSPENDED, FAILED, ...) is deleted and requested again, a training process that exited
non-zero is restarted on the same slice, and both resume from the latest checkpoint in
gs://B/runs/RUN. It exits 0 when worker 0's training exits 0, 2 when training rejects its
config (exit status 2: restarting cannot help), 1 after `max_restarts` restarts.
`stop` ends training on every host; `delete` releases the slice. `--dry_run` prints
every command (gcloud, git) without running any.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence

import ml_collections
from absl import flags, logging

from common import checks, cli, fs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REMOTE_DIR = "gemma-pretrain"  # under the login user's home on every host
ARCHIVE = "/tmp/gemma-pretrain.tgz"  # on each host of the slice
LIBTPU_INDEX = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
WAITING = ("ACCEPTED", "CREATING", "PROVISIONING", "WAITING_FOR_RESOURCES")
CONFIG_ERROR = 2  # pretrain.train's exit status for a rejected config


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        dict(
            action="run",  # run | stop | delete
            dry_run=False,
            project="",
            zone="",
            tpu_name="",  # the queued resource and its node share this name
            bucket="",  # gs://BUCKET: packed/, tokenizer/, runs/RUN/, xla_cache/
            packed_dir="/mnt/disks/data/packed",  # each host's local copy of gs://BUCKET/packed
            accelerator="v5litepod-256",
            runtime="v2-alpha-tpuv5-lite",
            spot=True,
            train_config="configs/train/tpu_v5e_2b.py",  # relative to the repository root
            run_name="",  # default: the train config's file name
            overrides=[],  # extra pretrain.train flags, e.g. --config.train.total_steps=1000
            max_restarts=50,
            poll_s=60.0,
            python="3.11",
            uv="0.13.9",
        )
    )


def validate(c: ml_collections.ConfigDict) -> None:
    checks.one_of(c.action, ("run", "stop", "delete"), "action")
    for field in ("project", "zone", "tpu_name"):
        checks.require(bool(c[field]), field, f"required (--{field}=...)")
    checks.require(c.bucket.startswith("gs://"), "bucket", "must be a gs:// URI", c.bucket)
    checks.require(
        os.path.isfile(os.path.join(REPO, c.train_config)),
        "train_config",
        "must be a file under the repository (configs/train/...)",
        c.train_config,
    )
    checks.non_negative(c.max_restarts, "max_restarts")
    checks.non_negative(c.poll_s, "poll_s")


class Pod:
    """The gcloud and git commands of one launch; each goes to `say` before it runs, as do
    the supervisor's decisions (default: the log; the command prints them)."""

    def __init__(self, c: ml_collections.ConfigDict, say: Callable[[str], None] = logging.info):
        self.c, self.say = c, say
        self.run_name = c.run_name or fs.basename(c.train_config).removesuffix(".py")
        self.workdir = fs.join(c.bucket, "runs", self.run_name)
        self.where = [f"--project={c.project}", f"--zone={c.zone}"]
        # This launch's own archive: concurrent launches from one machine never share one.
        self.archive_path = os.path.join(tempfile.gettempdir(), f"gemma-pretrain-{uuid.uuid4().hex}.tgz")

    # ----- commands
    def _run(
        self, cmd: Sequence[str], *, check: bool = True, capture: bool = False, cwd: str | None = None
    ) -> subprocess.CompletedProcess:
        self.say("+ " + shlex.join(cmd))
        if self.c.dry_run:
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.run(cmd, check=check, text=True, cwd=cwd, capture_output=capture)

    def gcloud(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self._run(["gcloud", *args], **kwargs)

    def ssh(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        """`command` (a bash string) on every host; fails if it fails on any."""
        return self.gcloud(
            "compute",
            "tpus",
            "tpu-vm",
            "ssh",
            self.c.tpu_name,
            "--worker=all",
            *self.where,
            f"--command={command}",
            check=check,
        )

    # ----- the slice
    def state(self) -> str | None:
        """The queued resource's state (ACTIVE, SUSPENDED, ...), None when it does not exist."""
        result = self.gcloud(
            "compute",
            "tpus",
            "queued-resources",
            "describe",
            self.c.tpu_name,
            *self.where,
            "--format=value(state.state)",
            check=False,
            capture=True,
        )
        return result.stdout.strip() or None if result.returncode == 0 else None

    def create(self) -> None:
        self.gcloud(
            "compute",
            "tpus",
            "queued-resources",
            "create",
            self.c.tpu_name,
            f"--node-id={self.c.tpu_name}",
            *self.where,
            f"--accelerator-type={self.c.accelerator}",
            f"--runtime-version={self.c.runtime}",
            *(["--spot"] if self.c.spot else []),
        )

    def delete(self, check: bool = True) -> None:
        """Deletes the queued resource and its TPU VMs (waits until they are gone)."""
        self.gcloud(
            "compute",
            "tpus",
            "queued-resources",
            "delete",
            self.c.tpu_name,
            *self.where,
            "--force",
            "--quiet",
            check=check,
        )

    def ensure_active(self) -> None:
        """Requests the slice if absent, replaces it if preempted or failed, waits for ACTIVE."""
        state = self.state()
        if self.c.dry_run:  # show the request; a real run waits here for ACTIVE
            self.create()
            return
        while state != "ACTIVE":
            if state is None:
                self.create()
            elif state not in WAITING:
                self.say(f"{self.c.tpu_name} is {state}: deleting and requesting it again")
                self.delete()
                self.create()
            time.sleep(self.c.poll_s)
            state = self.state()

    # ----- the code and the environment
    def archive(self) -> None:
        """`git archive` of the repository root, including uncommitted changes to tracked files."""
        tree = self._run(["git", "stash", "create"], capture=True, cwd=REPO).stdout.strip()
        self._run(
            ["git", "archive", "--format=tar.gz", f"--output={self.archive_path}", tree or "HEAD"], cwd=REPO
        )

    def deploy(self) -> None:
        """Ships the archive and installs the pinned environment on every host."""
        self.archive()
        try:
            self.gcloud(
                "compute",
                "tpus",
                "tpu-vm",
                "scp",
                self.archive_path,
                f"{self.c.tpu_name}:{ARCHIVE}",
                "--worker=all",
                *self.where,
            )
        finally:
            if os.path.exists(self.archive_path):
                os.remove(self.archive_path)  # this launch's own file
        self.ssh(setup_script(self.c))

    # ----- training
    def status_uri(self, attempt: str) -> str:
        return fs.join(self.workdir, "launch", attempt)

    def train_command(self) -> list[str]:
        b = self.c.bucket
        return [
            ".venv/bin/python",
            "-m",
            "pretrain.train",
            f"--config={self.c.train_config}",
            f"--workdir={self.workdir}",
            f"--config.data.packed_dir={self.c.packed_dir}",
            f"--config.data.tokenizer={fs.join(b, 'tokenizer', 'tokenizer.model')}",
            f"--config.train.compilation_cache_dir={fs.join(b, 'xla_cache')}",
            *self.c.overrides,
        ]

    def start(self, attempt: str) -> None:
        """Starts training on every host, detached; returns once all have started."""
        host = ["bash", "pretrain/launch/host.sh", self.status_uri(attempt), "--", *self.train_command()]
        self.ssh(
            f"{STOP}\ncd ~/{REMOTE_DIR} || exit 1\n"
            f"TF_CPP_MIN_LOG_LEVEL=2 nohup setsid {shlex.join(host)} </dev/null >/dev/null 2>&1 &"
        )
        self.say(f"attempt {attempt} started; logs: {self.status_uri(attempt)}/worker-N.log")

    def stop(self) -> bool:
        return self.ssh(STOP, check=False).returncode == 0

    def exit_codes(self, attempt: str) -> dict[str, int]:
        """{worker: exit status} of the hosts whose training has ended in `attempt`.

        A worker is its number ("0", "1", ...) or, where host.sh could not learn it, the
        host's name: a string either way.
        """
        result = self.gcloud(
            "storage", "cat", fs.join(self.status_uri(attempt), "*.exit"), check=False, capture=True
        )
        if result.returncode != 0:
            return {}
        lines = [line.strip().rpartition(" ") for line in result.stdout.splitlines() if line.strip()]
        return {worker: int(code) for worker, _, code in lines}

    # ----- the supervisor
    def supervise(self) -> int:
        """Keeps training running until it ends; returns the launcher's exit status."""
        restarts = 0

        def restart(reason: str, new_slice: bool) -> str | None:
            nonlocal restarts
            restarts += 1
            if restarts > self.c.max_restarts:
                self.say(f"{reason}; giving up after {self.c.max_restarts} restarts")
                return None
            self.say(f"{reason}; restart {restarts} of at most {self.c.max_restarts}")
            if new_slice:
                self.delete(check=False)  # a failed slice may already be gone
            self.ensure_active()
            if new_slice:
                self.deploy()
            attempt = new_attempt(restarts)
            self.start(attempt)
            return attempt

        self.ensure_active()
        self.deploy()
        attempt = new_attempt(0)
        self.start(attempt)
        if self.c.dry_run:
            self.say(f"(dry run) then every {self.c.poll_s:g}s:")
            self.state()
            self.exit_codes(attempt)
            self.say("(dry run) on preemption: delete, create, deploy and start as above")
            return 0
        while True:
            time.sleep(self.c.poll_s)
            state = self.state()
            if state != "ACTIVE":
                attempt = restart(
                    f"slice {self.c.tpu_name} is {state or 'gone'} (preempted?)", new_slice=True
                )
            else:
                codes = self.exit_codes(attempt)
                failed = {w: code for w, code in codes.items() if code != 0}
                if codes.get("0") == 0 and not failed:
                    self.say(f"training finished (attempt {attempt}); checkpoints in {self.workdir}")
                    return 0
                if CONFIG_ERROR in failed.values():
                    self.say(
                        f"training rejected its config (exit status {CONFIG_ERROR}); see "
                        f"{self.status_uri(attempt)}/worker-0.log"
                    )
                    return CONFIG_ERROR
                if not failed:
                    continue
                stopped = self.stop()  # the others abort on their own within the heartbeat timeout
                attempt = restart(f"training exited with {failed} (worker: status)", new_slice=not stopped)
            if attempt is None:
                return 1


def new_attempt(restart: int) -> str:
    """A fresh name for the hosts' status files: restart count and UTC start time."""
    return f"{restart:03d}-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())


# Ends this launch's training on a host: host.sh's process group (from its pid file) gets
# SIGTERM, then 60 s to exit (and release the TPU) before SIGKILL.
STOP = """pid=$(cat ~/gemma-pretrain-logs/train.pid 2>/dev/null || true)
if [ -n "$pid" ] && kill -TERM -- -"$pid" 2>/dev/null; then
  for _ in $(seq 60); do kill -0 -- -"$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- -"$pid" 2>/dev/null || true
fi"""


def setup_script(c: ml_collections.ConfigDict) -> str:
    """Unpacks the archive, installs the environment and copies the packed rows to local disk,
    on every host; fails on any error.

    uv (from PyPI, into the system Python's user site) downloads a pinned CPython build,
    so the image's Python (3.10 on Ubuntu 22.04) is left alone; the project's exact pins
    (constraints.txt) plus jax[tpu] for the libtpu that matches the pinned jax.
    """
    jax_pin = _pin("jax")
    packed = shlex.quote(c.packed_dir)
    lines = [
        "set -euo pipefail",
        'export PATH="$HOME/.local/bin:$PATH"',
        f"rm -rf ~/{REMOTE_DIR}.new && mkdir -p ~/{REMOTE_DIR}.new",
        f"tar -xzf {ARCHIVE} -C ~/{REMOTE_DIR}.new",
        f"if [ -d ~/{REMOTE_DIR}/.venv ]; then mv ~/{REMOTE_DIR}/.venv ~/{REMOTE_DIR}.new/; fi",
        f"rm -rf ~/{REMOTE_DIR} && mv ~/{REMOTE_DIR}.new ~/{REMOTE_DIR} && cd ~/{REMOTE_DIR}",
        f"uv --version 2>/dev/null | grep -qF {shlex.quote(c.uv)} || "
        f"python3 -m pip install --user --quiet {shlex.quote('uv==' + c.uv)}",
        f"uv python install {shlex.quote(c.python)}",
        f"uv venv --allow-existing --python {shlex.quote(c.python)} .venv",
        "uv pip install --quiet --python .venv/bin/python -c constraints.txt -e . "
        f"{shlex.quote(f'jax[tpu]=={jax_pin}')} -f {LIBTPU_INDEX}",
        ".venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count())' >/dev/null",
        # The trainer reads packed rows from local disk (mixtures.pack's output).
        f'sudo mkdir -p {packed} && sudo chown "$USER" {packed}',
        f"gcloud storage rsync --recursive --quiet {shlex.quote(fs.join(c.bucket, 'packed'))} {packed}",
    ]
    return "\n".join(lines)


def _pin(package: str) -> str:
    """The exact version constraints.txt pins for `package`."""
    with open(os.path.join(REPO, "constraints.txt")) as f:
        for line in f:
            name, _, version = line.strip().partition("==")
            if name.lower() == package:
                return version
    raise ValueError(f"constraints.txt: no pin for {package}")


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    del argv
    config.dry_run = config.dry_run or flags.FLAGS.dry_run
    validate(config)
    pod = Pod(config, say=lambda line: print(line, flush=True))
    if config.action == "stop":
        sys.exit(0 if pod.stop() else 1)
    if config.action == "delete":
        pod.delete()
        return
    sys.exit(pod.supervise())


def run(argv: list[str] | None = None) -> None:
    cli.run(
        main,
        doc=__doc__,
        default_config=default_config,
        shortcuts=[
            cli.Shortcut("action", help="run | stop | delete"),
            cli.Shortcut("project", help="Google Cloud project"),
            cli.Shortcut("zone", help="TPU zone, e.g. us-west4-a"),
            cli.Shortcut("tpu_name", help="queued resource / TPU VM name"),
            cli.Shortcut("bucket", help="gs://BUCKET holding packed/, tokenizer/, runs/"),
            cli.Shortcut("accelerator", help="e.g. v5litepod-256"),
            cli.Shortcut("train_config", help="pretrain.train config file"),
            cli.Shortcut("run_name", help="run directory name under gs://BUCKET/runs/"),
            cli.Shortcut("override", "overrides", "pretrain.train flag (repeatable)", multi=True),
        ],
        required=["project", "zone", "tpu_name", "bucket"],
        argv=argv,
        define_extra_flags=lambda: flags.DEFINE_bool("dry_run", False, "print every command, run none"),
    )


if __name__ == "__main__":
    run()
