"""common/run_lock.py: a live run's folder is refused to a second run; a dead run's lock is removed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from common import fs, run_lock
from common.checks import ConfigError


def _held(folder, run_id, said=None, **kw):
    return run_lock.held(
        str(folder),
        run_id,
        field="config.out",
        command="test",
        say=(lambda _: None) if said is None else said.append,
        **kw,
    )


def _plant(folder, run_id: str, **holder) -> str:
    """A lock file as another run would have left it."""
    path = fs.join(str(folder), f"{run_lock.LOCK_PREFIX}{run_id}.json")
    fields = {
        "run": run_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "boot": run_lock._boot_id(),
        "pid_namespace": run_lock._pid_namespace(),
        "started": "2026-12-04T00:00:00Z",
        "heartbeat": time.time(),
        **holder,
    }
    fs.write_text(path, json.dumps(fields))
    return path


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_a_second_run_is_refused_naming_the_holder_and_leaves_the_first_lock(tmp_path):
    with _held(tmp_path, "first"):
        with pytest.raises(
            ConfigError, match=r"config\.out: .* in use by another test run \(run first, pid \d+ on "
        ):
            with _held(tmp_path, "second"):
                pass
        assert os.listdir(tmp_path) == [f"{run_lock.LOCK_PREFIX}first.json"]
    assert os.listdir(tmp_path) == []


def test_the_lock_of_a_dead_process_on_this_machine_is_removed(tmp_path):
    stale = _plant(tmp_path, "killed", pid=_dead_pid(), pid_start="1")
    said: list[str] = []
    with _held(tmp_path, "next", said):
        assert not os.path.exists(stale)
    assert said and "no longer runs" in said[0] and "run killed" in said[0]


def test_a_reused_pid_does_not_pass_for_the_dead_run(tmp_path):
    """The dead run's pid now names another process (here: this one), started at another time."""
    _plant(tmp_path, "killed", pid=os.getpid(), pid_start="1")
    with _held(tmp_path, "next"):
        pass


def test_a_lock_from_an_earlier_boot_is_not_a_running_process(tmp_path):
    _plant(tmp_path, "before-reboot", boot="another boot", heartbeat=time.time() - 3600)
    said: list[str] = []
    with _held(tmp_path, "next", said, heartbeat_s=0.1, stale_s=0.5):
        pass
    assert "heartbeat stopped" in said[1]


def test_a_lock_from_another_pid_namespace_is_judged_by_its_heartbeat(tmp_path):
    """Another container on this kernel: its pid (dead here) says nothing, its heartbeat does."""
    _plant(tmp_path, "container", pid=_dead_pid(), pid_namespace="pid:[1]")
    said: list[str] = []
    start = time.perf_counter()
    with _held(tmp_path, "next", said, heartbeat_s=0.1, stale_s=0.5):
        pass
    assert time.perf_counter() - start >= 0.4
    assert "waiting up to" in said[0] and "heartbeat stopped" in said[1]


def _beat(path: str, stop: threading.Event, clock_offset_s: float = 0.0) -> threading.Thread:
    """Keeps the planted lock's heartbeat moving, as a live holder whose clock is off by `clock_offset_s`."""

    def beating():
        while not stop.wait(0.05):
            holder = json.loads(fs.read_text(path))
            fs.write_text_atomic(path, json.dumps({**holder, "heartbeat": time.time() + clock_offset_s}))

    thread = threading.Thread(target=beating)
    thread.start()
    return thread


def test_another_machines_lock_with_an_old_heartbeat_is_watched_before_it_is_removed(tmp_path):
    """An old heartbeat says nothing by itself (the holder's clock may be behind): it must not move."""
    _plant(tmp_path, "lost-vm", host="elsewhere", heartbeat=time.time() - 1000)
    said: list[str] = []
    start = time.perf_counter()
    with _held(tmp_path, "next", said, heartbeat_s=0.1, stale_s=0.5):
        pass
    assert time.perf_counter() - start >= 0.4
    assert "heartbeat stopped (unchanged for 0 s" in said[1]


