"""Decontamination: find eval-set text in training documents; drop or cut it.

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
1`` characters is found while indexing about a quarter of the windows. The first text field
of an item (its question) is indexed on its own too, and a part shorter than that is
indexed with every window of ``min_chars`` characters; parts shorter than ``min_chars`` are
skipped (too short to tell a leak from a common phrase). ``action="cut"`` removes each match
with ``cut_window_chars`` around it and keeps the remaining pieces of at least
``min_piece_chars``; a document cut into more than ``max_pieces`` pieces, or with nothing
left, is dropped, as in GPT-3.

The index is never part of the job graph: only the eval sets' paths are, and each worker
process loads the files (through common/fs.py, so ``gs://`` works) and builds the index
once in ``DoFn.setup``. Documents are matched with a vectorised lookup.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import ml_collections
import numpy as np
from apache_beam.metrics import Metrics

from common import checks
from data_pipeline.eval_sets import DEFAULT_ID_FIELDS, DEFAULT_TEXT_FIELDS, EvalItem, load_eval_sets
from data_pipeline.records import REJECTED, rejection

REASON = "contaminated"
NAMESPACE = "decontamination"
ACTIONS = ("drop", "cut")
_NOT_ALNUM = re.compile(r"[\W_]+")
_POLY = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xBF58476D1CE4E5B9)


def default_config() -> ml_collections.ConfigDict:
    """Fields of ``config.decontamination`` (also read by ``eval_sets.load_eval_sets``)."""
    return ml_collections.ConfigDict(
        {
            "enabled": True,
            "window_chars": 50,  # letters+digits in a matching window (about ten words)
            "min_chars": 35,  # shorter item parts are matched whole-window at this size; below, skipped
            "winnow": 8,  # index the smallest of every `winnow` consecutive window hashes
            "action": "drop",  # drop | cut
            "cut_window_chars": 200,
            "min_piece_chars": 200,
            "max_pieces": 10,
            "builtin_eval_sets": ("humaneval",),
            "text_fields": DEFAULT_TEXT_FIELDS,
            "id_fields": DEFAULT_ID_FIELDS,
        }
    )


def validate(config: ml_collections.ConfigDict, prefix: str = "decontamination") -> None:
    """Fail at start with the field name on bad values."""
    checks.one_of(config.action, ACTIONS, f"{prefix}.action")
    checks.positive(config.min_chars, f"{prefix}.min_chars")
    checks.positive(config.winnow, f"{prefix}.winnow")
    checks.require(config.window_chars >= config.min_chars, f"{prefix}.window_chars",
                   f"must be >= min_chars={config.min_chars}", config.window_chars)
    for field in ("cut_window_chars", "min_piece_chars", "max_pieces"):
        checks.non_negative(config[field], f"{prefix}.{field}")


def normalized_chars(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(code points of the lower-cased letters and digits of ``text``, their offsets in ``text``)."""
    lower = text.lower()
    if len(lower) != len(text):  # a few characters lower-case to two; keep offsets exact
        lower = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    keep = np.frombuffer(_NOT_ALNUM.sub(lambda m: "\0" * len(m.group()), lower).encode("utf-32-le"), dtype=np.uint32)
    offsets = np.flatnonzero(keep)
    return keep[offsets].astype(np.uint64), offsets


def window_hashes(codes: np.ndarray, k: int) -> np.ndarray:
    """Hash of the ``k``-character window starting at every position (empty when shorter)."""
    count = len(codes) - k + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        mixed = (codes + np.uint64(1)) * _MIX
        out = mixed[:count].copy()
        for i in range(1, k):
            out *= _POLY
            out += mixed[i : i + count]
    return out


def _has_letter(codes: np.ndarray, k: int) -> np.ndarray:
    """Mask of windows with at least one letter: digits-only windows are page numbers, not leaks."""
    digits = np.cumsum(np.concatenate([[0], (codes >= 48) & (codes <= 57)]))
    return (digits[k:] - digits[:-k]) < k


def winnow(hashes: np.ndarray, w: int) -> np.ndarray:
    """The hashes winnowing keeps: the minimum of each run of ``w`` consecutive window hashes."""
    if len(hashes) <= w:
        return np.unique(hashes)
    windows = np.lib.stride_tricks.sliding_window_view(hashes, w)
    return np.unique(windows.min(axis=1))


