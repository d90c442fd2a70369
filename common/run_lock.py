"""One run per output folder, and a dead run's lock never blocks the next.

Two runs writing into one folder corrupt each other's output (two trainers saving the same
checkpoint steps, two data-prep jobs committing over each other), so a command that writes
a folder holds it: ``held(folder, ...)`` writes a lock file of its own,
``folder/_lock-<run id>.json`` naming the run (pid, host, boot, start), and then lists the
folder. Object stores have no exclusive create, hence a file per run checked by listing:
when two runs start together both see two locks and both stop, so no two runs ever write
into one folder.

A lock whose run died (SIGKILL, OOM, a lost VM) must not block a restart, so the holder
rewrites its lock every ``heartbeat_s`` seconds and a new run tells the dead from the
living: on the same machine (host name, boot id and pid namespace) by asking whether the
pid still runs (and started when the lock says);
elsewhere by watching the heartbeat: if it moves within ``stale_s`` seconds, timed by this
machine's monotonic clock, the holder lives (refused); if it does not, the holder is dead
(its lock is removed, with a line saying so). The heartbeat's value is never compared with
this machine's clock: another host's clock may be minutes off (a live holder whose clock
is behind would pass for dead, a dead one whose clock is ahead for alive), so a dead
holder elsewhere always costs one ``stale_s`` wait. A lock that cannot be read is never
removed; the message names the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from common import fs
from common.checks import ConfigError

LOCK_PREFIX = "_lock-"
HEARTBEAT_S = 30.0
STALE_S = 120.0


def new_run_id() -> str:
    """Sortable by start time, unique across machines."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]


def _boot_id() -> str | None:
    """Changes at every boot: a pid of an earlier boot is not a process of this one."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    """Two containers on one kernel (host network: one host name, one boot) number pids apart."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot); None if it does not run or cannot be told.

    With the pid it names one process for the life of a boot: a dead run's pid taken by a
    new process does not pass for the run.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # from field 3; the name before ")" may hold spaces
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):  # a zombie (killed, not yet reaped) runs no more
        return None
    return fields[19]  # field 22: starttime


def _running(holder: dict[str, Any]) -> bool:
    """Whether the run of a lock written on this machine in this boot still runs."""
    pid = int(holder["pid"])
    if holder.get("pid_start") is not None:  # read from /proc here, so /proc is here
        return _process_start(pid) == holder["pid_start"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    """Who holds a lock; the heartbeat as the holder's own clock wrote it (never compared with ours)."""
    beat = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(holder["heartbeat"])))
    return (
        f"run {holder['run']}, pid {holder['pid']} on {holder['host']}, started {holder['started']}, "
        f"last heartbeat {beat} by its clock"
    )


def _read(path: str) -> dict[str, Any] | None:
    """The holder a lock file names; None when it has gone; raises ValueError when unreadable."""
    try:
        holder = json.loads(fs.read_text(path))
    except FileNotFoundError:
        return None
    if (
        not isinstance(holder, dict)
        or not {"run", "pid", "host", "heartbeat"} <= holder.keys()
        or not isinstance(holder["heartbeat"], (int, float))
        or not isinstance(holder["pid"], int)
    ):
        raise ValueError(f"{path} is not a lock file of this project")
    return holder


@contextlib.contextmanager
def held(
    folder: str,
    run_id: str,
    *,
    field: str,
    command: str,
    heartbeat_s: float = HEARTBEAT_S,
    stale_s: float = STALE_S,
    say: Callable[[str], None] = print,
) -> Iterator[None]:
    """Holds `folder` for this run until the block ends.

    Raises ConfigError naming `field` (e.g. "config.workdir") when another live run of
    `command` holds it. Removes locks of dead runs, telling `say` which and why. A folder
    this call created and the block left empty is removed again: a refused run leaves no trace.
    """
    created = not fs.exists(folder)
    name = f"{LOCK_PREFIX}{run_id}.json"
    mine = fs.join(folder, name)
    me = {
        "run": run_id,
        "command": command,
        "pid": os.getpid(),
        "pid_start": _process_start(os.getpid()),
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "pid_namespace": _pid_namespace(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    def beat() -> None:
        fs.write_text_atomic(mine, json.dumps({**me, "heartbeat": time.time()}))

    beat()
    stop = threading.Event()

    def keep_beating() -> None:
        while not stop.wait(heartbeat_s):
            # A missed beat (a storage hiccup) is retried at the next one; the run goes on.
            with contextlib.suppress(Exception):
                beat()

    beating = threading.Thread(target=keep_beating, name=f"lock heartbeat {name}", daemon=True)
    beating.start()
    try:
        others = [n for n in fs.listdir(folder) if n.startswith(LOCK_PREFIX) and n.endswith(".json")]
        for other in sorted(set(others) - {name}):  # not "….json.tmp-<pid>": a beat being written
            _wait_for_or_remove(fs.join(folder, other), field, command, folder, heartbeat_s, stale_s, say)
        yield
    finally:
        stop.set()
        beating.join()
        fs.rmtree(mine)
        if created and not fs.is_uri(folder):  # an object store has no empty folders to remove
            with contextlib.suppress(OSError):  # not empty: something was written, or another run's lock
                os.rmdir(folder)


def _wait_for_or_remove(
    path: str,
    field: str,
    command: str,
    folder: str,
    heartbeat_s: float,
    stale_s: float,
    say: Callable[[str], None],
) -> None:
    """Returns once the lock at `path` is gone (removed here if its run is dead); raises if it lives."""

    def refuse(who: str, holder: dict[str, Any] | None = None) -> ConfigError:
        holder_command = (holder or {}).get("command", command)  # e.g. a trainer, seen by hf_import
        return ConfigError(
            f"{field}: {folder} is in use by another {holder_command} run ({who}); one run per folder "
            f"at a time (if that run is dead, delete {path})"
        )

    def read() -> dict[str, Any] | None:
        try:
            return _read(path)
        except ValueError as e:
            raise refuse(f"unreadable lock: {e}") from None

    holder = read()
    if holder is None:
        return
    written_here = (holder["host"], holder.get("boot"), holder.get("pid_namespace")) == (
        socket.gethostname(),
        _boot_id(),
        _pid_namespace(),
    )
    if written_here:  # its pid names a process of this machine, boot and pid namespace
        if _running(holder):
            raise refuse(_describe(holder), holder)
        say(f"removed the lock of a run that no longer runs ({_describe(holder)}): {path}")
        fs.rmtree(path)
        return
    first, watched = holder["heartbeat"], time.monotonic()
    say(
        f"{folder} is locked by {_describe(holder)} on another machine; waiting up to "
        f"{stale_s:.0f} s to see whether its heartbeat moves (whether it is alive)"
    )
    while (waited := time.monotonic() - watched) < stale_s:
        time.sleep(min(heartbeat_s / 4, stale_s - waited))
        now_holder = read()
        if now_holder is None:
            return
        if now_holder["heartbeat"] != first:
            raise refuse(_describe(now_holder), now_holder)
    say(
        f"removed the lock of a run whose heartbeat stopped (unchanged for {stale_s:.0f} s; "
        f"{_describe(holder)}): {path}"
    )
    fs.rmtree(path)
