"""The downstream tasks: which eval file each reads, how an item becomes a prompt and its choices.

Two kinds. Multiple choice (`arc_easy`, `arc_challenge`, `mmlu`, `openbookqa`): every choice
is a continuation of the prompt, scored by its loglikelihood; the default form of each is
the prompt lm-evaluation-harness 0.4 uses for the task of that name (cloze for ARC and
OpenBookQA, `Question: {question}\\nAnswer:` + ` {choice}`; lettered for MMLU, with its
subject line), the other form sits beside it (`<task>_mc`: OLMES's lettered form,
` A. {choice}` lines and ` A` continuations; `mmlu_cloze`). Gold text (`gsm8k_bpb`,
`math_bpb`, `humaneval_bpb`, `mbpp_bpb`): the reference answer or solution is the one
continuation, reported as bits per byte (OLMES).

Files are the eval sets' original layouts (the ones data_pipeline.prepare decontaminates
against, read by its reader, `data_pipeline.eval_sets`), under an eval directory or named
one by one. Few-shot examples come from a train/dev file or split, never the scored one.
A user task is a JSON file naming a JSONL file, its fields and a prompt template (`user_task`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

import ml_collections

from common import fs
from common.checks import ConfigError
from data_pipeline.decontamination import eval_sets

MULTIPLE_CHOICE, GOLD_TEXT = "multiple_choice", "gold_text"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclasses.dataclass(frozen=True)
class Item:
    """One row of an eval file in a task's terms."""

    question: str
    choices: tuple[str, ...]  # answer texts (multiple choice); () for gold-text tasks
    gold: int | str  # index into choices; the gold text for gold-text tasks
    group: str = ""  # MMLU's subject: its own description and shots


@dataclasses.dataclass(frozen=True)
class Doc:
    """A scored (or few-shot) item: where it is, its prompt, its continuations and gold."""

    doc_id: int  # 0-based index of the row in its source file
    source: str  # the source file's name
    query: str  # the item's own prompt (lm-eval's doc_to_text)
    choices: tuple[str, ...]  # continuation texts without the target delimiter
    gold: int
    description: str  # text before the few-shot examples
    group: str
    leak: eval_sets.EvalItem | None  # the text decontamination looks for


Reader = Callable[[dict[str, Any], str], Item]  # (row, file) -> Item
RowFilter = Callable[[dict[str, Any]], bool]


@dataclasses.dataclass(frozen=True)
class Task:
    """How to read, prompt and score one task.

    `template` is a `str.format` string over `question` and `options` (the lettered
    choices, one `\\n{letter_prefix}{letter}. {choice}` line each); `description` may use
    `{group}`. Paths are eval-set specs (file, folder or glob) under the eval directory;
    `test_filter` / `fewshot_filter` pick a split's rows out of a file holding several (MBPP).
    """

    name: str
    dataset: str  # the eval set: --eval_set DATASET=PATH replaces test_path
    kind: str
    reader: Reader
    template: str
    test_path: str
    fewshot_path: str = ""  # "" : no few-shot examples
    lettered: bool = False  # continuations are the letters, not the answer texts
    letter_prefix: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    description: str = ""
    sampler: str = "random"  # "random" (seeded per item) or "first_n" (lm-eval's MMLU)
    test_filter: RowFilter | None = None
    fewshot_filter: RowFilter | None = None

    def doc(self, doc_id: int, source: str, item: Item, leak: eval_sets.EvalItem | None) -> Doc:
        """The Doc of one Item: its prompt, continuations (texts or letters) and gold index."""
        letters = LETTERS[: len(item.choices)]
        options = "".join(f"\n{self.letter_prefix}{L}. {c}" for L, c in zip(letters, item.choices))
        query = self.template.format(question=item.question, options=options)
        if self.kind == GOLD_TEXT:
            choices, gold = (str(item.gold),), 0
        else:
            choices, gold = tuple(letters) if self.lettered else item.choices, int(item.gold)
        description = self.description.format(group=item.group.replace("_", " "))
        return Doc(doc_id, source, query, choices, gold, description, item.group, leak)

    def context(self, doc: Doc, shots: Sequence[Doc]) -> str:
        """description + shots (prompt, delimiter, gold continuation) + the doc's prompt (lm-eval)."""
        examples = "".join(
            shot.query + self.target_delimiter + shot.choices[shot.gold] + self.fewshot_delimiter
            for shot in shots
        )
        return doc.description + examples + doc.query

    def continuations(self, doc: Doc) -> list[str]:
        return [self.target_delimiter + choice for choice in doc.choices]


# ----------------------------------------------------------------------------- readers


