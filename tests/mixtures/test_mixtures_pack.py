"""mixtures.pack (Beam, DirectRunner) on tiny prepared TFDS datasets: index, stats, rows, shuffle."""

import json

import numpy as np
import pytest

from mixtures import manifest as manifest_lib
from mixtures import pack, rows
from mixtures import tasks as tasks_lib
from tests.support.mixtures import PACK_SEQ_LEN, demo_mixture, pack_mixture, packed_fixture


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    return packed_fixture(tmp_path_factory)


def _records(packed_dir, manifest, split, task):
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    files = manifest_lib.task_files(str(packed_dir), manifest, split, task)
    source = ArrayRecordDataSource([p for p, _ in files])
    return [source[i] for i in range(len(source))]


def _documents_from_rows(records):
    """Rebuilds documents from rows in index order (a cut document continues in the next row)."""
    docs, current = [], []
    for record in records:
        a = np.frombuffer(record, "<i4")
        n, tail = int(a[0]), int(a[1])
        lengths, tokens = a[2 : 2 + n], a[2 + n :]
        pieces = np.split(tokens, np.cumsum(lengths)[:-1])
        for i, piece in enumerate(pieces):
            current.extend(piece.tolist())
            if i < n - 1 or tail < 0:
                docs.append(tuple(current))
                current = []
            else:
                assert tail >= 0
    assert not current
    return docs


def test_register_tasks_names_and_high_quality_filter(packed):
    prep_dir, vocab, _ = packed
    assert tasks_lib.register_tasks(prep_dir, vocab) == [
        "web",
        "web_hq",
        "math",
        "math_hq",
        "code",
        "code_hq",
    ]
    hq = [i for i, _ in pack.read_documents("math_hq", "train", 0, 60)]
    assert hq == list(range(0, 60, 3))  # the fixture marks every third record high quality
    index, tokens = next(pack.read_documents("web", "train", 5, 60))
    assert (index, tokens[0], tokens[-1]) == (5, 2, 1)  # <bos> ... <eos>, nothing truncated
    tasks_lib.register_tasks(prep_dir, vocab, bos="none")
    _, tokens = next(pack.read_documents("web", "train", 5, 60))
    assert tokens[0] != 2 and tokens[-1] == 1


def test_manifest_index_and_stats(packed):
    _, _, packed_dir = packed
    m = manifest_lib.read(str(packed_dir))
    assert m["seq_len"] == PACK_SEQ_LEN and m["seed"] == 1234 and m["vocab"]["size"] == 120
    assert set(m["splits"]) == {"train", "validation"}
    for split, by_task in m["splits"].items():
        assert set(by_task) == {"web", "math", "code", "web_hq", "math_hq", "code_hq"}
        for task, s in by_task.items():
            assert s["tokens_read"] == s["tokens_in"] == s["tokens_out"] > 0, (split, task)
            assert s["rows"] == sum(f["rows"] for f in s["files"])
            assert s["tokens_out"] == sum(f["tokens"] for f in s["files"])
            assert s["fill"] == pytest.approx(s["tokens_out"] / (s["rows"] * PACK_SEQ_LEN))
            records = _records(packed_dir, m, split, task)
            assert len(records) == s["rows"]
            assert sum(rows.token_count(r) for r in records) == s["tokens_out"]
    train = m["splits"]["train"]["code"]
    assert len(train["files"]) > 1, "rows_per_shard=8 spreads a task over several packing shards"
    # all but each shard's last row are >= 99.5% full (the packer's max_padding)
    for f in train["files"]:
        full = [
            rows.token_count(r)
            for r in _records(packed_dir, {"splits": {"x": {"t": {"files": [f]}}}}, "x", "t")
        ]
        assert all(n >= PACK_SEQ_LEN * 0.995 for n in full[:-1])


def test_rows_hold_every_document_once_in_seeded_order(packed):
    prep_dir, vocab, packed_dir = packed
    tasks_lib.register_tasks(prep_dir, vocab)
    m = manifest_lib.read(str(packed_dir))
    for task in ("web", "math_hq"):
        source = list(pack.read_documents(task, "train", 0, 60))
        rebuilt = []
        for f in m["splits"]["train"][task]["files"]:
            rebuilt += _documents_from_rows(
                _records(packed_dir, {"splits": {"x": {"t": {"files": [f]}}}}, "x", "t")
            )
        assert sorted(rebuilt) == sorted(tuple(t.tolist()) for _, t in source)
        assert rebuilt != [tuple(t.tolist()) for _, t in source], (
            "documents are shuffled, not in source order"
        )


