"""Decontamination: find eval-set word n-grams in training documents; drop or cut them.

Following GPT-3 (Brown et al. 2020, appendix C): text is compared as lower-cased words
with punctuation and whitespace folded, with 13-grams; items too short for a 13-gram use
8-grams, and items shorter than that are skipped (an 8-word match is the least that is not
mostly common phrases); n-grams made only of numbers are not indexed (page numbering and
counting lists match them everywhere). ``action="cut"`` removes each match with ``cut_window_chars``
around it and keeps the remaining pieces of at least ``min_piece_chars``; a document cut
into more than ``max_pieces`` pieces, or with nothing left, is dropped, as in GPT-3.

The n-gram index of the eval sets (tens of MB for all the usual benchmarks) is never part
of the job graph: only the eval sets' paths are, and each worker process loads the files
(through common/fs.py, so ``gs://`` works) and builds the index once in ``DoFn.setup``.
Documents are matched with a vectorised lookup.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import ml_collections
import numpy as np
from apache_beam.metrics import Metrics

from data_pipeline.eval_sets import DEFAULT_ID_FIELDS, DEFAULT_TEXT_FIELDS, EvalItem, load_eval_sets
from data_pipeline.records import REJECTED, rejection
from data_pipeline.shingles import ngram_hashes, normalized_words, word_hashes, word_spans

REASON = "contaminated"
NAMESPACE = "decontamination"
ACTIONS = ("drop", "cut")


def default_config() -> ml_collections.ConfigDict:
    """Fields of ``config.decontamination`` (also read by ``eval_sets.load_eval_sets``)."""
    return ml_collections.ConfigDict(
        {
            "enabled": True,
            "ngram": 13,
            "short_ngram": 8,  # for items with fewer than `ngram` words; shorter items skipped
            "action": "drop",  # drop | cut
            "cut_window_chars": 200,
            "min_piece_chars": 200,
            "max_pieces": 10,
            "builtin_eval_sets": ("humaneval",),
            "text_fields": DEFAULT_TEXT_FIELDS,
            "id_fields": DEFAULT_ID_FIELDS,
        }
    )


def validate(config: ml_collections.ConfigDict, prefix: str = "config.decontamination") -> None:
    """Fail at start with the field name on bad values."""
    if config.action not in ACTIONS:
        raise ValueError(f"{prefix}.action: must be one of {ACTIONS}, got {config.action!r}")
    if config.short_ngram < 1:
        raise ValueError(f"{prefix}.short_ngram: must be >= 1, got {config.short_ngram}")
    if config.ngram < config.short_ngram:
        raise ValueError(f"{prefix}.ngram: must be >= short_ngram={config.short_ngram}, got {config.ngram}")
    for field in ("cut_window_chars", "min_piece_chars", "max_pieces"):
        if config[field] < 0:
            raise ValueError(f"{prefix}.{field}: must be >= 0, got {config[field]}")


def _has_word(words: list[str], n: int) -> np.ndarray:
    """Mask of n-grams with at least one non-number: "1 2 3 ... 13" is page numbering, not a leak."""
    numeric = np.cumsum([0] + [w.isdigit() for w in words])
    return (numeric[n:] - numeric[:-n]) < n


class NgramIndex:
    """n-gram hash -> eval items containing it, for the two n-gram sizes in use."""

    def __init__(self, items: list[EvalItem], ngram: int, short_ngram: int) -> None:
        self.items = items
        self.skipped = 0
        table: dict[int, dict[int, list[int]]] = {ngram: defaultdict(list), short_ngram: defaultdict(list)}
        for i, item in enumerate(items):
            words = normalized_words(item.text)
            n = ngram if len(words) >= ngram else short_ngram
            if len(words) < n:
                self.skipped += 1
                continue
            for h in np.unique(ngram_hashes(word_hashes(words), n)[_has_word(words, n)]).tolist():
                table[n][h].append(i)
        self.table = {n: dict(t) for n, t in table.items() if t}
        # Sorted once, so each document costs a binary search, not a re-sort of the index.
        self.keys = {n: np.sort(np.fromiter(t, dtype=np.uint64, count=len(t))) for n, t in self.table.items()}

    def matches(self, hashes: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """(n, start word, item index) for every indexed n-gram in a document."""
        for n, keys in self.keys.items():
            grams = ngram_hashes(hashes, n)
            slots = np.minimum(np.searchsorted(keys, grams), len(keys) - 1)
            for start in np.flatnonzero(keys[slots] == grams).tolist():
                for i in self.table[n][int(grams[start])]:
                    yield n, start, i


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
        _INDEX_CACHE[key] = NgramIndex(items, int(config.ngram), int(config.short_ngram))
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
        spans = list(word_spans(record["text"]))
        words = [w for w, _, _ in spans]
        hashes = word_hashes(words)
        seen, cut = set(), []
        for n, start, i in self._index.matches(hashes):
            cut.append((spans[start][1], spans[start + n - 1][2]))
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
                        "ngram": " ".join(words[start : start + n]),
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
    """records -> (kept, rejected, contamination hits ``{id, eval_set, eval_item_id, ngram}``).

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