class NgramIndex:
    """Window hash -> eval items containing it, for the two window sizes in use."""

    def __init__(self, items: list[EvalItem], window: int, min_chars: int, w: int) -> None:
        self.items = items
        self.skipped = 0
        keys: dict[int, list[np.ndarray]] = {window: [], min_chars: []}
        owners: dict[int, list[np.ndarray]] = {window: [], min_chars: []}
        for i, item in enumerate(items):
            indexed = False
            for part in item.parts:
                codes, _ = normalized_chars(part)
                if len(codes) < min_chars:
                    continue
                indexed = True
                if len(codes) >= window + w - 1:
                    k, grams = window, winnow(window_hashes(codes, window)[_has_letter(codes, window)], w)
                else:
                    k = min(window, len(codes)) if len(codes) >= window else min_chars
                    grams = np.unique(window_hashes(codes, k)[_has_letter(codes, k)])
                keys.setdefault(k, []).append(grams)
                owners.setdefault(k, []).append(np.full(len(grams), i, dtype=np.int32))
            self.skipped += not indexed
        self.keys, self.owners = {}, {}
        for k in keys:
            if keys[k]:
                all_keys, all_owners = np.concatenate(keys[k]), np.concatenate(owners[k])
                order = np.argsort(all_keys, kind="stable")
                self.keys[k], self.owners[k] = all_keys[order], all_owners[order]

    def matches(self, codes: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """(window size, start position, item index) for every indexed window in a document."""
        for k, keys in self.keys.items():
            grams = window_hashes(codes, k)
            if not len(grams):
                continue
            lo = np.searchsorted(keys, grams, side="left")
            hi = np.searchsorted(keys, grams, side="right")
            for start in np.flatnonzero(hi > lo).tolist():
                for j in range(lo[start], hi[start]):
                    yield k, start, int(self.owners[k][j])


def cut_spans(text: str, spans: list[tuple[int, int]], window: int, min_piece: int) -> list[str]:
    """The pieces of ``text`` left after removing each span widened by ``window`` chars."""
    pieces, pos = [], 0
    for start, end in sorted((max(0, s - window), min(len(text), e + window)) for s, e in spans):
        if start > pos:
            pieces.append(text[pos:start])
        pos = max(pos, end)
    pieces.append(text[pos:])
    return [p.strip() for p in pieces if len(p.strip()) >= min_piece]


_INDEX_CACHE: dict[str, NgramIndex] = {}


def load_index(config: ml_collections.ConfigDict, eval_specs: dict[str, str]) -> NgramIndex:
    """The index of the eval sets, built once per process (DoFn instances share it)."""
    key = repr((sorted(eval_specs.items()), sorted(config.to_dict().items())))
    if key not in _INDEX_CACHE:
        items = load_eval_sets(eval_specs, config)
        _INDEX_CACHE[key] = NgramIndex(items, int(config.window_chars), int(config.min_chars), int(config.winnow))
    return _INDEX_CACHE[key]


class _Decontaminate(beam.DoFn):
    """record -> kept (maybe cut) record | tagged rejected | tagged hits."""

    def __init__(self, config: ml_collections.ConfigDict, eval_specs: dict[str, str]) -> None:
        self._config = ml_collections.ConfigDict(config.to_dict())
        self._specs = dict(eval_specs)  # paths only: the items are loaded on the worker
        self._index: NgramIndex | None = None
        self._contaminated = Metrics.counter(NAMESPACE, REASON)
        self._cut = Metrics.counter(NAMESPACE, "cut_documents")

    def setup(self) -> None:
        self._index = load_index(self._config, self._specs)

    def process(self, record: dict[str, Any]) -> Iterator[Any]:
        codes, offsets = normalized_chars(record["text"])
        seen, cut = set(), []
        for k, start, i in self._index.matches(codes):
            cut.append((int(offsets[start]), int(offsets[start + k - 1]) + 1))
            item = self._index.items[i]
            if i not in seen:
                seen.add(i)
                Metrics.counter(NAMESPACE, f"hits_{item.eval_set}").inc()
                yield beam.pvalue.TaggedOutput(
                    "hits",
                    {
                        "id": record["id"],
                        "eval_set": item.eval_set,
                        "eval_item_id": item.item_id,
                        "match": "".join(map(chr, codes[start : start + k].tolist())),
                    },
                )
        if not cut:
            yield record
            return
        c = self._config
        if c.action == "cut":
            pieces = cut_spans(record["text"], cut, int(c.cut_window_chars), int(c.min_piece_chars))
            if pieces and len(pieces) <= c.max_pieces:
                self._cut.inc()
                yield {**record, "text": "\n\n".join(pieces)}
                return
        self._contaminated.inc()
        yield beam.pvalue.TaggedOutput(REJECTED, rejection(record, REASON))


class Decontaminate(beam.PTransform):
    """records -> (kept, rejected, contamination hits ``{id, eval_set, eval_item_id, match}``).

    ``eval_specs`` is ``{NAME: PATH}`` (see eval_sets); ``config.builtin_eval_sets`` are added.
    """

    def __init__(self, config: ml_collections.ConfigDict, eval_specs: dict[str, str]) -> None:
        super().__init__()
        validate(config)
        self._config = config
        self._eval_specs = dict(eval_specs)

    def expand(self, records: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection, beam.PCollection]:
        out = records | "MatchEvalNgrams" >> beam.ParDo(_Decontaminate(self._config, self._eval_specs)).with_outputs(
            "rejected", "hits", main="kept"
        )
        return out.kept, out[REJECTED], out.hits