def _arc(row: dict[str, Any], file: str) -> Item:
    choices = row["question"]["choices"]
    labels = [c["label"] for c in choices]
    return Item(row["question"]["stem"], tuple(c["text"] for c in choices), labels.index(row["answerKey"]))


def _mmlu_subject(file: str) -> str:
    return re.sub(r"_(test|dev|val)$", "", fs.basename(file).rsplit(".", 1)[0])


def _mmlu(row: dict[str, Any], file: str) -> Item:
    choices = tuple(row[f"choice{i}"] for i in range(4))
    return Item(row["question"].strip(), choices, int(row["answer"]), _mmlu_subject(file))


_OBQA_CHOICE = re.compile(r"\(([A-Z])\) (.*?)(?= \([A-Z]\) |$)", re.S)


def _openbookqa(row: dict[str, Any], file: str) -> Item:
    """The TSV's `Choices` is `(A) text (B) text ...`; `Answer Key` the letter."""
    found = _OBQA_CHOICE.findall(row["Choices"])
    labels = [label for label, _ in found]
    return Item(
        row["Question Stem"], tuple(text for _, text in found), labels.index(row["Answer Key"].strip())
    )


def _gsm8k(row: dict[str, Any], file: str) -> Item:
    return Item(row["question"], (), row["answer"])


def _math(row: dict[str, Any], file: str) -> Item:
    return Item(row["problem"], (), row["solution"])


def _humaneval(row: dict[str, Any], file: str) -> Item:
    return Item(row["prompt"], (), row["canonical_solution"])


def _mbpp(row: dict[str, Any], file: str) -> Item:
    tests = "\n".join(row["test_list"][:3])
    return Item(f"{row['text']} Your code should pass these tests:\n\n{tests}", (), row["code"])


def _mbpp_split(first: int, last: int) -> RowFilter:
    """MBPP's splits by task_id: prompt 1-10, test 11-510, validation 511-600, train 601-974."""
    return lambda row: first <= int(row["task_id"]) <= last


_ARC_CLOZE = "Question: {question}\nAnswer:"
_OLMES_MC = "Question: {question}{options}\nAnswer:"
_MMLU_DESCRIPTION = "The following are multiple choice questions (with answers) about {group}.\n\n"


def _builtin_tasks() -> list[Task]:
    tasks = []
    for name, folder, title in (("arc_easy", "ARC-e", "Easy"), ("arc_challenge", "ARC-c", "Challenge")):
        paths = dict(
            test_path=f"arc/{folder}/ARC-{title}-Test.jsonl",
            fewshot_path=f"arc/{folder}/ARC-{title}-Dev.jsonl",
        )
        tasks.append(Task(name, name, MULTIPLE_CHOICE, _arc, _ARC_CLOZE, **paths))
        tasks.append(
            Task(
                f"{name}_mc",
                name,
                MULTIPLE_CHOICE,
                _arc,
                _OLMES_MC,
                lettered=True,
                letter_prefix=" ",
                **paths,
            )
        )
    obqa = dict(test_path="openbookqa/test.tsv", fewshot_path="openbookqa/train.tsv")
    tasks.append(Task("openbookqa", "openbookqa", MULTIPLE_CHOICE, _openbookqa, "{question}", **obqa))
    tasks.append(
        Task(
            "openbookqa_mc",
            "openbookqa",
            MULTIPLE_CHOICE,
            _openbookqa,
            _OLMES_MC,
            lettered=True,
            letter_prefix=" ",
            **obqa,
        )  # fmt: skip
    )
    mmlu = dict(
        test_path="mmlu/test", fewshot_path="mmlu/dev", description=_MMLU_DESCRIPTION, sampler="first_n"
    )
    tasks.append(
        Task("mmlu", "mmlu", MULTIPLE_CHOICE, _mmlu, "{question}{options}\nAnswer:", lettered=True, **mmlu)
    )
    tasks.append(Task("mmlu_cloze", "mmlu", MULTIPLE_CHOICE, _mmlu, _ARC_CLOZE, **mmlu))
    tasks += [
        Task("gsm8k_bpb", "gsm8k", GOLD_TEXT, _gsm8k, "Question: {question}\nAnswer:",
             test_path="gsm8k/test.jsonl", fewshot_path="gsm8k/train.jsonl"),
        Task("math_bpb", "math", GOLD_TEXT, _math, "Problem:\n{question}\n\nSolution:",
             test_path="math/math_test.jsonl"),
        Task("humaneval_bpb", "humaneval", GOLD_TEXT, _humaneval, "{question}", target_delimiter="",
             test_path="humaneval/HumanEval.jsonl.gz"),
        Task("mbpp_bpb", "mbpp", GOLD_TEXT, _mbpp,
             "You are an expert Python programmer, and here is your task: {question}\n[BEGIN]\n",
             target_delimiter="", test_path="mbpp/mbpp.jsonl", fewshot_path="mbpp/mbpp.jsonl",
             sampler="first_n", test_filter=_mbpp_split(11, 510), fewshot_filter=_mbpp_split(1, 10)),
    ]  # fmt: skip
    return tasks


