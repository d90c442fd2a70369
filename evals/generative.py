"""The generative tasks: gsm8k, math, bbh, humaneval, mbpp, scored from generated text.

Each task builds its prompts as lm-evaluation-harness 0.4.x does for the task of the same
name, generates once per item (greedy) or ``samples`` times (code, sampled), and scores
every generation into one per-item record: ``generation``, ``extracted``, ``passed``; code
tasks run each program in evals.sandbox and add ``pass_at_k`` (Chen et al. 2021, unbiased).

- gsm8k (lm_eval/tasks/gsm8k/gsm8k.yaml): "Question: {question}\\nAnswer:" with 5 shots
  " {answer}" from the train file; stops at "Question:"; strict ``#### N`` match, the
  flexible last-number match recorded beside it.
- math (minerva_math): "Problem:\\n{problem}\\n\\nSolution:" with Minerva's 4 fixed
  examples (from MATH's train split), or shots from a file of (problem, solution) rows;
  stops at "Problem:"; the gold answer is the row's ``answer`` (MATH-500) or the last
  boxed expression of its solution.
- bbh (bbh/cot_fewshot): per subtask file, its chain-of-thought prompt file (description
  and 3 worked examples, lib_prompt/<subtask>.txt) then "Q: {input}\\nA: Let's think step
  by step.\\n"; stops at "Q:" or a blank line; exact match of "the answer is X.".
- humaneval: the function's prompt, zero-shot; stops where a new top-level statement
  starts; passes when prompt + completion passes the task's ``check``.
- mbpp (mbpp.yaml): "You are an expert Python programmer, ..." with the tests, 3 shots
  (task_ids 2-4 of the prompt split), items task_ids 11-510; stops at "[DONE]".

Few-shot examples come from the task's train/dev source, never from the scored file.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from common import fs
from common.checks import ConfigError
from data_pipeline.decontamination import eval_sets
from evals import answers
from evals.generate import GenerateFn, Sampling
from evals.sandbox import Limits, run_program
from evals.tasks import LEAK_CONFIG

KIND = "generative"
CODE_SAMPLING = Sampling(temperature=0.8, top_p=0.95)  # lm-eval humaneval's sampled setting
PASS_AT = (1, 10, 100)

Row = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Item:
    """One scored (or few-shot) row: where it is, and what decontamination looks for."""

    doc_id: int  # 0-based index of the row in its source file
    source: str  # the source file's name
    row: Row
    leak: eval_sets.EvalItem | None


@dataclasses.dataclass(frozen=True)
class GenTask:
    """How one generative task reads, prompts and scores. Paths are relative to the eval
    directory, like evals.tasks.Task's (``dataset`` is the ``--eval_set`` name)."""

    name: str
    dataset: str
    test_path: str
    fewshot_path: str
    num_fewshot: int
    max_new_tokens: int
    stop: tuple[str, ...]
    fields: tuple[str, ...]  # what a row must hold
    query: Callable[[Row], str]  # the item's own prompt
    gold: Callable[[Row], str]
    shot: Callable[[Row], str] | None = None  # a worked example: query and answer (no delimiter)
    score: Callable[[Item, str], tuple[str, bool]] | None = (
        None  # (item, generation) -> (extracted, passed); code: None
    )
    test_filter: Callable[[Row], bool] | None = None
    fewshot_filter: Callable[[Row], bool] | None = None
    sampler: str = "random"  # "random" (seeded per item) or "first_n"
    code: bool = False


# ----------------------------------------------------------------------------- gsm8k


def _gsm8k_query(row: Row) -> str:
    return f"Question: {row['question']}\nAnswer:"


def _gsm8k_score(item: Item, generation: str) -> tuple[str, bool]:
    extracted = answers.gsm8k_extract(generation)
    return extracted, answers.gsm8k_equal(extracted, item.row["answer"])


# ----------------------------------------------------------------------------- math

