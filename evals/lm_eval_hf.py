"""lm-evaluation-harness itself on an exported Hugging Face directory, offline, on local files.

The reference the engine is held to (the parity test, bench/downstream_speed.py) and the
third way to score a checkpoint: `pretrain.export --format hf`, then lm-eval's HF backend.
Each task is lm-eval's own YAML for the task of that name, read from the installed
package, with only its dataset swapped for a local JSON-lines file (`dataset_path: json`)
holding the items in the columns of the Hugging Face dataset that YAML reads; nothing is
downloaded (HF_DATASETS_OFFLINE, HF_HUB_OFFLINE). Results come back as the per-item
records of evals.results (`task`, `doc_id`, `loglikelihoods`, `is_greedy`, `gold`), so the
same metrics and paired comparisons apply to both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def _choices(choices: Sequence[str], gold: int) -> dict[str, Any]:
    labels = list(LETTERS[: len(choices)])
    return {"choices": {"text": list(choices), "label": labels}, "answerKey": labels[gold]}


# task -> (question, choices, gold) -> a row in the columns of the dataset lm-eval's YAML reads
ROWS: dict[str, Callable[[str, Sequence[str], int], dict[str, Any]]] = {
    "arc_easy": lambda q, c, g: {"question": q, **_choices(c, g)},  # allenai/ai2_arc
    "arc_challenge": lambda q, c, g: {"question": q, **_choices(c, g)},
    "openbookqa": lambda q, c, g: {"question_stem": q, **_choices(c, g)},  # allenai/openbookqa
}


def harness_row(task: str, question: str, choices: Sequence[str], gold: int) -> dict[str, Any]:
    """One item as the Hugging Face dataset behind lm-eval's `task` holds it."""
    if task not in ROWS:
        raise ValueError(f"--tasks: lm-eval runs {sorted(ROWS)} on local files, not {task!r}")
    return ROWS[task](question, choices, gold)


def lm_eval_yaml(task: str) -> dict[str, Any]:
    """lm-eval's own task config for `task`, its `include:` chain merged in."""
    folder = resources.files("lm_eval") / "tasks" / task.split("_")[0]
    config = yaml.safe_load((folder / f"{task}.yaml").read_text())
    while "include" in config:
        base = yaml.safe_load((folder / config.pop("include")).read_text())
        config = {**base, **config}
    return config


def task_config(
    task: str, items_file: str, cache_dir: str, fewshot_file: str | None = None
) -> dict[str, Any]:
    """lm-eval's config for `task` reading `items_file` (its test split) and, for few-shot
    examples, `fewshot_file` (as its validation split: never the scored one)."""
    config = {k: v for k, v in lm_eval_yaml(task).items() if k not in ("tag", "group")}
    files = {"test": items_file, **({"validation": fewshot_file} if fewshot_file else {})}
    config.update(
        task=f"local_{task}",
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": files, "cache_dir": cache_dir},
        training_split=None,
        validation_split="validation" if fewshot_file else None,
        fewshot_split="validation" if fewshot_file else None,
        test_split="test",
    )
    return config


def write_items(path: str | Path, rows: Sequence[dict[str, Any]]) -> str:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def evaluate(
    hf_dir: str,
    configs: Sequence[dict[str, Any]],
    *,
    num_fewshot: int = 0,
    limit: int | None = None,
    batch_size: int = 8,
    dtype: str = "float32",
) -> dict[str, list[dict[str, Any]]]:
    """{task: per-item records} from lm-eval's HF backend (CPU) on `hf_dir`."""
    os.environ.update(OFFLINE)  # before lm_eval imports datasets / huggingface_hub
    # Optional (the `test` extra): only the reference runs need lm-evaluation-harness.
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": hf_dir, "dtype": dtype, "device": "cpu"},
        tasks=list(configs),
        task_manager=TaskManager(include_defaults=False),
        num_fewshot=num_fewshot,
        limit=limit,
        batch_size=batch_size,
        log_samples=True,
        bootstrap_iters=0,
    )
    return {
        config["task"].removeprefix("local_"): [_record(config, s) for s in out["samples"][config["task"]]]
        for config in configs
    }


def _record(config: dict[str, Any], sample: dict[str, Any]) -> dict[str, Any]:
    scores = [resp[0] for resp in sample["resps"]]
    return {
        "task": config["task"].removeprefix("local_"),
        "doc_id": int(sample["doc_id"]),
        "loglikelihoods": [float(ll) for ll, _ in scores],
        "is_greedy": [bool(g) for _, g in scores],
        "gold": int(sample["target"]),
        "acc": float(sample["acc"]),
        "acc_norm": float(sample["acc_norm"]),
        "continuations": [continuation for _, continuation in sample["arguments"]],
    }
