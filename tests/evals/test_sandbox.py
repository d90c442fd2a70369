"""evals.sandbox: generated code that deletes files, forks endlessly, allocates without bound or
never stops affects nothing outside its temporary directory and does not hang the run."""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile

import pytest

from evals import sandbox

QUICK = sandbox.Limits(timeout_s=2.0, memory_mb=256, processes=8, file_mb=1)
SID = "import os, sys\nprint(os.getsid(0), flush=True)\n"  # the session, for the leftover check


def assert_nothing_left(outcome: sandbox.Outcome) -> None:
    session = int(outcome.output.split()[0])
    assert sandbox.session_processes(session) == []


def sandbox_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "evals-sandbox-*")))


def test_a_program_runs_in_its_own_directory_and_passes_or_fails():
    before = sandbox_dirs()
    ok = sandbox.run_program(
        "import os\nprint(os.getcwd() == os.environ['HOME'] == os.environ['TMPDIR'])", QUICK
    )
    assert ok.passed and ok.output == "True\n" and ok.returncode == 0
    failed = sandbox.run_program("assert 1 == 2", QUICK)
    assert failed.status == "failed" and "AssertionError" in failed.output
    assert sandbox_dirs() == before  # each directory removed afterwards


def test_deleting_files_affects_only_its_directory(tmp_path, monkeypatch):
    outside = tmp_path / "keep.txt"
    outside.write_text("keep")
    monkeypatch.chdir(tmp_path)  # the caller's cwd: a program's relative paths must not land here
    clobber = "open('keep.txt', 'w').write('overwritten')\nos.makedirs('locked/in')\nos.chmod('locked', 0)\n"
    delete = "for name in os.listdir('.'):\n    os.remove(name)\nshutil.rmtree(os.path.expanduser('~'), ignore_errors=True)\n"
    for program in (clobber, delete):
        outcome = sandbox.run_program("import os, shutil\n" + program, QUICK)
        assert outcome.passed, outcome.output
    assert outside.read_text() == "keep" and sorted(os.listdir(tmp_path)) == ["keep.txt"]


def interpreters() -> list[str]:
    """This interpreter and, if uid 65534 can start it, the system one: as root, the first is
    confined by a read-only mount namespace here (it lives under /root), the second by the uid."""
    system = shutil.which("python3", path="/usr/bin:/bin")
    return [sys.executable] + ([system] if system and sandbox._runs_unprivileged(system) else [])


@pytest.mark.skipif(os.geteuid() != 0, reason="as another user the program runs as that user")
@pytest.mark.parametrize("python", interpreters())
def test_as_root_files_outside_its_directory_are_read_only(tmp_path, python):
    outside = tmp_path / "keep.txt"
    outside.write_text("keep")
    for attempt in (f"os.remove({str(outside)!r})", f"open({str(outside)!r}, 'w')", "open('/etc/x', 'w')"):
        outcome = sandbox.run_program(f"import os\n{attempt}", QUICK, python)
        assert outcome.status == "failed" and (
            "Read-only" in outcome.output or "Permission" in outcome.output
        )
    assert outside.read_text() == "keep" and not os.path.exists("/etc/x")
    assert sandbox.run_program("open('mine.txt', 'w').write('ok')", QUICK, python).passed


@pytest.mark.parametrize(
    "bomb",
    [
        "while True:\n    os.fork()\n",
        "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    ],
)
def test_fork_bombs_are_stopped_and_leave_no_process(bomb):
    outcome = sandbox.run_program(SID + bomb, QUICK)
    assert outcome.status in ("process_limit", "failed", "timeout") and outcome.seconds < QUICK.timeout_s + 1
    assert_nothing_left(outcome)


def test_unbounded_allocation_fails_fast():
    outcome = sandbox.run_program("blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))", QUICK)
    assert outcome.status == "failed" and "MemoryError" in outcome.output  # not a timeout


@pytest.mark.parametrize("forever", ["while True:\n    pass\n", "import time\ntime.sleep(3600)\n"])
def test_endless_programs_time_out(forever):
    outcome = sandbox.run_program(SID + forever, sandbox.Limits(timeout_s=1.0))
    assert outcome.status == "timeout" and outcome.seconds < 3
    assert_nothing_left(outcome)


def test_a_background_child_does_not_outlive_its_program():
    program = SID + "import time\nif os.fork() == 0:\n    time.sleep(3600)\n"
    outcome = sandbox.run_program(program, QUICK)
    assert outcome.passed
    assert_nothing_left(outcome)


def test_output_is_bounded():
    outcome = sandbox.run_program("while True:\n    print('x' * 1000)", QUICK)
    assert outcome.status == "failed" and len(outcome.output) <= 2000  # killed at 1 MiB, not a timeout