# Minerva's prompt (Lewkowycz et al. 2022, appendix; lm-eval minerva_math's fixed shots):
# four MATH train problems with worked solutions ending in the final-answer line.
MINERVA_SHOTS = (
    {
        "problem": "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.}",
        "solution": "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so "
        "$x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, "
        "which gives $x<5$. Therefore, the domain of the expression is $\\boxed{[2,5)}$.\n"
        "Final Answer: The final answer is $[2,5)$. I hope it is correct.",
    },
    {
        "problem": "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find "
        "$\\det (\\mathbf{A} \\mathbf{B}).$",
        "solution": "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) "
        "= (2)(12) = \\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct.",
    },
    {
        "problem": "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights "
        "instead, how many times must Terrell lift them in order to lift the same total weight?",
        "solution": "If Terrell lifts two 20-pound weights 12 times, he lifts a total of "
        "$2\\cdot 12\\cdot20=480$ pounds of weight.  If he lifts two 15-pound weights instead for $n$ times, "
        "he will lift a total of $2\\cdot15\\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we "
        "can solve for $n$:\n\\begin{align*}\n30n&=480\\\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n"
        "\\end{align*}\nFinal Answer: The final answer is $16$. I hope it is correct.",
    },
    {
        "problem": "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}"
        "has a solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming $b$ is "
        "nonzero.",
        "solution": "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n"
        "$$6y-9x=-\\frac{3}{2}a.$$Since we also know that $6y-9x=b$, we have\n\n"
        "$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\n"
        "Final Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.",
    },
)


def _math_query(row: Row) -> str:
    return f"Problem:\n{row['problem']}\n\nSolution:"


def _math_gold(row: Row) -> str:
    return row.get("answer") or answers.math_gold(row["solution"]) or ""


def _math_score(item: Item, generation: str) -> tuple[str, bool]:
    extracted = answers.math_extract(generation)
    return extracted, answers.math_equal(extracted, _math_gold(item.row))


# ----------------------------------------------------------------------------- bbh

BBH_COT = "A: Let's think step by step.\n"


def bbh_prompt_file(text: str) -> tuple[str, list[str]]:
    """A BBH chain-of-thought prompt file -> (description, worked examples "Q: ...")."""
    description, *shots = text.strip().split("\n\nQ: ")
    return description, ["Q: " + shot for shot in shots]


def _bbh_score(item: Item, generation: str) -> tuple[str, bool]:
    extracted = answers.bbh_extract(generation)
    return extracted, extracted == item.row["target"]


# ----------------------------------------------------------------------------- code


def humaneval_program(row: Row, completion: str) -> str:
    return f"{row['prompt']}{completion}\n\n{row['test']}\n\ncheck({row['entry_point']})\n"


def mbpp_program(row: Row, completion: str) -> str:
    tests = "\n".join(row["test_list"])
    return f"{answers.code_block(completion)}\n{row.get('test_setup_code', '')}\n{tests}\n"


def _mbpp_query(row: Row) -> str:
    tests = "\n".join(row["test_list"][:3])
    return (
        f"You are an expert Python programmer, and here is your task: {row['text']} "
        f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
    )


def _task_ids(first: int, last: int) -> Callable[[Row], bool]:
    """MBPP's splits by task_id: prompt 1-10, test 11-510, validation 511-600, train 601-974."""
    return lambda row: first <= int(row["task_id"]) <= last


TASKS: dict[str, GenTask] = {
    task.name: task
    for task in (
        GenTask(
            "gsm8k", "gsm8k", "gsm8k/test.jsonl", "gsm8k/train.jsonl", 5, 256,
            ("Question:", "</s>", "<|im_end|>"), ("question", "answer"), _gsm8k_query, lambda row: row["answer"],
            shot=lambda row: f"{_gsm8k_query(row)} {row['answer']}", score=_gsm8k_score,
        ),
        GenTask(
            "math", "math", "math/math_test.jsonl", "", 4, 1024, ("Problem:",), ("problem", "solution"),
            _math_query, _math_gold, shot=lambda row: f"{_math_query(row)} {row['solution']}",
            score=_math_score, sampler="first_n",
        ),
        GenTask(
            "bbh", "bbh", "bbh/data", "bbh/lib_prompt", 3, 1024, ("</s>", "Q:", "\n\n"), ("input", "target"),
            lambda row: f"Q: {row['input']}\n{BBH_COT}", lambda row: row["target"], score=_bbh_score,
        ),
        GenTask(
            "humaneval", "humaneval", "humaneval/HumanEval.jsonl.gz", "", 0, 1024,
            ("\nclass", "\ndef", "\n#", "\nif", "\nprint"), ("prompt", "canonical_solution", "test", "entry_point"),
            lambda row: row["prompt"], lambda row: row["canonical_solution"], code=True,
        ),
        GenTask(
            "mbpp", "mbpp", "mbpp/mbpp.jsonl", "mbpp/mbpp.jsonl", 3, 256, ("[DONE]",), ("text", "code", "test_list"),
            _mbpp_query, lambda row: row["code"], shot=lambda row: f"{_mbpp_query(row)}{row['code']}\n[DONE]",
            test_filter=_task_ids(11, 510), fewshot_filter=_task_ids(2, 10), sampler="first_n", code=True,
        ),
    )
}  # fmt: skip


