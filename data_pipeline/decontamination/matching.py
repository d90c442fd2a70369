"""Decontamination's matching: eval-set text found in a document, without Beam.

Text is compared as its string of lower-cased letters and digits, everything else removed
(``normalized_chars``): case, whitespace, punctuation and how numbers are grouped do not
exist there, so ``1,000`` / ``1 , 000`` / ``1000``, ``f(a, b)`` / ``f ( a , b )`` / ``fab``
and a re-wrapped or re-cased copy all look the same. (Matching word 13-grams, as GPT-3 did,
missed a pasted item whenever punctuation inside a token was dropped or spaced out, since
that changes the words themselves, and every 13-gram of a short math question spans a
number.) A match is a shared window of ``window_chars`` characters (50 by default: about
ten words) that holds at least one letter (``1 2 3 ... 15`` is page numbering). Items are
indexed by winnowing (Schleimer et al. 2003): the smallest window hash of every ``winnow``
consecutive windows, which guarantees that any shared stretch of ``window_chars + winnow -
1`` characters is found while indexing about a quarter of the windows. Questions and
answers are not the same evidence: an item's answer or worked solution (``answer_fields``)
matches only in windows of ``answer_window_chars`` (100), and the whole item's windows must
hold at least half a window of its question (all of a shorter question). Worked solutions
share 50-character sentences ("substituting the first equation into the second equation
we") with other solutions: with answers in 50-character windows, 24 of GSM8K train's 7,473
documents were flagged, 19 by answer text alone; with 75, 100 or 200 only the 5 that share
question text (bench/RESULTS.md). The question is indexed on its own too, and a question
shorter than a window is indexed with every window of ``min_chars`` characters. A whole
item shorter than that (BBH's boolean expressions) matches only as a whole, from
``min_item_chars`` on; a question part shorter than ``min_chars`` is skipped (too short to
tell a leak from a common phrase).
An item that none of that covers, such as BBH's multistep arithmetic (``((-1 + 2 + 9 * 5) -
(-2 + -4 + -4 * -7)) =`` / ``24``: no letters at all, so its letters+digits form is a digit
run, like page numbers), is matched whole in its expression form, which keeps the operators
``+-*/=<>^%`` as well (``-1+2+9*5--2+-4+-4*-7``), when that has ``expression_chars``
characters and four operators.
Documents are matched with a vectorised lookup. The Beam stage (``decontaminate.py``), the
downstream reports (``evals.contamination``) and the studies' probe checks all use this index;
it imports no Beam, so the commands that only look items up start fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import ml_collections
import numpy as np

from common import checks
from data_pipeline.decontamination.eval_sets import (
    DEFAULT_ANSWER_FIELDS,
    DEFAULT_ID_FIELDS,
    DEFAULT_TEXT_FIELDS,
    EvalItem,
    load_eval_sets,
)

ACTIONS = ("drop", "cut")
_POLY = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xBF58476D1CE4E5B9)
_POLY_INV = np.uint64(pow(int(_POLY), -1, 2**64))


def default_config() -> ml_collections.ConfigDict:
    """Fields of ``config.decontamination`` (also read by ``eval_sets.load_eval_sets``)."""
    return ml_collections.ConfigDict(
        {
            "enabled": True,
            "window_chars": 50,  # letters+digits in a matching window (about ten words)
            "min_chars": 35,  # item parts shorter than window_chars are matched in windows of this size
            "min_item_chars": 20,  # whole items shorter than min_chars are matched whole; shorter, skipped
            # Parts the letters+digits form cannot index (BBH's arithmetic: no letters) are
            # matched whole in a form that keeps the operators, from this many characters on.
            "expression_chars": 16,
            # Answer and solution text matches only in windows this long (about 20 words): a
            # worked solution shares 50-character sentences with other solutions (GSM8K train).
            "answer_window_chars": 100,
            "winnow": 8,  # index the smallest of every `winnow` consecutive window hashes
            "action": "drop",  # drop | cut
            # Positive controls (data_pipeline/decontamination/controls.py): items planted per eval set and
            # variant; a run whose recall for an eval set is below the floor fails.
            "control_items_per_set": 20,
            "control_min_recall": 0.95,
            "control_seed": 0,
            "cut_window_chars": 200,
            "min_piece_chars": 200,
            "max_pieces": 10,
            "builtin_eval_sets": ("humaneval",),
            "text_fields": DEFAULT_TEXT_FIELDS,
            "answer_fields": DEFAULT_ANSWER_FIELDS,
            "id_fields": DEFAULT_ID_FIELDS,
        }
    )


def validate(config: ml_collections.ConfigDict, prefix: str = "decontamination") -> None:
    """Fail at start with the field name on bad values."""
    checks.one_of(config.action, ACTIONS, f"{prefix}.action")
    checks.positive(config.min_chars, f"{prefix}.min_chars")
    checks.positive(config.winnow, f"{prefix}.winnow")
    checks.positive(config.expression_chars, f"{prefix}.expression_chars")
    checks.positive(config.control_items_per_set, f"{prefix}.control_items_per_set")
    checks.fraction(config.control_min_recall, f"{prefix}.control_min_recall")
    checks.require(
        0 < config.min_item_chars <= config.min_chars,
        f"{prefix}.min_item_chars",
        f"must be in (0, min_chars={config.min_chars}]",
        config.min_item_chars,
    )
    checks.require(
        config.answer_window_chars >= config.window_chars,
        f"{prefix}.answer_window_chars",
        f"must be >= window_chars={config.window_chars}",
        config.answer_window_chars,
    )
    checks.require(
        config.window_chars >= config.min_chars,
        f"{prefix}.window_chars",
        f"must be >= min_chars={config.min_chars}",
        config.window_chars,
    )
    for field in ("cut_window_chars", "min_piece_chars", "max_pieces"):
        checks.non_negative(config[field], f"{prefix}.{field}")


_ASCII_ALNUM = np.array([chr(c).isalnum() for c in range(128)] + [False])
OPERATORS = "+-*/=<>^%"
_ASCII_EXPRESSION = _ASCII_ALNUM | np.isin(np.arange(129), [ord(c) for c in OPERATORS])
# Unicode minus, times, divide and en dash, as the ASCII operators they stand for.
_WIDE_OPERATORS = {"\u2212": "-", "\u00d7": "*", "\u00f7": "/", "\u2013": "-"}
_MIN_OPERATORS = 4  # an expression form with fewer operators is a phrase, not an expression
_OPERATOR_CODES = np.array([ord(c) for c in OPERATORS], dtype=np.uint64)


def normalized_chars(text: str, operators: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(code points of the lower-cased letters and digits of ``text``, their offsets in ``text``).

    ``operators=True`` keeps ``OPERATORS`` too (Unicode minus, times, divide and en dash as
    their ASCII forms): the expression form, for items that are arithmetic without words.
    """
    lower = text.lower()
    if len(lower) != len(text):  # a few characters lower-case to two; keep offsets exact
        lower = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    codes = np.frombuffer(lower.encode("utf-32-le"), dtype=np.uint32)
    keep = (_ASCII_EXPRESSION if operators else _ASCII_ALNUM)[np.minimum(codes, 128)]
    wide = codes >= 128
    if wide.any():
        distinct = sorted(c for c in set(lower) if ord(c) >= 128)
        table = np.array([ord(c) for c in distinct], dtype=np.uint32)
        kept = [c.isalnum() or (operators and c in _WIDE_OPERATORS) for c in distinct]
        keep[wide] = np.array(kept)[np.searchsorted(table, codes[wide])]
    offsets = np.flatnonzero(keep)
    codes = codes[offsets]
    if operators and wide.any():
        for wide_op, ascii_op in _WIDE_OPERATORS.items():
            codes = np.where(codes == ord(wide_op), np.uint32(ord(ascii_op)), codes)
    return codes.astype(np.uint64), offsets


