"""Tiny eval files in the original layouts of the real sets (ARC jsonl, MMLU csv folders,
OpenBookQA tsv, GSM8K jsonl, MBPP jsonl), under one eval directory as configs/data/full.py lays it out."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def arc_row(i: int, stem: str, texts: list[str], answer: int, numeric_labels: bool = False) -> dict:
    labels = [str(k + 1) for k in range(len(texts))] if numeric_labels else list("ABCDE"[: len(texts)])
    return {
        "id": f"arc-{i}",
        "question": {"stem": stem, "choices": [{"text": t, "label": lab} for t, lab in zip(texts, labels)]},
        "answerKey": labels[answer],
    }


def write_eval_dir(root: Path) -> Path:
    """EVAL_DIR with arc/ARC-e (test 4 items, dev 3), mmlu/{test,dev} (2 subjects),
    openbookqa/{test,train}.tsv, gsm8k/{test,train}.jsonl, mbpp/mbpp.jsonl."""
    colours = ["red", "green", "blue", "yellow"]
    _jsonl(
        root / "arc/ARC-e/ARC-Easy-Test.jsonl",
        [
            arc_row(0, "Which colour is the sky?", ["red", "blue", "green", "black"], 1),
            arc_row(1, "What do plants need?", ["sunlight", "plastic", "metal"], 0, numeric_labels=True),
            arc_row(
                2,
                "Which of these animals is a mammal that lives in the ocean and breathes air?",
                ["shark", "trout", "whale", "eel"],
                2,
            ),
            arc_row(3, "Which is hot?", ["ice", "snow", "sun", "rain"], 2),
        ],
    )
    _jsonl(
        root / "arc/ARC-e/ARC-Easy-Dev.jsonl",
        [arc_row(10 + k, f"Dev question {k}?", colours, k) for k in range(3)],
    )
    for split, n in (("test", 3), ("dev", 2)):
        for subject in ("abstract_algebra", "anatomy"):
            path = root / "mmlu" / split / f"{subject}_{split}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["question", "choice0", "choice1", "choice2", "choice3", "answer"])
                for k in range(n):
                    writer.writerow(
                        [f" {subject} {split} question {k}, with a comma? ", "0", "1", "2", "3", k % 4]
                    )
    header = ["ID", "Question Stem", "Choices", "Complete Question", "Answer Key"]
    for split, n in (("test", 3), ("train", 2)):
        path = root / "openbookqa" / f"{split}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f, delimiter="\t")
            writer.writerow(header)
            for k in range(n):
                stem = f"The {split} sun is responsible for"
                choices = (
                    "(A) puppies learning (B) flowers (C) plants sprouting, blooming (D) rain (over) there"
                )
                writer.writerow([f"{split}-{k}", stem, choices, f"{stem} {choices}", "ABCD"[k % 4]])
    _jsonl(
        root / "gsm8k/test.jsonl",
        [
            {
                "question": f"What is {k} + {k}?",
                "answer": f"{k} + {k} = <<{k}+{k}={2 * k}>>{2 * k}\n#### {2 * k}",
            }
            for k in range(3)
        ],
    )
    _jsonl(
        root / "gsm8k/train.jsonl",
        [{"question": f"What is {k} * 2?", "answer": f"It is {2 * k}.\n#### {2 * k}"} for k in range(4)],
    )
    _jsonl(
        root / "mbpp/mbpp.jsonl",
        [
            {
                "task_id": t,
                "text": f"Write a function f{t}.",
                "code": f"def f{t}(x):\r\n    return x + {t}",
                "test_list": [f"assert f{t}({k}) == {k + t}" for k in range(3)],
            }
            for t in (1, 2, 3, 11, 12)
        ],
    )
    return root
