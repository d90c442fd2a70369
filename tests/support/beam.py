"""Run a records -> outputs transform on a DirectRunner and return its outputs as lists."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def run_transform(
    records: list[dict[str, Any]], make_transform: Callable[[], beam.PTransform], multiprocess: bool = False
) -> list[list[Any]]:
    """Apply the transform to ``records``; each output PCollection comes back as a list.

    Outputs go through JSON files so the same helper works when the runner executes the
    DoFns in other processes (``multiprocess=True``: 2 workers, like production default).
    """
    flags = ["--runner=DirectRunner"]
    if multiprocess:
        flags += ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    with tempfile.TemporaryDirectory() as tmp:
        with beam.Pipeline(options=PipelineOptions(flags)) as p:
            outputs = p | beam.Create(records, reshuffle=False) | make_transform()
            if not isinstance(outputs, tuple):
                outputs = (outputs,)
            for i, pcoll in enumerate(outputs):
                prefix = os.path.join(tmp, f"out{i}")
                _ = (
                    pcoll
                    | f"Json{i}" >> beam.Map(json.dumps, sort_keys=True)
                    | f"Write{i}" >> beam.io.WriteToText(prefix)
                )
        results = []
        for i in range(len(outputs)):
            rows = []
            for name in sorted(os.listdir(tmp)):
                if name.startswith(f"out{i}-"):
                    with open(os.path.join(tmp, name)) as f:
                        rows += [json.loads(line) for line in f if line.strip()]
            results.append(rows)
        return results


def record(rid: str, text: str, source: str = "s", domain: str = "web") -> dict[str, Any]:
    """A pipeline record with the shared shape."""
    return {"id": rid, "text": text, "source": source, "domain": domain, "language": "en"}
