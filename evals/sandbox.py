"""Runs generated code in a separate, limited process, so that a bad program costs one failed item.

A model's program may delete files, fork without end, allocate without bound or never stop.
Each program runs in a fresh temporary directory (its working directory, HOME and TMPDIR) in a
new session, under resource limits: address space (RLIMIT_AS), CPU seconds (RLIMIT_CPU),
file size (RLIMIT_FSIZE, its output included), open files, no core dumps. The parent watches
the wall clock (waking at once when the program exits) and the number of processes in the
session, and at the end (exit, timeout or too many processes) SIGKILLs every process left in
the session, so a background child cannot outlive its item, then removes the directory.

What limits a fork bomb: RLIMIT_NPROC counts the processes of a user, and the kernel never
applies it to uid 0 (tested: 50 forks under RLIMIT_NPROC=10 as root). So the parent counts
the session's processes every 10 ms and kills the session past ``processes`` (a
``while True: os.fork()`` is gone within ~0.1 s, tests/evals/test_sandbox.py), and where the program can run as an unprivileged user it does: as root the child
drops to uid/gid 65534 (nobody) when the interpreter works as that user (probed once), which
also makes every file it does not own read-only to it, and RLIMIT_NPROC applies. As root with
an interpreter only root can reach (e.g. under /root), the program runs as root: relative
paths, ``~`` and temporary files stay in its directory, but an absolute path elsewhere is not
protected; a warning says so. A process that leaves the session (``setsid``) on purpose is
not followed: the limits are against accidents, not against an adversary.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

UNPRIVILEGED = 65534  # nobody / nogroup
_POLL_S = 0.01  # how often the parent counts the session's processes
_OUTPUT_TAIL = 2000

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock, the interpreter's start included
    memory_mb: int = 1024  # address space of each process
    processes: int = 8  # processes in the session at once, the program's own included
    file_mb: int = 16  # largest file it may write, its stdout/stderr included
    open_files: int = 64


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # "passed" (exit 0), "failed", "timeout" or "process_limit"
    returncode: int | None
    seconds: float
    output: str  # the end of its stdout and stderr

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_program(source: str, limits: Limits = Limits(), python: str = sys.executable) -> Outcome:
    """Runs ``source`` with ``python -I -S`` (stdlib only) in a fresh directory under ``limits``."""
    user = UNPRIVILEGED if os.geteuid() == 0 and _runs_unprivileged(python) else None
    if os.geteuid() == 0 and user is None:
        _warn_root(python)
    workdir = tempfile.mkdtemp(prefix="evals-sandbox-")
    try:
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(source)
        if user is not None:
            os.chown(workdir, user, user)
        with tempfile.TemporaryFile() as output:
            return _supervise(python, workdir, output, limits, user)
    finally:
        shutil.rmtree(workdir, onerror=_unlock_and_retry)


def _supervise(python: str, workdir: str, output, limits: Limits, user: int | None) -> Outcome:
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
    start = time.monotonic()
    proc = subprocess.Popen(
        [python, "-I", "-S", "-B", "program.py"],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_limit(limits, user),
    )
    status = None
    exited = select.poll()
    pidfd = os.pidfd_open(proc.pid)
    exited.register(pidfd, select.POLLIN)
    try:
        while not exited.poll(_POLL_S * 1000):  # wakes at once when it exits
            if time.monotonic() - start > limits.timeout_s:
                status = "timeout"
                break
            if len(session_processes(proc.pid)) > limits.processes:
                status = "process_limit"
                break
    finally:
        os.close(pidfd)
        kill_session(proc.pid)
        proc.wait()
    seconds = time.monotonic() - start
    if status is None:
        status = "passed" if proc.returncode == 0 else "failed"
    output.seek(0)
    text = output.read().decode("utf-8", errors="replace")[-_OUTPUT_TAIL:]
    return Outcome(status, proc.returncode, seconds, text)


def _limit(limits: Limits, user: int | None) -> Callable[[], None]:
    """The child's set-up between fork and exec (no Python-level locks are taken here)."""
    uid = os.geteuid() if user is None else user
    nproc = _user_process_count(uid) + limits.processes if uid != 0 else None
    cpu = math.ceil(limits.timeout_s) + 1

    def apply() -> None:
        memory = limits.memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb << 20, limits.file_mb << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if user is not None:
            os.setgroups([])
            os.setgid(user)
            os.setuid(user)
        if nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    return apply


@functools.cache
def _runs_unprivileged(python: str) -> bool:
    """Whether ``python`` starts as uid 65534 (not when it lives under a root-only directory)."""

    def drop() -> None:
        os.setgroups([])
        os.setgid(UNPRIVILEGED)
        os.setuid(UNPRIVILEGED)

    try:
        probe = subprocess.run(
            [python, "-I", "-c", "pass"], preexec_fn=drop, cwd="/", capture_output=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


@functools.cache
def _warn_root(python: str) -> None:
    log.warning(
        "sandbox: running as root and %s does not start as uid %d: generated code runs as root; "
        "files outside its temporary directory are protected only against relative paths",
        python,
        UNPRIVILEGED,
    )


def _stat_fields(pid: str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, pgrp, session, ...)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None  # gone meanwhile


def session_processes(session: int) -> list[int]:
    """Live (not zombie) processes whose session id is ``session``."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            fields = _stat_fields(pid)
            if fields and fields[0] != "Z" and int(fields[3]) == session:
                found.append(int(pid))
    return found


def kill_session(session: int) -> None:
    """SIGKILLs every process in the session until none is left: its process group at once
    (atomic with respect to fork, so a fork bomb cannot outrun it), then any member that
    moved to another group (a forking process dies before its fork completes)."""
    for _ in range(1000):
        try:
            os.killpg(session, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pids = session_processes(session)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(_POLL_S)
    raise RuntimeError(
        f"sandbox: processes of session {session} survive SIGKILL: {session_processes(session)}"
    )


def _user_process_count(uid: int) -> int:
    count = 0
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid:
                count += 1
        except OSError:
            pass
    return count


def _unlock_and_retry(func, path: str, _exc_info) -> None:
    """rmtree's error hook: a program may have made a directory of its own unwritable."""
    parent = os.path.dirname(path)
    if not os.path.islink(parent):
        os.chmod(parent, 0o700)
    func(path)
