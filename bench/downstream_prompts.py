"""Do our prompts, continuations and gold answers equal lm-evaluation-harness's, item by item?

  python bench/downstream_prompts.py [--eval_dir ../shared/data/eval] [--subject anatomy] [--shots 5]

lm-eval 0.4's own ConfigurableTask (the arc_easy, mmlu and openbookqa YAML settings, its
Jinja templates, fewshot_context, doc_to_choice, doc_to_target) runs offline on the real
files converted to the Hugging Face datasets' schema (dataset_path: json); evals.tasks
builds the same items from the original files. Prints, per task, the items compared and
how many differ in context, continuations or gold. Few-shot is compared on MMLU (first_n
from dev, the same examples in both); ARC and OpenBookQA are compared zero-shot (lm-eval
draws their shots at random from the train split, which the original layout does not hold).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import tempfile
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lm_eval.api.task import ConfigurableTask  # noqa: E402  (after the offline switches)

from evals import harness, tasks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _arc_rows(path: str) -> list[dict]:
    rows = []
    for line in open(path):
        r = json.loads(line)
        choices = r["question"]["choices"]
        rows.append({"question": r["question"]["stem"], "answerKey": r["answerKey"],
                     "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]}})  # fmt: skip
    return rows


def _mmlu_rows(path: str) -> list[dict]:
    return [
        {
            "question": r["question"],
            "choices": [r[f"choice{i}"] for i in range(4)],
            "answer": int(r["answer"]),
        }
        for r in csv.DictReader(open(path, newline=""))
    ]


def _obqa_rows(path: str) -> list[dict]:
    """HF openbookqa's fields from the TSV's `(A) text (B) text` column."""
    rows = []
    for r in csv.DictReader(open(path, newline=""), delimiter="\t"):
        found = re.findall(r"\(([A-Z])\) (.*?)(?= \([A-Z]\) |$)", r["Choices"], re.S)
        rows.append({"question_stem": r["Question Stem"], "answerKey": r["Answer Key"],
                     "choices": {"text": [t for _, t in found], "label": [lab for lab, _ in found]}})  # fmt: skip
    return rows


def _mismatches(ours: harness.TaskData, theirs: ConfigurableTask, shots: int) -> tuple[int, int]:
    docs = list(theirs.test_docs())
    assert len(docs) == len(ours.docs), (len(docs), len(ours.docs))
    bad = 0
    for doc, mine in zip(docs, ours.docs):
        context = ours.task.context(mine, tasks.fewshot_examples(ours.task, mine, ours.pool, shots, 0))
        same = (
            context == theirs.fewshot_context(doc, shots)
            and ours.task.continuations(mine)
            == [theirs.config.target_delimiter + c for c in theirs.doc_to_choice(doc)]
            and mine.gold == theirs.doc_to_target(doc)
        )
        bad += not same
    return len(docs), bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval_dir", default=str(REPO.parent / "shared" / "data" / "eval"))
    parser.add_argument("--subject", default="anatomy")
    parser.add_argument("--shots", type=int, default=5)
    args = parser.parse_args()
    e, tmp = args.eval_dir, Path(tempfile.mkdtemp())
    mc = {"output_type": "multiple_choice", "dataset_path": "json"}
    arc = ConfigurableTask(config={
        **mc, "task": "arc_easy_local", "test_split": "test",
        "dataset_kwargs": {"data_files": {"test": _jsonl(tmp / "arc.jsonl", _arc_rows(f"{e}/arc/ARC-e/ARC-Easy-Test.jsonl"))}},
        "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{choices.label.index(answerKey)}}",
        "doc_to_choice": "{{choices.text}}",
    })  # fmt: skip
    mmlu = ConfigurableTask(config={
        **mc, "task": "mmlu_local", "test_split": "test", "fewshot_split": "dev",
        "fewshot_config": {"sampler": "first_n"},
        "dataset_kwargs": {"data_files": {
            "test": _jsonl(tmp / "mmlu_test.jsonl", _mmlu_rows(f"{e}/mmlu/test/{args.subject}_test.csv")),
            "dev": _jsonl(tmp / "mmlu_dev.jsonl", _mmlu_rows(f"{e}/mmlu/dev/{args.subject}_dev.csv"))}},
        "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
        "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "answer",
        "description": f"The following are multiple choice questions (with answers) about {args.subject.replace('_', ' ')}.\n\n",
    })  # fmt: skip
    obqa = ConfigurableTask(config={
        **mc, "task": "obqa_local", "test_split": "test",
        "dataset_kwargs": {"data_files": {"test": _jsonl(tmp / "obqa.jsonl", _obqa_rows(f"{e}/openbookqa/test.tsv"))}},
        "doc_to_text": "question_stem", "doc_to_target": "{{choices.label.index(answerKey.lstrip())}}",
        "doc_to_choice": "{{choices.text}}",
    })  # fmt: skip
    (ours_arc,) = harness.load_tasks([tasks.TASKS["arc_easy"]], eval_dir=e)
    (ours_mmlu,) = harness.load_tasks(
        [tasks.TASKS["mmlu"]], num_fewshot=args.shots,
        eval_set_paths={"mmlu": f"{e}/mmlu/test/{args.subject}_test.csv"},
        fewshot_paths={"mmlu": f"{e}/mmlu/dev/{args.subject}_dev.csv"},
    )  # fmt: skip
    (ours_obqa,) = harness.load_tasks([tasks.TASKS["openbookqa"]], eval_dir=e)
    for name, ours, theirs, shots in (
        ("arc_easy", ours_arc, arc, 0),
        (f"mmlu ({args.subject}, {args.shots}-shot)", ours_mmlu, mmlu, args.shots),
        ("openbookqa", ours_obqa, obqa, 0),
    ):
        items, bad = _mismatches(ours, theirs, shots)
        print(f"{name}: {items} items, {bad} differ in context, continuations or gold")


if __name__ == "__main__":
    main()