def test_other_seed_other_rows_and_edited_manifest_refused(packed, tmp_path):
    prep_dir, vocab, packed_dir = packed
    first = manifest_lib.read(str(packed_dir))
    other = tmp_path / "other"
    other.mkdir()
    out = pack_mixture(other, prep_dir, vocab, "--config.seed=7", "--config.pack.splits=('train',)")
    second = manifest_lib.read(str(out))
    assert second["fingerprint"] != first["fingerprint"]
    a, b = first["splits"]["train"]["web"], second["splits"]["train"]["web"]
    assert a["tokens_out"] == b["tokens_out"] and a["documents"] == b["documents"]
    assert [f["sha256"] for f in a["files"]] != [f["sha256"] for f in b["files"]], "seed reorders documents"
    # a manifest edited by hand is refused
    path = out / manifest_lib.FILE_NAME
    edited = json.loads(path.read_text())
    edited["splits"]["train"]["web"]["rows"] += 1
    path.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="does not match its fingerprint"):
        manifest_lib.read(str(out))


def test_refuses_to_overwrite_a_foreign_directory(packed, tmp_path):
    from common.checks import ConfigError
    from configs.mixtures import base

    prep_dir, vocab, _ = packed
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    config = demo_mixture(PACK_SEQ_LEN)
    config.pack = base.pack_config()
    config.pack.update(dict(prep_dir=str(prep_dir), vocab_path=str(vocab), output=str(foreign)))
    with pytest.raises(
        ConfigError, match="config.pack.output: .* is not the output of an earlier mixtures.pack run"
    ):
        pack.pack(config)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_extra_task_packs_a_dataset_outside_prep_dir_and_leaves_the_others_unchanged(packed, tmp_path):
    """`--extra_task=NAME=DIR` adds a task from another prepared dataset (a candidate for an
    anneal); the domain tasks' rows stay byte-identical, so arms branched from a run that
    read the first pack read the same rows from the second."""
    from tests.support.mixtures import make_documents, write_prepared

    prep_dir, vocab, packed_dir = packed
    candidate = tmp_path / "candidate_prep"
    docs = make_documents("math", 25, seed=9)
    write_prepared(candidate, "math", {"train": docs[:20], "validation": docs[20:]})
    out = pack_mixture(tmp_path, prep_dir, vocab, f"--extra_task=candidate={candidate / 'math'}")
    first, second = manifest_lib.read(str(packed_dir)), manifest_lib.read(str(out))
    assert second["tasks"] == [*first["tasks"], "candidate"]
    assert second["splits"]["train"]["candidate"]["documents"] == 20
    assert second["splits"]["validation"]["candidate"]["documents"] == 5
    for task in first["tasks"]:
        for split in ("train", "validation"):
            a, b = first["splits"][split][task], second["splits"][split][task]
            assert [f["sha256"] for f in a["files"]] == [f["sha256"] for f in b["files"]], (split, task)


def test_extra_task_must_be_a_prepared_dataset(packed, tmp_path):
    from common.checks import ConfigError
    from configs.mixtures import base

    prep_dir, vocab, _ = packed
    config = demo_mixture(PACK_SEQ_LEN)
    config.pack = base.pack_config()
    config.pack.update(dict(prep_dir=str(prep_dir), vocab_path=str(vocab), output=str(tmp_path / "out")))
    config.pack.extra_tasks = [f"candidate={tmp_path}"]
    with pytest.raises(ConfigError, match="config.pack.extra_tasks: .*candidate"):
        pack.pack(config)
    config.pack.extra_tasks = ["no_equals_sign"]
    with pytest.raises(ConfigError, match="config.pack.extra_tasks: --extra_task: expected NAME=DIR"):
        pack.pack(config)


def test_prepared_data_problems_fail_as_config_errors_before_any_output(packed, tmp_path):
    """No domain under prep_dir, or an extra task named like a domain task: one config error
    naming the field, and no output folder."""
    from common.checks import ConfigError
    from configs.mixtures import base

    prep_dir, vocab, _ = packed
    config = demo_mixture(PACK_SEQ_LEN)
    config.pack = base.pack_config()
    empty = tmp_path / "empty_prep"
    empty.mkdir()
    config.pack.update(dict(prep_dir=str(empty), vocab_path=str(vocab), output=str(tmp_path / "out")))
    with pytest.raises(ConfigError, match="config.pack.prep_dir: no TFDS dataset"):
        pack.pack(config)
    config.pack.prep_dir = str(prep_dir)
    config.pack.extra_tasks = [f"web={prep_dir / 'math'}"]
    with pytest.raises(ConfigError, match="config.pack.extra_tasks: 'web' is the name of a task"):
        pack.pack(config)
    assert not (tmp_path / "out").exists()
