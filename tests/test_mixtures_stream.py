"""PackedStream over tiny prepared TFDS datasets: layout, exact resume, host slicing, shares."""

import json

import numpy as np
import pytest
import seqio

from mixtures import tasks as tasks_lib
from mixtures.stream import PackedStream, read_documents
from tests.mixtures_fixtures import build_prepared, demo_mixture

SEQ_LEN, BATCH, STEPS = 64, 4, 12  # the anneal stage starts at step 9


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return build_prepared(tmp_path_factory.mktemp("mixtures"))


def _stream(prepared, **kw):
    prep_dir, vocab = prepared
    args = dict(batch_size=BATCH, total_steps=STEPS, prefetch=2)
    args.update(kw)
    return PackedStream(demo_mixture(SEQ_LEN), prep_dir, vocab, **args)


def _take(stream, n):
    return [next(stream) for _ in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_register_tasks_names_and_high_quality_filter(prepared):
    prep_dir, vocab = prepared
    names = tasks_lib.register_tasks(prep_dir, vocab)
    assert names == ["web", "web_hq", "math", "math_hq", "code", "code_hq"]
    hq = [i for i, _ in read_documents(seqio.get_mixture_or_task("math_hq"), "train", 0, 60)]
    assert hq == list(range(0, 60, 3))  # the fixture marks every third record high quality
    index, tokens = next(read_documents(seqio.get_mixture_or_task("web"), "train", 0))
    assert (index, tokens[0], tokens[-1]) == (0, 2, 1)  # <bos> ... <eos>, nothing truncated
    tasks_lib.register_tasks(prep_dir, vocab, bos="none")
    _, tokens = next(read_documents(seqio.get_mixture_or_task("web"), "train", 0))
    assert tokens[0] != 2 and tokens[-1] == 1


def test_batch_layout_matches_design(prepared):
    with _stream(prepared) as stream:
        batch = next(stream)
    assert stream.task_names == ["web", "math", "code", "web_hq", "math_hq", "code_hq"]
    for key in ("inputs", "targets", "segment_ids", "positions"):
        assert batch[key].shape == (BATCH, SEQ_LEN) and batch[key].dtype == np.int32, key
    assert batch["loss_weights"].dtype == np.float32 and batch["task_ids"].shape == (BATCH,)
    assert batch["task_ids"].dtype == np.int32
    seg, inp, tgt, w = batch["segment_ids"], batch["inputs"], batch["targets"], batch["loss_weights"]
    same_doc = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    assert (tgt[:, :-1][same_doc] == inp[:, 1:][same_doc]).all()  # next token within the document
    assert (w[seg == 0] == 0).all() and (seg > 0).mean() >= 0.99


def test_resume_from_saved_state_gives_identical_batches(prepared):
    with _stream(prepared) as stream:
        uninterrupted = _take(stream, STEPS + 3)  # crosses the stage switch and wraps epochs
    with _stream(prepared) as first:
        _take(first, 5)
        saved = json.loads(json.dumps(first.get_state()))
    with _stream(prepared) as resumed:
        resumed.set_state(saved)
        assert resumed.step == 5
        _assert_same(_take(resumed, STEPS - 2), uninterrupted[5:])
        resumed.set_state(saved)  # rewinding a running (prefetching) stream works too
        _assert_same(_take(resumed, 2), uninterrupted[5:7])


def test_same_seed_same_stream_other_seed_other_stream(prepared):
    with _stream(prepared, prefetch=0) as a, _stream(prepared) as b, _stream(prepared, seed=99) as c:
        x, y, z = _take(a, 3), _take(b, 3), _take(c, 3)
    _assert_same(x, y)
    assert any((p["task_ids"] != q["task_ids"]).any() for p, q in zip(x, z))


def test_two_processes_slices_union_is_the_global_batch(prepared):
    with _stream(prepared) as one, _stream(prepared, process_index=0, process_count=2) as p0, \
            _stream(prepared, process_index=1, process_count=2) as p1:
        for g, a, b in zip(_take(one, 6), _take(p0, 6), _take(p1, 6)):
            assert a["inputs"].shape == (BATCH // 2, SEQ_LEN)
            for k in g:
                np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), g[k], err_msg=k)
        assert p0.get_state() == p1.get_state() == one.get_state()


def test_token_accounting_and_stage_switch(prepared):
    with _stream(prepared, prefetch=0) as stream:
        batches = _take(stream, STEPS)
        counts = stream.token_counts()
    out = sum(int((b["segment_ids"] > 0).sum()) for b in batches)
    assert out == sum(c["tokens_in"] - c["tokens_waiting"] for c in counts.values())
    hq = {stream.task_names.index(t) for t in ("web_hq", "math_hq", "code_hq")}
    for step, b in enumerate(batches):
        assert (set(b["task_ids"]) <= hq) == (stream.stage_at(step) == "anneal")
    assert stream.weights_at(STEPS - 1)["web_hq"] == 0.4


@pytest.mark.parametrize("kw, message", [
    (dict(batch_size=3, process_count=2), "process_count: must divide batch_size=3"),
    (dict(process_index=2, process_count=2), r"process_index: must be in \[0, 2\)"),
    (dict(seq_len=0), "config.seq_len: must be > 0"),
])
def test_bad_arguments_fail_at_start(prepared, kw, message):
    with pytest.raises(ValueError, match=message):
        _stream(prepared, **kw)


def test_unknown_task_and_bad_state_fail_clearly(prepared):
    prep_dir, vocab = prepared
    cfg = demo_mixture(SEQ_LEN)
    cfg.tasks = cfg.tasks + ["books"]
    with pytest.raises(ValueError, match=r"config.tasks: \['books'\] not found"):
        PackedStream(cfg, prep_dir, vocab, batch_size=BATCH, total_steps=STEPS)
    cfg = demo_mixture(SEQ_LEN)
    cfg.bos = "sometimes"
    with pytest.raises(ValueError, match="bos: must be one of"):
        PackedStream(cfg, prep_dir, vocab, batch_size=BATCH, total_steps=STEPS)
    with _stream(prepared) as stream:
        state = stream.get_state()
        with pytest.raises(ValueError, match="stream state: batch_size=8"):
            stream.set_state({**state, "batch_size": 8})


def test_task_without_documents_fails_instead_of_spinning(tmp_path):
    from tests.mixtures_fixtures import make_documents, train_tokenizer, write_prepared

    docs = [dict(d, high_quality=False) for d in make_documents("web", 6)]
    write_prepared(tmp_path / "prep", "web", {"train": docs})
    tasks_lib.register_tasks(tmp_path / "prep", train_tokenizer(tmp_path / "tok"))
    with pytest.raises(ValueError, match="task web_hq: split 'train' yields no documents"):
        next(read_documents(seqio.get_mixture_or_task("web_hq"), "train", 0))