def test_a_live_holder_whose_clock_is_behind_is_not_declared_dead(tmp_path):
    """Clock skew: the holder's clock is 130 s behind ours (more than stale_s), its heartbeat moves."""
    path = _plant(tmp_path, "skewed", host="elsewhere", heartbeat=time.time() - 130)
    stop = threading.Event()
    thread = _beat(path, stop, clock_offset_s=-130)
    try:
        with pytest.raises(ConfigError, match=r"run skewed, pid \d+ on elsewhere"):
            with _held(tmp_path, "next", heartbeat_s=0.2, stale_s=120):
                pass
    finally:
        stop.set()
        thread.join()
    assert os.path.exists(path)


def test_a_dead_holder_whose_clock_was_ahead_is_removed_after_one_watch(tmp_path):
    """Clock skew the other way: a heartbeat from our future does not keep a dead lock alive."""
    path = _plant(tmp_path, "ahead", host="elsewhere", heartbeat=time.time() + 3)
    start = time.perf_counter()
    with _held(tmp_path, "next", heartbeat_s=0.1, stale_s=0.5):
        assert not os.path.exists(path)
    assert time.perf_counter() - start < 2.5


@pytest.mark.parametrize(
    "content",
    [
        '{"run": "x", "pid": 1, "host": "h", "heartbeat": "soon"}',
        '{"run": "x", "pid": "1", "host": "h", "heartbeat": 1}',
    ],
)
def test_a_lock_with_fields_of_the_wrong_type_is_refused_and_kept(tmp_path, content):
    path = fs.join(str(tmp_path), f"{run_lock.LOCK_PREFIX}odd.json")
    fs.write_text(path, content)
    with pytest.raises(ConfigError, match=r"unreadable lock: .*_lock-odd\.json is not a lock file"):
        with _held(tmp_path, "next"):
            pass
    assert os.path.exists(path)


def test_another_machines_live_run_is_refused_once_its_heartbeat_moves(tmp_path):
    path = _plant(tmp_path, "alive", host="elsewhere")
    stop = threading.Event()
    thread = _beat(path, stop)
    try:
        with pytest.raises(ConfigError, match=r"run alive, pid \d+ on elsewhere"):
            with _held(tmp_path, "next", heartbeat_s=0.2, stale_s=10):
                pass
    finally:
        stop.set()
        thread.join()
    assert os.path.exists(path)


def test_another_machines_silent_lock_is_removed_once_stale(tmp_path):
    """A heartbeat written just before the holder died: wait stale_s, then take over."""
    path = _plant(tmp_path, "just-died", host="elsewhere")
    said: list[str] = []
    start = time.perf_counter()
    with _held(tmp_path, "next", said, heartbeat_s=0.1, stale_s=0.6):
        assert not os.path.exists(path)
    assert time.perf_counter() - start >= 0.5
    assert "waiting up to" in said[0] and "heartbeat stopped" in said[1]


def test_an_unreadable_lock_is_refused_and_kept(tmp_path):
    path = fs.join(str(tmp_path), f"{run_lock.LOCK_PREFIX}garbled.json")
    fs.write_text(path, "{not json")
    with pytest.raises(ConfigError, match=r"unreadable lock: .*delete .*_lock-garbled\.json"):
        with _held(tmp_path, "next"):
            pass
    assert os.path.exists(path)


def test_the_holder_keeps_its_heartbeat_fresh(tmp_path):
    with _held(tmp_path, "me", heartbeat_s=0.05):
        path = fs.join(str(tmp_path), f"{run_lock.LOCK_PREFIX}me.json")
        first = json.loads(fs.read_text(path))["heartbeat"]
        time.sleep(0.3)
        assert json.loads(fs.read_text(path))["heartbeat"] > first


def test_a_folder_the_lock_created_is_removed_when_left_empty(tmp_path):
    with _held(tmp_path / "new", "r"):
        pass
    assert not (tmp_path / "new").exists()
    with _held(tmp_path / "used", "r"):
        (tmp_path / "used" / "out.txt").write_text("kept")
    assert os.listdir(tmp_path / "used") == ["out.txt"]
    with _held(tmp_path, "r"):  # existed before: stays, even empty
        pass
    assert tmp_path.is_dir()


def test_a_killed_but_unreaped_process_is_not_running(tmp_path):
    """A zombie keeps its pid and start time until its parent reaps it; it holds nothing."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    started = run_lock._process_start(child.pid)
    assert started is not None
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":  # exited, unreaped
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _plant(tmp_path, "zombie", pid=child.pid, pid_start=started)
    said: list[str] = []
    with _held(tmp_path, "next", said):
        pass
    assert "no longer runs" in said[0]
    child.wait()
