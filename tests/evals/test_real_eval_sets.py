"""Every registered task on the real eval files (../shared/data/eval; skipped when absent):
each loads its whole file, and prompts equal lm-evaluation-harness 0.4's for the same items.

The expected strings were produced by lm-eval 0.4.13's own ConfigurableTask (fewshot_context,
doc_to_choice, doc_to_target) with the arc_easy, mmlu (anatomy) and openbookqa YAML configs
over the same files converted to the Hugging Face datasets' schema; over all 2,376 ARC-Easy,
135 MMLU-anatomy (5-shot) and 500 OpenBookQA items no prompt, choice or gold differed.
"""

from __future__ import annotations

import pytest

from evals import harness, tasks

COUNTS = {  # scored items, few-shot pool
    "arc_easy": (2376, 570), "arc_easy_mc": (2376, 570), "arc_challenge": (1172, 299),
    "arc_challenge_mc": (1172, 299), "openbookqa": (500, 4957), "openbookqa_mc": (500, 4957),
    "mmlu": (14042, 285), "mmlu_cloze": (14042, 285), "gsm8k_bpb": (1319, 7473),
    "math_bpb": (5000, 0), "humaneval_bpb": (164, 0), "mbpp_bpb": (500, 10),
}  # fmt: skip


@pytest.fixture(scope="module")
def eval_dir(shared_data):
    return str(shared_data / "eval")


def test_every_task_loads_its_real_file(eval_dir):
    """Whole files once per dataset; the other form of a dataset reads the same rows (first 20)."""
    assert set(COUNTS) == set(tasks.TASKS)
    seen = set()
    for name, (items, pool) in COUNTS.items():
        task = tasks.TASKS[name]
        limit = 20 if task.dataset in seen else 0
        seen.add(task.dataset)
        (data,) = harness.load_tasks([task], eval_dir=eval_dir, num_fewshot=1 if pool else 0, limit=limit)
        assert (len(data.docs), len(data.pool)) == (limit or items, pool), name
        assert all(0 <= d.gold < len(d.choices) and d.leak is not None for d in data.docs), name


def test_prompts_equal_lm_eval(eval_dir):
    (arc,) = harness.load_tasks([tasks.TASKS["arc_easy"]], eval_dir=eval_dir, limit=6)
    doc = arc.docs[5]
    assert arc.task.context(doc, []) == (
        "Question: To express the distance between the Milky Way galaxy and other galaxies, the most "
        "appropriate unit of measurement is the\nAnswer:"
    )
    assert arc.task.continuations(doc) == [" meter.", " kilometer.", " light-year.", " astronomical unit."]
    assert doc.gold == 2

    (mmlu,) = harness.load_tasks(
        [tasks.TASKS["mmlu"]],
        eval_set_paths={"mmlu": f"{eval_dir}/mmlu/test/anatomy_test.csv"},
        fewshot_paths={"mmlu": f"{eval_dir}/mmlu/dev/anatomy_dev.csv"},
        num_fewshot=2,
    )
    doc = mmlu.docs[7]
    assert mmlu.task.context(doc, tasks.fewshot_examples(mmlu.task, doc, mmlu.pool, 2, seed=0)) == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "What is the embryological origin of the hyoid bone?\nA. The first pharyngeal arch\nB. The first and "
        "second pharyngeal arches\nC. The second pharyngeal arch\nD. The second and third pharyngeal arches\n"
        "Answer: D\n\n"
        "Which of these branches of the trigeminal nerve contain somatic motor processes?\nA. The supraorbital "
        "nerve\nB. The infraorbital nerve\nC. The mental nerve\nD. None of the above\nAnswer: D\n\n"
        "Which of the following best describes the human body's defense mechanism against environmental "
        "bacteria?\nA. Hair in the nose\nB. Mucous membranes\nC. Osteoblasts\nD. Saliva\nAnswer:"
    )
    assert mmlu.task.continuations(doc) == [" A", " B", " C", " D"] and doc.gold == 1

    (obqa,) = harness.load_tasks([tasks.TASKS["openbookqa"]], eval_dir=eval_dir, limit=4)
    doc = obqa.docs[3]
    assert obqa.task.context(doc, []) == (
        "Oak tree seeds are planted and a sidewalk is paved right next to that spot, until eventually, the "
        "tree is tall and the roots must extend past the sidewalk, which means"
    )
    assert doc.choices == (
        "roots may be split", "roots may begin to die", "parts may break the concrete", "roots may fall apart"
    ) and doc.gold == 2  # fmt: skip