# ----------------------------------------------------------------------------- reading


def _task(name: str) -> GenTask:
    if name not in TASKS:
        raise ConfigError(f"config.tasks: unknown generative task {name!r} (known: {sorted(TASKS)})")
    return TASKS[name]


def load_items(
    task: str, path: str, limit: int = 0, row_filter: Callable[[Row], bool] | None = None
) -> list[Item]:
    """The task's rows at ``path`` (file, folder or glob; its ``test_filter`` unless another
    is given), the first ``limit`` (0: all). A missing file or a row without the task's fields
    is a ConfigError naming the file and row."""
    spec = _task(task)
    row_filter = row_filter or spec.test_filter
    try:
        files = eval_sets.files(path)
    except ValueError as e:
        raise ConfigError(f"--eval_set {spec.dataset}: {e} (task {task})") from None
    items = []
    for file in files:
        source = fs.basename(file)
        for index, row in enumerate(eval_sets.file_rows(file)):
            if row_filter is not None and not row_filter(row):
                continue
            missing = [f for f in spec.fields if not isinstance(row, dict) or f not in row]
            if missing:
                raise ConfigError(
                    f"--eval_set {spec.dataset}: row {index} of {file} is not a {task} item (no {missing[0]!r}); "
                    f"fields: {sorted(row) if isinstance(row, dict) else row!r}"
                )
            leak = eval_sets.row_item(spec.dataset, row, LEAK_CONFIG, f"{source}:{index}")
            items.append(Item(index, source, row, leak))
            if limit and len(items) == limit:
                return items
    if not items:
        raise ConfigError(f"--eval_set {spec.dataset}: no {task} items in {path}")
    return items


def _bbh_prompts(fewshot_path: str, items: Sequence[Item]) -> dict[str, tuple[str, list[str]]]:
    out = {}
    for source in sorted({item.source for item in items}):
        file = fs.join(fewshot_path, source.rsplit(".", 1)[0] + ".txt")
        if not fs.isfile(file):
            raise ConfigError(f"--fewshot_set bbh: no chain-of-thought prompt file {file}")
        out[source] = bbh_prompt_file(fs.read_text(file))
    return out


def prompts(
    task: str, items: Sequence[Item], fewshot_path: str = "", num_fewshot: int | None = None, seed: int = 0
) -> list[str]:
    """The prompt of every item: the task's few-shot examples (from ``fewshot_path``; for
    math without one, Minerva's fixed examples), each followed by a blank line, then its query."""
    spec = _task(task)
    k = spec.num_fewshot if num_fewshot is None else num_fewshot
    if spec.name == "bbh":
        prompt_files = _bbh_prompts(fewshot_path, items) if k else {}
        out = []
        for item in items:
            description, shots = prompt_files.get(item.source, ("", []))
            if len(shots) < k:
                raise ConfigError(
                    f"config.num_fewshot: bbh {item.source} has {len(shots)} examples, fewer than {k}"
                )
            head = description + "\n\n" + "".join(s + "\n\n" for s in shots[:k]) if k else ""
            out.append(head + spec.query(item.row))
        return out
    pool: list[Row] = []
    if k:
        if fewshot_path:
            pool_items = load_items(task, fewshot_path, row_filter=spec.fewshot_filter or (lambda row: True))
            scored = {(i.source, i.doc_id) for i in items}
            if any((i.source, i.doc_id) in scored for i in pool_items):
                raise ConfigError(
                    f"--fewshot_set {spec.dataset}: {fewshot_path} holds scored items of {task}; "
                    "few-shot examples must come from a train or dev split"
                )
            pool = [i.row for i in pool_items]
        elif spec.name == "math":
            pool = list(MINERVA_SHOTS)
        else:
            raise ConfigError(
                f"config.num_fewshot: task {task} needs --fewshot_set {spec.dataset}=PATH (or 0)"
            )
    out = []
    for item in items:
        candidates = [row for row in pool if spec.query(row) != spec.query(item.row)]
        if len(candidates) < k:
            raise ConfigError(
                f"config.num_fewshot: task {task} has {len(candidates)} few-shot examples, fewer than {k}"
            )
        if spec.sampler == "first_n":
            shots = candidates[:k]
        else:
            shots = random.Random(f"{seed}/{item.source}/{item.doc_id}").sample(candidates, k)
        out.append("".join(spec.shot(row) + "\n\n" for row in shots) + spec.query(item.row))
    return out


