"""Decontamination as a Beam stage: drop or cut the documents that hold eval-set text.

How text is matched is ``data_pipeline.decontamination.matching``. The index is never part of
the job graph: only the eval sets' paths are, and each worker process loads the files
(through common/fs.py, so ``gs://`` works) and builds the index once in ``DoFn.setup``.
``action="cut"`` removes each match with ``cut_window_chars`` around it and keeps the
remaining pieces of at least ``min_piece_chars``; a document cut into more than
``max_pieces`` pieces, or with nothing left, is dropped, as in GPT-3.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import ml_collections
from apache_beam.metrics import Metrics

from data_pipeline.decontamination import controls
from data_pipeline.decontamination.matching import CharWindowIndex, cut_spans, highlight, load_index, validate
from data_pipeline.records import REJECTED, rejection

REASON = "contaminated"
NAMESPACE = "decontamination"
CONTROLS_NAMESPACE = "decontamination_controls"


class _Decontaminate(beam.DoFn):
    """record -> kept (maybe cut) record | tagged rejected | tagged hits."""

    def __init__(self, config: ml_collections.ConfigDict, eval_specs: dict[str, str]) -> None:
        self._config = ml_collections.ConfigDict(config.to_dict())
        self._specs = dict(eval_specs)  # paths only: the items are loaded on the worker
        self._index: CharWindowIndex | None = None

    def setup(self) -> None:
        self._index = load_index(self._config, self._specs)

    def process(self, record: dict[str, Any]) -> Iterator[Any]:
        # Positive controls are counted apart: the metrics describe the user's records.
        namespace = CONTROLS_NAMESPACE if record["source"] == controls.SOURCE else NAMESPACE
        seen, cut = set(), []
        for start, end, i, match in self._index.find(record["text"]):
            cut.append((start, end))
            item = self._index.items[i]
            if i not in seen:
                seen.add(i)
                Metrics.counter(namespace, f"hits_{item.eval_set}").inc()
                yield beam.pvalue.TaggedOutput(
                    "hits",
                    {
                        "id": record["id"],
                        "source": record["source"],
                        "eval_set": item.eval_set,
                        "eval_item_id": item.item_id,
                        "match": match,
                        "context": highlight(record["text"], start, end),
                    },
                )
        if not cut:
            yield record
            return
        c = self._config
        if c.action == "cut":
            pieces = cut_spans(record["text"], cut, int(c.cut_window_chars), int(c.min_piece_chars))
            if pieces and len(pieces) <= c.max_pieces:
                Metrics.counter(namespace, "cut_documents").inc()
                yield {**record, "text": "\n\n".join(pieces)}
                return
        Metrics.counter(namespace, REASON).inc()
        yield beam.pvalue.TaggedOutput(REJECTED, rejection(record, REASON))


class Decontaminate(beam.PTransform):
    """records -> (kept, rejected, contamination hits
    ``{id, source, eval_set, eval_item_id, match, context}``).

    ``eval_specs`` is ``{NAME: PATH}`` (see eval_sets); ``config.builtin_eval_sets`` are added.
    """

    def __init__(self, config: ml_collections.ConfigDict, eval_specs: dict[str, str]) -> None:
        super().__init__()
        validate(config)
        self._config = config
        self._eval_specs = dict(eval_specs)

    def expand(
        self, records: beam.PCollection
    ) -> tuple[beam.PCollection, beam.PCollection, beam.PCollection]:
        out = records | "MatchEvalNgrams" >> beam.ParDo(
            _Decontaminate(self._config, self._eval_specs)
        ).with_outputs("rejected", "hits", main="kept")
        return out.kept, out[REJECTED], out.hits