_WHOLE, _QUESTION, _ANSWER = 0, 1, 2  # the parts of an item that CharWindowIndex indexes
_NO_LIMIT = 1 << 62


@dataclasses.dataclass(frozen=True)
class _Part:
    """One text of an item to index: whose, which part, and (whole items) its question's length."""

    owner: int
    text: str
    kind: int
    head: int


class _Powers:
    """P**t and P**-t (mod 2**64) for t < n, grown on demand: rolling window hashes in O(n)."""

    def __init__(self) -> None:
        self.up = self.down = np.ones(1, dtype=np.uint64)

    def upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.up) < n:
            size = max(n, 2 * len(self.up))
            with np.errstate(over="ignore"):
                self.up, self.down = (
                    np.cumprod(_series(base, size), dtype=np.uint64) for base in (_POLY, _POLY_INV)
                )
        return self.up, self.down


def _series(base: np.uint64, size: int) -> np.ndarray:
    """[1, base, base, ...] as uint64 (cumprod turns it into the powers)."""
    out = np.full(size, base, dtype=np.uint64)
    out[0] = 1
    return out


_POWERS = _Powers()


def _prefix(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S, P powers): S[i] sums ``m[t] * P**-t`` for t < i, ``m`` the mixed code points."""
    up, down = _POWERS.upto(len(codes) + 1)
    with np.errstate(over="ignore"):
        mixed = (codes + np.uint64(1)) * _MIX
        prefix = np.concatenate(
            [np.zeros(1, dtype=np.uint64), np.cumsum(mixed * down[: len(codes)], dtype=np.uint64)]
        )
    return prefix, up


def _windows(prefix: np.ndarray, up: np.ndarray, k: int) -> np.ndarray:
    count = len(prefix) - k
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (prefix[k:] - prefix[:count]) * up[k - 1 : k - 1 + count]


def window_hashes(codes: np.ndarray, k: int) -> np.ndarray:
    """Hash of the ``k``-character window starting at every position (empty when shorter).

    ``sum_j m[i+j] * P**(k-1-j)`` with ``m`` the mixed code points, from one prefix sum:
    ``(S[i+k] - S[i]) * P**(i+k-1)`` where ``S`` sums ``m[t] * P**-t`` (P is odd, so
    invertible mod 2**64; all arithmetic wraps). The hash does not depend on ``i``.
    """
    return _windows(*_prefix(codes), k)


def _has_letter(codes: np.ndarray, k: int) -> np.ndarray:
    """Mask of windows with at least one letter: digits-only windows are page numbers, not leaks."""
    digits = np.cumsum(np.concatenate([[0], (codes >= 48) & (codes <= 57)]))
    return (digits[k:] - digits[:-k]) < k


class CharWindowIndex:
    """Window hash -> eval items containing it, for the window sizes in use.

    Built in a few vectorised passes over all item parts at once (one code-point array
    with the parts' boundaries), so indexing tens of thousands of items takes seconds.
    Three parts per item: the whole item, whose ``window`` windows must hold at least half
    a window of question (all of it, when the question is shorter), so an answer's generic
    sentences cannot match on their own; the question alone (also matched in ``min_chars``
    windows when short); the answer alone, in ``answer_window`` windows only.
    """

    _BATCH_CHARS = 1 << 24  # code points per pass (bounds the temporary arrays)

    def __init__(
        self,
        items: list[EvalItem],
        window: int,
        min_chars: int,
        w: int,
        min_item_chars: int = 0,
        expression_chars: int = 16,
        answer_window: int | None = None,
    ) -> None:
        self.items = items
        self.window, self.min_chars, self.w, self.min_item_chars = window, min_chars, w, min_item_chars
        self.expression_chars = expression_chars
        self.answer_window = answer_window or window
        parts = []  # _Part rows; the whole item's question length bounds where its windows start
        for i, item in enumerate(items):
            question = item.question_text
            head = len(normalized_chars(question)[0]) if question != item.text else _NO_LIMIT
            parts.append(_Part(i, item.text, _WHOLE, head))
            if question != item.text:
                parts.append(_Part(i, question, _QUESTION, _NO_LIMIT))
            if item.answer:
                parts.append(_Part(i, item.answer, _ANSWER, _NO_LIMIT))
        found: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        indexed = np.zeros(len(items), dtype=bool)
        start = 0
        while start < len(parts):
            stop, chars = start, 0
            while stop < len(parts) and (chars < self._BATCH_CHARS or stop == start):
                chars += len(parts[stop].text)
                stop += 1
            self._index_batch(parts[start:stop], found, indexed)
            start = stop
        self._index_expressions(indexed)
        self.skipped = int((~indexed).sum())
        self.keys, self.owners = {}, {}
        for k, pieces in found.items():
            if sum(len(p[0]) for p in pieces):
                all_keys = np.concatenate([p[0] for p in pieces])
                all_owners = np.concatenate([p[1] for p in pieces])
                order = np.lexsort((all_owners, all_keys))
                all_keys, all_owners = all_keys[order], all_owners[order]
                distinct = np.ones(len(all_keys), dtype=bool)
                distinct[1:] = (all_keys[1:] != all_keys[:-1]) | (all_owners[1:] != all_owners[:-1])
                self.keys[k], self.owners[k] = all_keys[distinct], all_owners[distinct]

    def _window_of(self, kind: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Each part's window size (0: not indexed in windows)."""
        answer = np.where(lengths >= self.answer_window, self.answer_window, 0)
        question = np.where(
            lengths >= self.window, self.window, np.where(lengths >= self.min_chars, self.min_chars, 0)
        )
        return np.where(kind == _ANSWER, answer, question)

    def _index_batch(self, parts: list[_Part], found: dict, indexed: np.ndarray) -> None:
        codes, offsets = normalized_chars("\x00".join(p.text for p in parts))
        # Part p covers codes[bounds[p]:bounds[p + 1]] (the separators are not letters or digits).
        text_starts = np.cumsum([0] + [len(p.text) + 1 for p in parts])
        bounds = np.searchsorted(offsets, text_starts)
        lengths = np.diff(bounds)
        owner_of_part = np.array([p.owner for p in parts], dtype=np.int32)
        kind = np.array([p.kind for p in parts])
        head = np.array([p.head for p in parts], dtype=np.int64)
        part_of = np.repeat(np.arange(len(parts)), lengths)
        size = self._window_of(kind, lengths)
        indexed[owner_of_part[(size > 0) & (kind != _ANSWER)]] = True
        prefix, up = _prefix(codes)
        # Whole items too short for a min_chars window are matched whole (the item's
        # every letter and digit, in order), if they have a letter: BBH's short tasks.
        whole = (
            (kind == _WHOLE)
            & (lengths >= self.min_item_chars)
            & (self.min_item_chars > 0)
            & (lengths < self.min_chars)
        )
        letters = np.concatenate([[0], np.cumsum((codes < 48) | (codes > 57))])
        whole &= (letters[bounds[1:]] - letters[bounds[:-1]]) > 0
        for p in np.flatnonzero(whole).tolist():
            k = int(lengths[p])
            with np.errstate(over="ignore"):
                key = (prefix[bounds[p] + k] - prefix[bounds[p]]) * up[bounds[p] + k - 1]
            found.setdefault(k, []).append((np.array([key], dtype=np.uint64), owner_of_part[p : p + 1]))
            indexed[owner_of_part[p]] = True
        for k in sorted({self.window, self.min_chars, self.answer_window}):
            hashes = _windows(prefix, up, k)
            if not len(hashes):
                continue
            n = len(hashes)
            part = part_of[:n]
            offset = np.arange(n) - bounds[part]
            # A window of the whole item holds min(question, half a window) question characters.
            valid = (size[part] == k) & (offset + k <= lengths[part]) & _has_letter(codes, k)
            valid &= offset <= np.maximum(0, head[part] - (k + 1) // 2)
            # Long parts: winnowed; shorter than k + w - 1: every window.
            long_part = (lengths >= k + self.w - 1)[part]
            chosen = valid & ~long_part
            if n >= self.w:
                sentinel = np.where(valid & long_part, hashes, np.uint64(np.iinfo(np.uint64).max))
                mark = np.zeros(n, dtype=bool)
                runs = np.lib.stride_tricks.sliding_window_view(sentinel, self.w)
                mark[runs.argmin(axis=1) + np.arange(len(runs))] = True
                chosen |= mark & valid & long_part
            else:
                chosen |= valid & long_part
            picks = np.flatnonzero(chosen)
            found.setdefault(k, []).append((hashes[picks], owner_of_part[part_of[picks]]))

    def _index_expressions(self, indexed: np.ndarray) -> None:
        """Expression-form keys for the items that no letters+digits key covers.

        Such an item (BBH's ``((-1 + 2 + 9 * 5) - (-2 + -4 + -4 * -7)) =`` / ``24``) has
        no letter, or too few letters and digits to tell from a common phrase; with its
        operators kept it is distinctive. Each part (the whole item, its question) with
        ``expression_chars`` characters and ``_MIN_OPERATORS`` operators in that form is
        matched whole: looked up by its first ``expression_chars`` characters, then
        checked over its full length. Brackets are not kept (they are dropped or spaced
        out as freely as punctuation).
        """
        m = self.expression_chars
        rows = []  # (hash of the first m characters, hash of the whole form, its length, item)
        for i in np.flatnonzero(~indexed).tolist():
            item = self.items[i]
            for part in {item.text, item.question_text}:
                codes, _ = normalized_chars(part, operators=True)
                while len(codes) and codes[-1] == ord("="):  # "expression =" also leaks without "="
                    codes = codes[:-1]
                if len(codes) < m or np.isin(codes, _OPERATOR_CODES).sum() < _MIN_OPERATORS:
                    continue
                prefix, up = _prefix(codes)
                rows.append((_windows(prefix, up, m)[0], _windows(prefix, up, len(codes))[0], len(codes), i))
                indexed[i] = True
        rows.sort()
        self.expression_keys = np.array([r[0] for r in rows], dtype=np.uint64)
        self.expression_full = np.array([r[1] for r in rows], dtype=np.uint64)
        self.expression_lengths = np.array([r[2] for r in rows], dtype=np.int64)
        self.expression_owners = np.array([r[3] for r in rows], dtype=np.int64)

    def find(self, text: str) -> Iterator[tuple[int, int, int, str]]:
        """(start, end) of every match in ``text``, the item index, the matched normalised string.

        Both forms: letters+digits windows (``matches``) and whole expression-form items.
        """
        codes, offsets = normalized_chars(text)
        for k, start, i in self.matches(codes):
            yield int(offsets[start]), int(offsets[start + k - 1]) + 1, i, _string(codes[start : start + k])
        if len(self.expression_keys):
            codes, offsets = normalized_chars(text, operators=True)
            for start, k, i in self.expression_matches(codes):
                yield (
                    int(offsets[start]),
                    int(offsets[start + k - 1]) + 1,
                    i,
                    _string(codes[start : start + k]),
                )

    def expression_matches(self, codes: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """(start, length, item index) of every whole expression-form item in ``codes``."""
        prefix, up = _prefix(codes)
        grams = _windows(prefix, up, self.expression_chars)
        if not len(grams) or not len(self.expression_keys):
            return
        keys = self.expression_keys
        lo = np.minimum(np.searchsorted(keys, grams), len(keys) - 1)
        for start in np.flatnonzero(keys[lo] == grams).tolist():
            j = int(lo[start])
            while j < len(keys) and keys[j] == grams[start]:
                end = start + int(self.expression_lengths[j])
                if end <= len(codes):
                    with np.errstate(over="ignore"):
                        full = (prefix[end] - prefix[start]) * up[end - 1]
                    if full == self.expression_full[j]:
                        yield start, end - start, int(self.expression_owners[j])
                j += 1

    def matches(self, codes: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """(window size, start position, item index) for every indexed window in a document."""
        prefix, up = _prefix(codes)
        for k, keys in self.keys.items():
            grams = _windows(prefix, up, k)
            if not len(grams):
                continue
            lo = np.minimum(np.searchsorted(keys, grams), len(keys) - 1)
            for start in np.flatnonzero(keys[lo] == grams).tolist():
                j = int(lo[start])
                while j < len(keys) and keys[j] == grams[start]:
                    yield k, start, int(self.owners[k][j])
                    j += 1


def _string(codes: np.ndarray) -> str:
    return "".join(map(chr, codes.tolist()))


CONTEXT_CHARS = 80


def highlight(text: str, start: int, end: int) -> str:
    """The matched stretch in [[brackets]] with ``CONTEXT_CHARS`` of the document either side,
    whitespace runs as one space: what a reader needs to judge a hit."""
    before = text[max(0, start - CONTEXT_CHARS) : start]
    after = text[end : end + CONTEXT_CHARS]
    return " ".join(f"{before}[[{text[start:end]}]]{after}".split())


def cut_spans(text: str, spans: list[tuple[int, int]], window: int, min_piece: int) -> list[str]:
    """The pieces of ``text`` left after removing each span widened by ``window`` chars."""
    pieces, pos = [], 0
    for start, end in sorted((max(0, s - window), min(len(text), e + window)) for s, e in spans):
        if start > pos:
            pieces.append(text[pos:start])
        pos = max(pos, end)
    pieces.append(text[pos:])
    return [p.strip() for p in pieces if len(p.strip()) >= min_piece]


_INDEX_CACHE: dict[str, CharWindowIndex] = {}


def build_index(items: list[EvalItem], config: ml_collections.ConfigDict) -> CharWindowIndex:
    """The index of ``items`` under ``config`` (``config.decontamination``'s fields)."""
    return CharWindowIndex(
        items,
        int(config.window_chars),
        int(config.min_chars),
        int(config.winnow),
        int(config.min_item_chars),
        int(config.expression_chars),
        int(config.answer_window_chars),
    )


def load_index(config: ml_collections.ConfigDict, eval_specs: dict[str, str]) -> CharWindowIndex:
    """The index of the eval sets, built once per process (DoFn instances share it)."""
    key = repr((sorted(eval_specs.items()), sorted(config.to_dict().items())))
    if key not in _INDEX_CACHE:
        _INDEX_CACHE[key] = build_index(load_eval_sets(eval_specs, config), config)
    return _INDEX_CACHE[key]
