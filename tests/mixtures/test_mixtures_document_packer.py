"""The packer and the row record: full rows, nothing truncated or lost, targets follow the document."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mixtures import rows as rows_lib
from mixtures.document_packer import DocumentPacker


def _docs(lengths):
    rng = np.random.default_rng(len(lengths))
    return [(i, rng.integers(4, 1000, size=n).astype(np.int32)) for i, n in enumerate(lengths)]


def _pack_all(docs, seq_len, lookahead):
    packer = DocumentPacker(docs, seq_len, lookahead, max_padding=0.0)
    rows = []
    while row := packer.next_row():
        rows.append(row)
    return packer, rows


def _batch(rows, seq_len):
    """The rows through their stored form: encoded as records, decoded into batch arrays."""
    out = rows_lib.empty_batch(len(rows), seq_len)
    for r, row in enumerate(rows):
        record = rows_lib.encode(row)
        assert rows_lib.token_count(record) == sum(p.end - p.start for p in row)
        rows_lib.decode_into(record, out, r)
    return out


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=40),
    seq_len=st.integers(1, 128),
    lookahead=st.integers(1, 8),
)
def test_tokens_in_equal_tokens_out_and_documents_reassemble(lengths, seq_len, lookahead):
    docs = _docs(lengths)
    packer, rows = _pack_all(docs, seq_len, lookahead)
    batch = _batch(rows, seq_len)
    assert packer.tokens_in == sum(lengths) == int((batch["segment_ids"] > 0).sum())
    # every row but the last is full
    assert all(sum(p.end - p.start for p in row) == seq_len for row in rows[:-1])
    # following the pieces in row order rebuilds every document exactly, in pieces that tile it
    rebuilt = {}
    for row in rows:
        for p in row:
            key = id(p.tokens)
            assert p.start == len(rebuilt.get(key, []))
            rebuilt[key] = np.concatenate(
                [rebuilt.get(key, np.zeros(0, np.int32)), p.tokens[p.start : p.end]]
            )
    assert sorted(map(tuple, rebuilt.values())) == sorted(tuple(t) for _, t in docs)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 200), min_size=1, max_size=30), seq_len=st.integers(2, 64))
def test_row_arrays_follow_the_documents(lengths, seq_len):
    _, rows = _pack_all(_docs(lengths), seq_len, 4)
    batch = _batch(rows, seq_len)
    for r, row in enumerate(rows):
        o = 0
        for segment, p in enumerate(row, start=1):
            n = p.end - p.start
            assert (batch["segment_ids"][r, o : o + n] == segment).all()
            assert (batch["positions"][r, o : o + n] == np.arange(n)).all()
            expected_targets = p.tokens[p.start + 1 : p.end + 1]
            m = len(expected_targets)
            assert (batch["targets"][r, o : o + m] == expected_targets).all()
            assert (batch["loss_weights"][r, o : o + m] == 1).all()
            assert batch["loss_weights"][r, o + m : o + n].sum() == 0  # only a document's last token
            o += n
        assert batch["segment_ids"][r, o:].sum() == 0 and batch["loss_weights"][r, o:].sum() == 0


def test_best_fit_cuts_fewer_documents_than_plain_concatenation():
    rng = np.random.default_rng(0)
    lengths = rng.geometric(1 / 300, size=2000)
    docs = _docs(list(lengths))

    def cuts(lookahead, max_padding):
        packer = DocumentPacker(docs, 1024, lookahead, max_padding)
        rows = list(iter(packer.next_row, []))
        assert all(sum(p.end - p.start for p in row) >= 1024 * (1 - max_padding) for row in rows[:-1])
        return sum(not p.ends_document for row in rows for p in row)

    assert cuts(64, 0.005) < cuts(1, 0.0) / 2
