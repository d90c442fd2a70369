"""Tasks over tiny eval files in the real sets' layouts: prompts, choices, gold, shots, bad input."""

from __future__ import annotations

import json

import pytest

from common.checks import ConfigError
from evals import harness, tasks
from tests.support.eval_files import arc_row, write_eval_dir


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    return write_eval_dir(tmp_path_factory.mktemp("eval"))


def load(eval_dir, name, **kw):
    (data,) = harness.load_tasks(tasks.resolve([name]), eval_dir=str(eval_dir), **kw)
    return data


def test_arc_easy_is_lm_eval_cloze(eval_dir):
    data = load(eval_dir, "arc_easy")
    doc = data.docs[0]
    assert data.task.context(doc, []) == "Question: Which colour is the sky?\nAnswer:"
    assert data.task.continuations(doc) == [" red", " blue", " green", " black"]
    assert doc.gold == 1 and doc.doc_id == 0 and doc.source == "ARC-Easy-Test.jsonl"
    assert data.docs[1].gold == 0  # numeric labels ("1", "2", ...) as in some ARC rows
    assert [d.doc_id for d in data.docs] == [0, 1, 2, 3] and data.pool == []


def test_arc_lettered_form(eval_dir):
    data = load(eval_dir, "arc_easy_mc")
    doc = data.docs[0]
    assert data.task.context(doc, []) == (
        "Question: Which colour is the sky?\n A. red\n B. blue\n C. green\n D. black\nAnswer:"
    )
    assert data.task.continuations(doc) == [" A", " B", " C", " D"] and doc.gold == 1


def test_fewshot_from_dev_seeded_and_independent_of_limit(eval_dir):
    data = load(eval_dir, "arc_easy", num_fewshot=2)
    assert len(data.pool) == 3  # the dev file
    doc = data.docs[2]
    shots = tasks.fewshot_examples(data.task, doc, data.pool, 2, seed=0)
    context = data.task.context(doc, shots)
    first, second, own = context.split("\n\n")
    assert (
        own
        == "Question: Which of these animals is a mammal that lives in the ocean and breathes air?\nAnswer:"
    )
    for text, shot in zip((first, second), shots):
        assert (
            text
            == f"Question: {shot.query.split(': ', 1)[1].split(chr(10))[0]}\nAnswer: {shot.choices[shot.gold]}"
        )
        assert shot.source == "ARC-Easy-Dev.jsonl"
    limited = load(eval_dir, "arc_easy", num_fewshot=2, limit=3)
    assert tasks.fewshot_examples(limited.task, limited.docs[2], limited.pool, 2, seed=0) == shots
    assert limited.docs == data.docs[:3]


def test_mmlu_is_lm_eval_lettered_with_subject_and_first_dev_shots(eval_dir):
    data = load(eval_dir, "mmlu", num_fewshot=1)
    assert [(d.source, d.doc_id) for d in data.docs] == [
        ("abstract_algebra_test.csv", 0), ("abstract_algebra_test.csv", 1), ("abstract_algebra_test.csv", 2),
        ("anatomy_test.csv", 0), ("anatomy_test.csv", 1), ("anatomy_test.csv", 2),
    ]  # fmt: skip
    doc = data.docs[3]
    context = data.task.context(doc, tasks.fewshot_examples(data.task, doc, data.pool, 1, seed=0))
    assert context == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "anatomy dev question 0, with a comma?\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: A\n\n"
        "anatomy test question 0, with a comma?\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer:"
    )
    assert data.task.continuations(doc) == [" A", " B", " C", " D"]
    assert [d.gold for d in data.docs[:3]] == [0, 1, 2]
    with pytest.raises(ConfigError, match="2 few-shot examples for anatomy, fewer than 3"):
        tasks.fewshot_examples(data.task, doc, data.pool, 3, seed=0)


def test_mmlu_cloze(eval_dir):
    data = load(eval_dir, "mmlu_cloze")
    doc = data.docs[0]
    assert data.task.context(doc, []) == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Question: abstract_algebra test question 0, with a comma?\nAnswer:"
    )
    assert data.task.continuations(doc) == [" 0", " 1", " 2", " 3"]