# ----------------------------------------------------------------------------- scoring


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. (2021)'s unbiased estimate of pass@k from n samples of which c passed:
    1 - C(n - c, k) / C(n, k), as the stable product 1 - prod(1 - k / i, i = n-c+1..n)."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k: need 0 < k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _record(spec: GenTask, item: Item, contaminated: bool | None) -> dict[str, Any]:
    record = {"task": spec.name, "kind": KIND, "doc_id": item.doc_id, "source": item.source}
    if spec.name == "bbh":
        record["subtask"] = item.source.rsplit(".", 1)[0]
    return record | {"target": spec.gold(item.row), "contaminated": contaminated}


def evaluate(
    task: str,
    items: Sequence[Item],
    generate_fn: GenerateFn,
    *,
    fewshot_path: str = "",
    num_fewshot: int | None = None,
    samples: int = 1,
    seed: int = 0,
    max_new_tokens: int | None = None,
    limits: Limits = Limits(),
    python: str = sys.executable,
    contaminated: Collection[int] | None = None,
) -> list[dict[str, Any]]:
    """Per-item records of ``task`` on ``items`` (``load_items``).

    ``generate_fn(prompts, max_new_tokens, stop, sampling=None)`` is evals.generate's.
    Code tasks draw ``samples`` programs per item (sampled at CODE_SAMPLING when more than one)
    and report pass@k for every k in 1, 10, 100 up to ``samples``; other tasks generate once,
    greedily. ``contaminated``: indices into ``items`` that the decontamination index found
    in the training data; None when not checked.
    """
    spec = _task(task)
    if samples < 1 or (samples > 1 and not spec.code):
        raise ConfigError(f"config.samples: must be 1, or more for code tasks only; got {samples} for {task}")
    texts = prompts(task, items, fewshot_path, num_fewshot, seed)
    budget = max_new_tokens or spec.max_new_tokens
    sampling = dataclasses.replace(CODE_SAMPLING, seed=seed) if samples > 1 else None
    generations = generate_fn(
        [t for t in texts for _ in range(samples)], budget, spec.stop, sampling=sampling
    )
    records = []
    for i, item in enumerate(items):
        record = _record(spec, item, None if contaminated is None else i in contaminated)
        drawn = generations[i * samples : (i + 1) * samples]
        if spec.code:
            program = humaneval_program if spec.name == "humaneval" else mbpp_program
            outcomes = [run_program(program(item.row, g), limits, python) for g in drawn]
            passed = [o.passed for o in outcomes]
            record |= {
                "generation": drawn,
                "extracted": [answers.code_block(g) if spec.name == "mbpp" else g for g in drawn],
                "passed": passed,
                "status": [o.status for o in outcomes],
                "pass_at_k": {str(k): pass_at_k(samples, sum(passed), k) for k in PASS_AT if k <= samples},
            }
        else:
            (generation,) = drawn
            extracted, passed = spec.score(item, generation)
            record |= {"generation": generation, "extracted": extracted, "passed": passed}
            if spec.name == "gsm8k":
                flexible = answers.gsm8k_extract(generation, flexible=True)
                record |= {
                    "extracted_flexible": flexible,
                    "passed_flexible": answers.gsm8k_equal(flexible, item.row["answer"]),
                }
        records.append(record)
    return records