TASKS: dict[str, Task] = {task.name: task for task in _builtin_tasks()}


# ----------------------------------------------------------------------------- user tasks

_USER_FIELDS = {
    "name": str, "path": str, "kind": str, "question": str, "gold": str, "template": str,
    "choices": str, "fewshot_path": str, "target_delimiter": str, "fewshot_delimiter": str,
    "description": str, "lettered": bool,
}  # fmt: skip
_USER_REQUIRED = ("name", "path", "question", "gold")


def user_task(config_path: str) -> Task:
    """A task from a JSON file, no code. Fields: `name`, `path` (JSONL or any eval-set
    file), `question` and `gold` (row fields, dotted for nested), `choices` (a row field
    holding a list of strings or of {"text": ...}; absent: a gold-text task scored in bits
    per byte), `template` (default `Question: {question}\\nAnswer:`; `{options}` are the
    lettered choices), optional `fewshot_path`, `target_delimiter`, `fewshot_delimiter`,
    `description`, `lettered`. `gold` holds a choice index, a choice label/letter, or the
    gold text itself."""
    where = f"--task_config {config_path}"
    try:
        spec = json.loads(fs.read_text(config_path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: not a readable JSON file ({e})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must hold a JSON object")
    for field, value in spec.items():
        if field not in _USER_FIELDS:
            raise ConfigError(f"{where}: unknown field {field!r} (known: {sorted(_USER_FIELDS)})")
        if not isinstance(value, _USER_FIELDS[field]):
            raise ConfigError(
                f"{where}: field {field!r} must be a {_USER_FIELDS[field].__name__}, got {value!r}"
            )
    missing = [f for f in _USER_REQUIRED if not spec.get(f)]
    if missing:
        raise ConfigError(f"{where}: field {missing[0]!r} is required")
    if spec["name"] in TASKS:
        raise ConfigError(f"{where}: name {spec['name']!r} is a built-in task")
    kind = MULTIPLE_CHOICE if spec.get("choices") else GOLD_TEXT
    reader = _field_reader(spec["question"], spec.get("choices", ""), spec["gold"])
    base = fs.dirname(fs.resolve(config_path))
    return Task(
        spec["name"], spec["name"], kind, reader, spec.get("template", _ARC_CLOZE),
        test_path=fs.join(base, spec["path"]),
        fewshot_path=fs.join(base, spec["fewshot_path"]) if spec.get("fewshot_path") else "",
        lettered=spec.get("lettered", False),
        target_delimiter=spec.get("target_delimiter", " "),
        fewshot_delimiter=spec.get("fewshot_delimiter", "\n\n"),
        description=spec.get("description", ""),
    )  # fmt: skip


def _field(row: dict[str, Any], dotted: str) -> Any:
    value = eval_sets.get_field(row, dotted)
    if value is None:
        raise KeyError(dotted)
    return value


def _field_reader(question: str, choices: str, gold: str) -> Reader:
    def read(row: dict[str, Any], file: str) -> Item:
        if not choices:
            return Item(str(_field(row, question)), (), str(_field(row, gold)))
        options = _field(row, choices)
        if not isinstance(options, list) or not options:
            raise ValueError(f"field {choices!r} is not a non-empty list")
        texts = tuple(str(o["text"]) if isinstance(o, dict) else str(o) for o in options)
        labels = [str(o.get("label", "")) if isinstance(o, dict) else "" for o in options]
        return Item(str(_field(row, question)), texts, _gold_index(_field(row, gold), texts, labels))

    return read


def _gold_index(gold: Any, texts: tuple[str, ...], labels: list[str]) -> int:
    """An index, a label (`"B"`, or the choices' own labels) or the gold choice's text."""
    if isinstance(gold, int) and not isinstance(gold, bool) and 0 <= gold < len(texts):
        return gold
    gold = str(gold).strip()
    for names in (labels, list(LETTERS[: len(texts)]), list(texts)):
        if gold in names:
            return names.index(gold)
    if gold.isdigit() and int(gold) < len(texts):
        return int(gold)
    raise ValueError(f"gold {gold!r} is neither an index, a label nor a choice's text")


# ----------------------------------------------------------------------------- loading


def resolve(names: Sequence[str], user_tasks: Sequence[str] = (), others: Collection[str] = ()) -> list[Task]:
    """The tasks `names` (built-in or defined by one of the `user_tasks` JSON files), in order;
    names in `others` (the generative tasks, evals.generative.TASKS) are known and left out."""
    known = dict(TASKS)
    for path in user_tasks:
        task = user_task(path)
        known[task.name] = task
    unknown = [n for n in names if n not in known and n not in others]
    if unknown:
        raise ConfigError(f"config.tasks: unknown task {unknown[0]!r} (known: {sorted([*known, *others])})")
    if not names:
        raise ConfigError("config.tasks: name at least one task")
    return [known[n] for n in names if n not in others]


class Located(Protocol):
    """Where a task's files are: a Task, or a generative task (evals.generative.GenTask)."""

    name: str
    dataset: str
    test_path: str
    fewshot_path: str


def task_paths(
    task: Located, eval_dir: str, eval_sets_given: dict[str, str], fewshot_given: dict[str, str]
) -> tuple[str, str]:
    """(scored path, few-shot path or "") of `task`: a `--eval_set`/`--fewshot_set` for its
    dataset, else its default file under `eval_dir`."""

    def under(relative: str) -> str:
        if not relative or fs.is_uri(relative) or relative.startswith("/"):
            return relative
        if not eval_dir:
            raise ConfigError(
                f"config.eval_dir: required for task {task.name!r} (or --eval_set {task.dataset}=PATH)"
            )
        return fs.join(eval_dir, relative)

    test = eval_sets_given.get(task.dataset) or under(task.test_path)
    fewshot = fewshot_given.get(task.dataset) or (
        under(task.fewshot_path) if task.dataset not in eval_sets_given else ""
    )
    return test, fewshot


# The fields decontamination reads by default (config.decontamination's text/answer/id fields):
# what a Doc's `leak` holds, for tasks here and in evals.generative
LEAK_CONFIG = ml_collections.ConfigDict(
    {
        "text_fields": eval_sets.DEFAULT_TEXT_FIELDS,
        "answer_fields": eval_sets.DEFAULT_ANSWER_FIELDS,
        "id_fields": eval_sets.DEFAULT_ID_FIELDS,
    }
)


def eval_files(task: Located, path: str) -> list[str]:
    """The eval files at `path` (eval_sets.files); none: a ConfigError naming the task's --eval_set."""
    try:
        return eval_sets.files(path)
    except ValueError as e:
        raise ConfigError(f"--eval_set {task.dataset}: {e} (task {task.name})") from None


def read_docs(task: Task, path: str, row_filter: RowFilter | None, limit: int = 0) -> list[Doc]:
    """The task's Docs of `path` (its rows that pass `row_filter`; the first `limit`, 0: all).

    A missing file, a row the task cannot read: ConfigError naming the task, file and row.
    """
    docs = []
    for file in eval_files(task, path):
        source = fs.basename(file)
        for index, row in enumerate(eval_sets.file_rows(file)):
            if row_filter is not None and not row_filter(row):
                continue
            try:
                item = task.reader(row, file)
            except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
                raise ConfigError(
                    f"--eval_set {task.dataset}: row {index} of {file} is not a {task.name} item "
                    f"({type(e).__name__}: {e}); fields: {sorted(row) if isinstance(row, dict) else row!r}"
                ) from None
            leak = eval_sets.row_item(task.dataset, row, LEAK_CONFIG, f"{source}:{index}")
            docs.append(task.doc(index, source, item, leak))
            if limit and len(docs) == limit:
                return docs
    if not docs:
        raise ConfigError(f"--eval_set {task.dataset}: no {task.name} items in {path}")
    return docs


def fewshot_examples(task: Task, doc: Doc, pool: Sequence[Doc], k: int, seed: int) -> list[Doc]:
    """`k` examples for `doc` from `pool` (its group's, for MMLU), never the doc's own prompt.

    "first_n" takes the first k (lm-eval's MMLU); "random" samples with a generator seeded by
    (seed, source, doc_id), so an item's shots do not depend on --limit or the order of items.
    """
    if k <= 0:
        return []
    candidates = [d for d in pool if d.group == doc.group and d.query != doc.query]
    if len(candidates) < k:
        raise ConfigError(
            f"config.num_fewshot: task {task.name} has {len(candidates)} few-shot examples"
            f"{f' for {doc.group}' if doc.group else ''}, fewer than {k}"
        )
    if task.sampler == "first_n":
        return candidates[:k]
    return random.Random(f"{seed}/{doc.source}/{doc.doc_id}").sample(candidates, k)
