"""The packed row as stored on disk, and its decoding into the trainer's batch arrays.

One record per row, little-endian int32:

    [n_pieces, tail_target, len_1, ..., len_n, tokens of piece 1, ..., tokens of piece n]

Every piece but the last ends its document (the packer cuts a document only at a row's
end), so the row needs one extra number: `tail_target`, the token that follows the last
piece in its document when the document continues in another row, else -1. Segment ids,
positions, targets and loss weights are all derived from the lengths, so a record is
4 * (seq_len + n + 2) bytes at most and decoding is a few vectorised numpy operations
per row, far from being the bottleneck (bench/RESULTS.md, Packed data feed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mixtures.document_packer import Piece

BATCH_ARRAYS = ("inputs", "targets", "segment_ids", "positions")


def encode(pieces: Sequence[Piece]) -> bytes:
    """The record of one row (a `DocumentPacker.next_row()` result)."""
    last = pieces[-1]
    tail = -1 if last.ends_document else int(last.tokens[last.end])
    lengths = [p.end - p.start for p in pieces]
    return (
        np.concatenate(
            [
                np.array([len(pieces), tail, *lengths], np.int32),
                *(np.asarray(p.tokens[p.start : p.end], np.int32) for p in pieces),
            ]
        )
        .astype("<i4")
        .tobytes()
    )


def token_count(record: bytes) -> int:
    """Non-padding tokens of a row."""
    n = int(np.frombuffer(record, "<i4", count=1)[0])
    return len(record) // 4 - 2 - n


def empty_batch(rows: int, seq_len: int) -> dict[str, np.ndarray]:
    """Zeroed batch arrays (zeros are padding) of the layout in docs/DESIGN.md, without task_ids."""
    batch = {k: np.zeros((rows, seq_len), np.int32) for k in BATCH_ARRAYS}
    batch["loss_weights"] = np.zeros((rows, seq_len), np.float32)
    return batch


def decode_into(record: bytes, batch: dict[str, np.ndarray], r: int) -> None:
    """Writes one record into row `r` of `empty_batch` arrays.

    `targets` is the next token of the same document (across a cut too, via tail_target);
    a document's last token has no target and weight 0; positions restart at 0 on every piece.
    """
    a = np.frombuffer(record, "<i4")
    n, tail = int(a[0]), int(a[1])
    lengths = a[2 : 2 + n]
    tokens = a[2 + n :]
    m = len(tokens)
    if m > batch["inputs"].shape[1] or int(lengths.sum()) != m:
        raise ValueError(f"packed record of {m} tokens does not fit rows of {batch['inputs'].shape[1]}")
    ends = np.cumsum(lengths)
    starts = ends - lengths
    batch["inputs"][r, :m] = tokens
    batch["segment_ids"][r, :m] = np.repeat(np.arange(1, n + 1, dtype=np.int32), lengths)
    batch["positions"][r, :m] = np.arange(m, dtype=np.int32) - np.repeat(starts.astype(np.int32), lengths)
    targets, weights = batch["targets"][r], batch["loss_weights"][r]
    targets[: m - 1] = tokens[1:]
    weights[:m] = 1.0
    targets[ends - 1] = 0
    weights[ends - 1] = 0.0
    if tail >= 0:
        targets[m - 1], weights[m - 1] = tail, 1.0
