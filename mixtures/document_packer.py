"""Packs one task's documents into rows of `seq_len` tokens, cutting documents only when it must.

Each row starts with the oldest waiting document (so nothing waits forever), then takes the
largest waiting document that still fits whole (best fit over a look-ahead buffer). When
none fits, the row is closed with padding if the room left is at most `max_padding` of the
row (0.5% by default), else the oldest document is cut at the row's end and continued at
the start of the next row. So rows are >= 99.5% full (except the last row of a finite
source), no document is truncated (tokens in == tokens out), and few are cut: on a
geometric length distribution at 8192 tokens, look-ahead 64 cuts ~5x fewer documents than
plain concatenation, for 0.2% padding. SeqIO's `trim_and_pack_dataset` instead drops what
does not fit a row and pads the rest (bench/RESULTS.md, Mixtures, compares the fill).

It runs offline, inside each shard of the packing job (`mixtures.pack`); `mixtures.rows`
stores its rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

Document = tuple[int, np.ndarray]  # (index in the source, token ids)


@dataclasses.dataclass
class Piece:
    """tokens[start:end] of one document, placed in a row."""

    tokens: np.ndarray
    start: int
    end: int

    @property
    def ends_document(self) -> bool:
        return self.end == len(self.tokens)


@dataclasses.dataclass
class _Waiting:
    index: int
    tokens: np.ndarray
    offset: int = 0

    @property
    def remaining(self) -> int:
        return len(self.tokens) - self.offset


class DocumentPacker:
    """Turns a stream of documents into rows (lists of `Piece`) of exactly `seq_len` tokens."""

    def __init__(
        self, documents: Iterable[Document], seq_len: int, lookahead: int = 64, max_padding: float = 0.005
    ):
        if seq_len <= 0:
            raise ValueError(f"seq_len: must be > 0, got {seq_len}")
        if lookahead <= 0:
            raise ValueError(f"lookahead: must be > 0, got {lookahead}")
        if not 0.0 <= max_padding < 1.0:
            raise ValueError(f"max_padding: must be a fraction in [0, 1), got {max_padding}")
        self.seq_len = seq_len
        self.lookahead = lookahead
        self.max_padding_tokens = int(max_padding * seq_len)
        self._documents: Iterator[Document] = iter(documents)
        self._waiting: list[_Waiting] = []
        self._exhausted = False
        self.documents_in = 0
        self.tokens_in = 0

    def _refill(self) -> None:
        while not self._exhausted and len(self._waiting) < self.lookahead:
            try:
                index, tokens = next(self._documents)
            except StopIteration:
                self._exhausted = True
                return
            if len(tokens):
                self._waiting.append(_Waiting(int(index), np.asarray(tokens, np.int32)))
                self.documents_in += 1
                self.tokens_in += len(tokens)

    def _take(self, i: int, n: int) -> Piece:
        w = self._waiting[i]
        piece = Piece(w.tokens, w.offset, w.offset + n)
        w.offset += n
        if w.remaining == 0:
            del self._waiting[i]
        return piece

    def next_row(self) -> list[Piece]:
        """The next row's pieces; an empty list once a finite source is used up."""
        self._refill()
        if not self._waiting:
            return []
        room = self.seq_len
        row = [self._take(0, min(room, self._waiting[0].remaining))]
        room -= row[0].end - row[0].start
        while room > 0:
            self._refill()
            if not self._waiting:
                break
            fitting = [i for i, w in enumerate(self._waiting) if w.remaining <= room]
            if fitting:
                i = max(fitting, key=lambda j: self._waiting[j].remaining)
                n = self._waiting[i].remaining
            elif room <= self.max_padding_tokens:
                break  # a little padding is cheaper than cutting a document
            else:
                i, n = 0, room
            row.append(self._take(i, n))
            room -= n
        return row
