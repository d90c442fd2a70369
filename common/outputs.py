"""The one way every command writes its output: staged, recorded, committed, recoverable.

A command that writes a folder OUT (prepare, pack, export, tokenizer.train) runs inside
``writing(OUT, ...)``:

1. it holds OUT (common/run_lock.py): a second run into OUT is refused, exit 2;
2. it finishes a commit that a killed run left half done (``recover``, below);
3. it checks OUT: absent or empty (locks and staging folders aside) is fine; one whose
   record ``OUT/OUTPUTS.json`` names this command is replaced only with ``--overwrite``,
   and then only the files the record lists; anything else is refused before anything
   is written. Files the record does not list (a user's NOTES.md) are never touched;
4. it writes everything into its own ``OUT/_staging-<run id>/``; a failed run removes that
   folder, a killed one leaves it (safe to delete; later runs ignore it);
5. ``Staged.commit`` then writes the journal (the record with a ``commit`` entry naming the
   staging folder, the old and the new files), removes the old files the new output does
   not have, renames each staged file into place (one atomic rename per file, so a reader
   sees every file whole, old or new), removes the staging folder and writes the record
   listing the new files. Every step is idempotent and the staging folder keeps what was not
   moved yet, so the next run (of any command) holding OUT rolls a killed commit forward.

Every path read from a record is checked before it is used: relative, no empty, ``.`` or
``..`` part, and (locally) no symlink between OUT and it; a symlink that is itself a
recorded file is removed as a link, its target untouched. OUT itself may be a symlink.
Object stores (``gs://``) have no symlinks and no directory rename: files move one by one,
which the journal covers.

A command that writes one file (a quality model, evaluate's ``--dump``, a report's
``--json``) calls ``check_file`` at start and ``write_file`` at the end: an existing path
is replaced only with ``--overwrite``, never when it is one of the command's inputs or a
file of a run (a record lists it, a trainer wrote it, a run is writing its folder now), and
the file appears whole
(a sibling temporary file renamed over it; an object store publishes an upload whole).

A command that writes its folder in place (the trainer) claims it with ``claim``/
``check_claim``: only an empty folder or one it claimed before is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from common import fs, run_lock
from common.checks import ConfigError

RECORD = "OUTPUTS.json"
STAGING_PREFIX = "_staging-"
FORMAT = "gemma-pretrain-outputs-v1"


# ----------------------------------------------------------------------------- paths


def _machinery(name: str) -> bool:
    """Entries of OUT that belong to runs, not to an output: locks, staging folders, the record."""
    return name == RECORD or name.startswith((STAGING_PREFIX, run_lock.LOCK_PREFIX))


def inside(out: str, relative: object) -> str:
    """`out/relative`, after checking `relative` names a place below `out`; raises ValueError.

    Locally no folder between `out` and it may be a symlink (it could lead anywhere); the
    last part may be one, which the caller then treats as a link, never following it.
    """
    ok = (
        isinstance(relative, str)
        and relative != ""
        and not relative.startswith("/")
        and "\\" not in relative
        and "\0" not in relative
        and all(part not in ("", ".", "..") for part in relative.removesuffix("/").split("/"))
        and not _machinery(relative.split("/")[0])  # the record, a lock, a run's staging folder
    )
    if not ok:
        raise ValueError(f"{relative!r} is not a path inside {out}")
    if not fs.is_uri(out):
        parts = relative.removesuffix("/").split("/")
        for depth in range(1, len(parts)):
            folder = os.path.join(out, *parts[:depth])
            if os.path.islink(folder):
                raise ValueError(f"{relative!r} passes through the symlink {folder}")
    return fs.join(out, relative)


def _remove(out: str, relative: str) -> None:
    """Removes the file `out/relative` (a symlink as a link; "name/": an empty folder), then
    the folders this emptied; a folder that holds anything stays."""
    path = inside(out, relative).removesuffix("/")
    if not fs.is_uri(out) and os.path.islink(path):
        os.unlink(path)
    elif fs.isfile(path):
        fs.rmtree(path)
    parts = relative.split("/")[:-1]
    while parts:
        folder = fs.join(out, *parts)
        if not fs.isdir(folder) or fs.listdir(folder):
            return
        fs.rmtree(folder)
        parts.pop()


def _entries_below(folder: str) -> list[str]:
    """Every file under `folder` and every empty folder (with a trailing "/"), relative to it."""
    base = fs.resolve(folder).rstrip("/")
    entries = []
    for dirpath, dirnames, filenames in fs.as_path(base).walk():
        relative = os.fspath(dirpath)[len(base) + 1 :]
        prefix = relative + "/" if relative else ""
        entries += [prefix + name for name in filenames]
        if relative and not dirnames and not filenames:
            entries.append(prefix)
    return sorted(entries)


# ----------------------------------------------------------------------------- the record


def read_record(out: str) -> dict[str, Any] | None:
    """OUT/OUTPUTS.json, or None when there is none; raises ConfigError when unreadable."""
    path = fs.join(out, RECORD)
    if not fs.exists(path):
        return None
    record = fs.read_json_state(path, f"refusing to touch {out}: fix or remove it")
    if record.get("format") != FORMAT or "command" not in record:
        raise ConfigError(f"{path}: not a record of this project; refusing to touch {out}: fix or remove it")
    return record


def _write_record(out: str, command: str, run: str, files: list[str] | None, **extra: Any) -> None:
    record = {"format": FORMAT, "command": command, "run": run, "files": files, **extra}
    record["written"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    fs.write_text_atomic(fs.join(out, RECORD), json.dumps(record, indent=1) + "\n")


def _checked(out: str, record: dict[str, Any], key: str, files: object) -> list[str]:
    """The `files` of a record, each checked to lie inside `out`; ConfigError naming the first that does not."""
    if not isinstance(files, list):
        raise ConfigError(f"{fs.join(out, RECORD)}: {key} is not a list of files; refusing to touch {out}")
    for relative in files:
        try:
            inside(out, relative)
        except ValueError as e:
            raise ConfigError(
                f"{fs.join(out, RECORD)} names {relative!r}, not a file inside {out} ({e}); refusing to "
                f"delete anything: fix or remove the record"
            ) from None
    return list(files)


# ----------------------------------------------------------------------------- recovery


def recover(out: str, say: Callable[[str], None] = print) -> None:
    """Finishes the commit a killed run left in `out` (call it holding `out`'s lock)."""
    record = read_record(out) if fs.isdir(out) else None
    if record is None or not record.get("commit"):
        return
    commit = record["commit"]
    staging = commit.get("staging") if isinstance(commit, dict) else None
    if not isinstance(staging, str) or not staging.startswith(STAGING_PREFIX) or "/" in staging:
        raise ConfigError(
            f"{fs.join(out, RECORD)}: names no staging folder of a run; refusing to touch {out}"
        )
    old = _checked(out, record, "commit.old", commit.get("old"))
    new = _checked(out, record, "commit.new", commit.get("new"))
    say(f"finishing the commit of {record['command']} run {record.get('run')} that was stopped in {out}")
    _apply(out, fs.join(out, staging), old, new, commit.get("last", []))
    fs.rmtree(fs.join(out, staging))
    there = [r for r in new if fs.exists(fs.join(out, r))]  # all of them, unless staging was deleted
    _write_record(out, record["command"], str(record.get("run")), there)


def _apply(out: str, staging: str, old: list[str], new: list[str], last: Iterable[str]) -> None:
    """The commit's steps, each one safe to repeat: old files out, staged files in (`last` last)."""
    last = set(last)
    for relative in sorted(set(old) - set(new), key=lambda r: r not in last):  # e.g. a manifest first
        _remove(out, relative)
    for relative in sorted(new, key=lambda r: r in last):
        source = fs.join(staging, relative)
        target = inside(out, relative)
        if relative.endswith("/"):  # an empty folder
            fs.makedirs(target)
            continue
        if not fs.exists(source):  # moved before the kill
            continue
        if not fs.is_uri(out) and os.path.islink(target):
            os.unlink(target)  # a link put where a file of ours was: never written through
        fs.makedirs(fs.dirname(target))
        fs.replace(source, target)


# ----------------------------------------------------------------------------- folders


class Staged:
    """A run's staging folder in OUT, and the commit that replaces the earlier output with it."""

    def __init__(self, out: str, command: str, run: str, earlier: list[str]):
        self.out, self.command, self.run, self.earlier = out, command, run, earlier
        self.path = fs.join(out, STAGING_PREFIX + run)
        self.journaled = False
        self.kept = False

    def keep(self) -> None:
        """The run failed its checks: its output stays in the staging folder, for a look."""
        self.kept = True

    def commit(self, last: Iterable[str] = ()) -> list[str]:
        """Moves every staged file into OUT, replacing the earlier output; returns the files.

        `last` names files moved after all others (a manifest that names the rest). A staged
        file whose place holds something the earlier output did not record (a user's file, or
        another run's) stops the commit before anything changes, the output left in staging.
        """
        new = _entries_below(self.path) if fs.isdir(self.path) else []
        clash = []
        for relative in new:
            try:
                target = inside(self.out, relative)
            except ValueError as e:
                clash.append(f"{relative} ({e})")
                continue
            folder = relative.endswith("/")  # an empty folder may join one that exists
            taken = (fs.isfile(target) if folder else fs.exists(target)) or os.path.islink(target.rstrip("/"))
            parts = relative.rstrip("/").split("/")
            parents = ["/".join(parts[:depth]) for depth in range(1, len(parts))]
            blocked = [p for p in parents if p not in self.earlier and fs.isfile(fs.join(self.out, p))]
            if (relative not in self.earlier and taken) or blocked:
                clash.append(relative)
        if clash:
            raise RuntimeError(
                f"{self.out}: {clash[:3]} exist there and are not files of an earlier {self.command} "
                f"run; nothing was replaced, the new output stays in {self.path}"
            )
        journal = {"staging": fs.basename(self.path), "old": self.earlier, "new": new, "last": sorted(last)}
        _write_record(self.out, self.command, self.run, sorted(set(self.earlier) | set(new)), commit=journal)
        self.journaled = True
        _apply(self.out, self.path, self.earlier, new, last)
        fs.rmtree(self.path)
        _write_record(self.out, self.command, self.run, new)  # the commit is done
        return new


def earlier_files(out: str, *, command: str, field: str, overwrite: bool) -> list[str]:
    """The files of an earlier run of `command` in `out` that a commit may replace.

    [] for an absent or empty `out`; ConfigError naming `field` for one that holds anything
    else, or an earlier output without `overwrite`.
    """
    if not fs.isdir(out):
        if fs.exists(out):
            raise ConfigError(f"{field}: {out} is a file, not a folder")
        return []
    record = read_record(out)
    if not [n for n in fs.listdir(out) if not _machinery(n)] and record is None:
        return []
    if record is None or record["command"] != command or record.get("files") is None:
        what = "nothing recorded there" if record is None else f"a {record['command']} run wrote it"
        raise ConfigError(
            f"{field}: {out} is not empty and is not the output of an earlier {command} run ({what}); "
            f"refusing to write into it: choose a new or empty folder"
        )
    files = _checked(out, record, "files", record["files"])
    if not overwrite:
        raise ConfigError(
            f"{field}: {out} holds the output of an earlier {command} run; pass --overwrite to replace "
            f"it (only the {len(files)} files its {RECORD} lists; anything else there stays)"
        )
    return files


@contextlib.contextmanager
def writing(
    out: str, *, command: str, field: str, overwrite: bool, say: Callable[[str], None] = print
) -> Iterator[Staged]:
    """Holds `out`, recovers and checks it, and yields this run's `Staged` folder.

    The block writes into `staged.path` and calls `staged.commit()`. Leaving the block
    before the commit began removes the staging folder (OUT stays as it was), unless the
    run `keep()`s it; an exception during the commit leaves the journal, which the next run
    finishes.
    """
    out = fs.resolve(out)
    run = run_lock.new_run_id()
    with run_lock.held(out, run, field=field, command=command, say=say):
        recover(out, say)
        staged = Staged(
            out, command, run, earlier_files(out, command=command, field=field, overwrite=overwrite)
        )
        fs.makedirs(staged.path)
        try:
            yield staged
        finally:
            if not (staged.journaled or staged.kept):  # failed, or chose not to commit
                fs.rmtree(staged.path)  # this run's own files only


# ----------------------------------------------------------------------------- in place


def check_claim(folder: str, *, command: str, field: str, allow: Iterable[str] = ()) -> None:
    """Refuses (ConfigError naming `field`) a `folder` that holds anything but an earlier run
    of `command` (its record), locks, empty folders and the entries named in `allow`."""
    if not fs.isdir(folder):
        if fs.exists(folder):
            raise ConfigError(f"{field}: {folder} is a file, not a folder")
        return
    record = read_record(folder)
    if record is not None and record["command"] == command:
        return
    foreign = [
        n
        for n in fs.listdir(folder)
        if not _machinery(n) and n not in set(allow) and not _empty_folder(fs.join(folder, n))
    ]
    if foreign or record is not None:
        owner = f"a {record['command']} run wrote it" if record else f"it holds {foreign[:3]}"
        raise ConfigError(
            f"{field}: {folder} is not empty and is not a {command} run ({owner}); refusing to write "
            f"into it: choose a new or empty folder"
        )


def _empty_folder(path: str) -> bool:
    """Holds nothing to lose (an Orbax manager made `checkpoints/` and saved no step, say)."""
    return fs.isdir(path) and not fs.listdir(path)


def claim(folder: str, *, command: str, run: str) -> None:
    """Records `folder` as written by `command` (after `check_claim` passed), unless it is already."""
    record = read_record(folder) if fs.isdir(folder) else None
    if record is None:
        fs.makedirs(folder)
        _write_record(folder, command, run, None)


# ----------------------------------------------------------------------------- single files


def _file_of_a_run(path: str) -> str | None:
    """Why `path` belongs to a run, or None: a file a record lists, a file that exists in a
    trainer's workdir (whose record lists none; or one made before records: config.json
    beside checkpoints/), anything in a run's staging folder, or in a folder a run holds now."""
    folder, relative = fs.dirname(path), fs.basename(path)
    while True:
        names = set(fs.listdir(folder)) if fs.isdir(folder) else set()
        if any(n.startswith(run_lock.LOCK_PREFIX) for n in names):
            return f"it lies in {folder}, which a run is writing now"
        if relative.startswith(STAGING_PREFIX):
            return f"it lies in a run's staging folder in {folder}"
        record = read_record(folder) if RECORD in names else None
        if record is not None and (relative in (record.get("files") or []) or relative == RECORD):
            return f"{fs.join(folder, RECORD)} lists it as an output of {record['command']}"
        trainer = (record is not None and record.get("files") is None) or {
            "config.json",
            "checkpoints",
        } <= names
        if trainer and fs.exists(path):
            return f"it is a file of the training run in {folder}"
        parent = fs.dirname(folder)
        if parent == folder or parent in ("", ".") or parent.rstrip("/").endswith(":"):  # a bucket, or /
            return None
        folder, relative = parent, f"{fs.basename(folder)}/{relative}"


def _same(a: str, b: str) -> bool:
    if fs.is_uri(a) or fs.is_uri(b):
        return fs.resolve(a).rstrip("/") == fs.resolve(b).rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def check_file(
    path: str,
    *,
    field: str,
    overwrite: bool,
    inputs: Iterable[str] = (),
    earlier: Callable[[str], bool] | None = None,
) -> str:
    """The resolved `path` a command may write one file to; ConfigError naming `field` if not.

    Refused: a folder; one of `inputs` (the command's own); a file of a run (`_file_of_a_run`);
    an existing file without `overwrite`; with `earlier`, an existing file it rejects (only
    an earlier output of the command may be replaced).
    """
    path = fs.resolve(path)
    if fs.isdir(path):
        raise ConfigError(f"{field}: {path} is a folder; name a file")
    for given in inputs:
        if given and _same(path, fs.resolve(given)):
            raise ConfigError(f"{field}: {path} is an input of this command; name another file")
    owner = _file_of_a_run(path)
    if owner is not None:
        raise ConfigError(f"{field}: {path} is a file of a run ({owner}); write it elsewhere")
    if fs.exists(path) or (not fs.is_uri(path) and os.path.islink(path)):
        if not overwrite:
            raise ConfigError(f"{field}: {path} exists; pass --overwrite to replace it")
        if earlier is not None and not earlier(path):
            raise ConfigError(f"{field}: {path} exists and is not an earlier output of this command")
    return path


def write_file(path: str, write: Callable[[str], None], *, overwrite: bool) -> None:
    """Calls `write(tmp)` and puts the finished file at `path` in one step (see check_file).

    Locally `tmp` is a sibling temporary file renamed over `path` (without `overwrite`, linked
    so that a file that appeared meanwhile is not replaced); an object store publishes an
    upload only once complete, so there `write` writes `path` itself.
    """
    if fs.is_uri(path):
        write(path)
        return
    tmp = f"{fs.dirname(path)}/.{fs.basename(path)}.partial-{run_lock.new_run_id()}"
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ConfigError(f"{path} appeared while this command ran; nothing was replaced") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
