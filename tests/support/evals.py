"""Synthetic eval items for the downstream tests, in the eval sets' original layouts."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = "the sun water plant energy heat light animal rock cloud rain moves grows 12 3.5 café naïve".split()


def arc_rows(n: int, seed: int = 0) -> list[dict]:
    """ARC items (`question.stem`, `question.choices`, `answerKey`); choices of different
    lengths, so acc_norm (per character) and acc can disagree; text with digits, accents,
    double spaces, and numeric labels on every third item, as some ARC items have."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        stem = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "?"
        if i % 5 == 0:
            stem += "  Why?"
        choices = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))) for _ in range(4)]
        labels = "ABCD" if i % 3 else "1234"
        rows.append(
            {
                "id": f"item{i}",
                "question": {
                    "stem": stem,
                    "choices": [{"text": t, "label": l} for t, l in zip(choices, labels)],
                },
                "answerKey": labels[i % 4],
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