def test_openbookqa_tsv(eval_dir):
    data = load(eval_dir, "openbookqa")
    doc = data.docs[1]
    assert data.task.context(doc, []) == "The test sun is responsible for"
    assert doc.choices == ("puppies learning", "flowers", "plants sprouting, blooming", "rain (over) there")
    assert doc.gold == 1


def test_gold_text_tasks(eval_dir):
    data = load(eval_dir, "gsm8k_bpb")
    doc = data.docs[1]
    assert data.task.context(doc, []) == "Question: What is 1 + 1?\nAnswer:"
    assert data.task.continuations(doc) == [" 1 + 1 = <<1+1=2>>2\n#### 2"] and doc.gold == 0
    mbpp = load(eval_dir, "mbpp_bpb", num_fewshot=2)
    assert [d.doc_id for d in mbpp.docs] == [3, 4]  # task_ids 11-510: the test split
    assert [d.doc_id for d in mbpp.pool] == [0, 1, 2]  # task_ids 1-10: the prompt split
    doc = mbpp.docs[0]
    context = mbpp.task.context(doc, tasks.fewshot_examples(mbpp.task, doc, mbpp.pool, 2, seed=0))
    assert context.startswith(
        "You are an expert Python programmer, and here is your task: Write a function f1. Your code should pass "
        "these tests:\n\nassert f1(0) == 1\nassert f1(1) == 2\nassert f1(2) == 3\n[BEGIN]\n"
        "def f1(x):\r\n    return x + 1\n\n"
    )
    assert mbpp.task.continuations(doc) == ["def f11(x):\r\n    return x + 11"]


def test_leak_text_is_what_decontamination_indexes(eval_dir):
    doc = load(eval_dir, "gsm8k_bpb").docs[0]
    assert doc.leak.question == "What is 0 + 0?" and doc.leak.answer.endswith("#### 0")


def test_bad_input_is_one_config_error(eval_dir, tmp_path):
    with pytest.raises(ConfigError, match="config.tasks: unknown task 'arc_hard'"):
        tasks.resolve(["arc_hard"])
    with pytest.raises(ConfigError, match="few-shot examples must come from a train or dev split"):
        load(
            eval_dir, "gsm8k_bpb", num_fewshot=1, fewshot_paths={"gsm8k": str(eval_dir / "gsm8k/test.jsonl")}
        )
    math = tmp_path / "math.jsonl"
    math.write_text(json.dumps({"problem": "1+1?", "solution": "$\\boxed{2}$"}) + "\n")
    assert load(eval_dir, "math_bpb", eval_set_paths={"math": str(math)}).docs[0].choices == ("$\\boxed{2}$",)
    with pytest.raises(ConfigError, match="math_bpb has no few-shot file"):
        load(eval_dir, "math_bpb", num_fewshot=1, eval_set_paths={"math": str(math)})
    with pytest.raises(ConfigError, match="--eval_set math: .*no .* files"):
        load(eval_dir, "math_bpb")  # no math/ folder in this eval dir
    bad = tmp_path / "arc.jsonl"
    bad.write_text(
        json.dumps(arc_row(0, "Q?", ["a", "b"], 0)) + "\n" + json.dumps({"question": "no choices"}) + "\n"
    )
    with pytest.raises(ConfigError, match=r"row 1 of .*arc.jsonl is not a arc_easy item"):
        load(eval_dir, "arc_easy", eval_set_paths={"arc_easy": str(bad)})


def test_user_task_from_a_json_config(tmp_path):
    rows = [
        {"q": "Two plus two?", "options": ["three", "four"], "label": "four"},
        {"q": "Capital of France?", "options": ["Paris", "Rome"], "label": 0},
    ]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "task.json"
    config.write_text(
        json.dumps({"name": "mine", "path": "items.jsonl", "question": "q", "choices": "options", "gold": "label",
                    "template": "Q: {question}\nA:"})
    )  # fmt: skip
    (data,) = harness.load_tasks(tasks.resolve(["mine"], [str(config)]))
    assert [d.gold for d in data.docs] == [1, 0]
    assert data.task.context(data.docs[0], []) == "Q: Two plus two?\nA:"
    assert data.task.continuations(data.docs[0]) == [" three", " four"]
    config.write_text(json.dumps({"name": "mine", "path": "items.jsonl", "question": "q", "gold": 3}))
    with pytest.raises(ConfigError, match="field 'gold' must be a str"):
        tasks.resolve(["mine"], [str(config)])
