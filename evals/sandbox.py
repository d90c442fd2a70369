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
``while True: os.fork()`` is gone within ~0.1 s, tests/evals/test_sandbox.py).

What keeps files safe: as another user, the program runs as that user (its own files only).
As root, the child drops to uid/gid 65534 (nobody) when the interpreter works as that user
(probed once): every file it does not own is then read-only to it, and RLIMIT_NPROC applies
too. When it does not (an interpreter under /root, say), the child enters a private mount
namespace where every mount is remounted read-only except a bind mount of its directory, so
an absolute path elsewhere (``rm -rf /``, or /tmp once its own directory is gone) cannot be
written either; where namespaces are not allowed, run_program raises rather than run code
as an unconfined root. A process that leaves the session (``setsid``) on purpose is not
followed: the limits are against accidents, not against an adversary.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
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
from typing import Any

UNPRIVILEGED = 65534  # nobody / nogroup
_CLONE_NEWNS, _MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x20000, 1, 32, 4096, 16384, 1 << 18
_POLL_S = 0.01  # how often the parent counts the session's processes
_OUTPUT_TAIL = 2000


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
    workdir = tempfile.mkdtemp(prefix="evals-sandbox-")
    try:
        program = os.path.join(workdir, "program.py")
        with open(program, "w", encoding="utf-8") as f:
            f.write(source)
        if user is not None:
            for path in (workdir, program):
                os.chown(path, user, user)
        with tempfile.TemporaryFile() as output:
            return _supervise(python, workdir, output, limits, user)
    except subprocess.SubprocessError as e:  # the set-up in the child failed: nothing ran
        raise RuntimeError(
            f"sandbox: could not confine the program ({e}); as root, run with an interpreter that "
            f"uid {UNPRIVILEGED} can start (run_program's python) or where mount namespaces are allowed"
        ) from None
    finally:
        shutil.rmtree(workdir, onerror=_unlocker(workdir))


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
        preexec_fn=_limit(limits, user, workdir),
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


def _limit(limits: Limits, user: int | None, workdir: str) -> Callable[[], None]:
    """The child's set-up between fork and exec (no Python-level locks are taken here)."""
    uid = os.geteuid() if user is None else user
    nproc = _user_process_count(uid) + limits.processes if uid != 0 else None
    cpu = math.ceil(limits.timeout_s) + 1

    def apply() -> None:
        if uid == 0:
            _read_only_except(workdir)
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


def _read_only_except(workdir: str) -> None:
    """In the child, as root: a private mount namespace in which every mount is read-only but
    a bind mount of ``workdir``, which becomes the working directory again (the one entered
    before is the directory on the now read-only mount below)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def call(result: int, what: str) -> None:
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")

    path = workdir.encode()
    call(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    call(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")
    call(libc.mount(path, path, None, _MS_BIND, None), f"mount --bind {workdir}")
    with open("/proc/self/mountinfo", "rb") as f:
        points = [line.split()[4].decode("unicode_escape").encode("latin-1") for line in f]
    for point in points:
        if point != path:
            call(
                libc.mount(None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None),
                f"remount {point!r} ro",
            )
    os.chdir(workdir)


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


def _unlocker(workdir: str) -> Callable[[Any, str, Any], None]:
    """rmtree's error hook for ``workdir``: the program may have removed it (nothing to do) or
    made one of its own directories unwritable (made writable again, never anything above)."""

    def retry(func, path: str, exc_info) -> None:
        parent = os.path.dirname(path)
        if isinstance(exc_info[1], FileNotFoundError):
            return
        if not parent.startswith(workdir) or os.path.islink(parent):
            raise exc_info[1]
        os.chmod(parent, 0o700)
        func(path)

    return retry
