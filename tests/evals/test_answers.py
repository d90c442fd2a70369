"""evals.answers against the behaviour of the reference implementations, case by case."""

from __future__ import annotations

import pytest

from evals import answers
from evals.generative import MINERVA_SHOTS

# hendrycks/math modeling/math_equivalence_test.py (the is_equiv that lm-eval's
# lm_eval/tasks/hendrycks_math/utils.py copies), every case with its expected result.
MATH_PAPER_CASES = [
    ("\\tfrac{1}{2} + \\frac1{72}", "\\\\frac{1}{2} + 2/3", False),
    ("10, 4, -2", "4, 10, -2", False),
    ("10, 4, 2", "4, 12, 2", False),
    ("\\tfrac{1}{2} +\\! \\frac1{72}", "\\\\dfrac{1}{2} +\\frac{1}{72}", True),
    ("10\\text{ units}", "10 ", True),
    ("10\\text{ units}", "100 ", False),
    ("10", "\\$10", True),
    ("\\left(x-2\\right)\\left(x+2\\right)", "(x-2)(x+2)", True),
    ("0.1, 4, 2", "4, .1, 2", False),
    ("0.1", ".1", True),
    ("10\\%", "10", True),
    ("10\\sqrt{3} + \\sqrt4", "10\\sqrt3 + \\sqrt{4}", True),
    ("\\frac34i", "\\frac{3}{4}i", True),
    ("\\tfrac83", "\\frac{8}{3}", True),
    ("5x - 7y + 11z + 4 = 0", "x + y - z + 2 = 0", False),
    ("1/2", "\\frac{1}{2}", True),
]


@pytest.mark.parametrize("a, b, equal", MATH_PAPER_CASES)
def test_strip_equal_matches_the_math_papers_tests(a, b, equal):
    assert answers.strip_equal(a, b) is equal


def test_strip_string_falls_back_where_the_reference_raises():
    # hendrycks_math/utils.py: fix_a_slash_b's int() and remove_right_units' assert raise,
    # and is_equiv then compares the raw strings.
    with pytest.raises(ValueError):
        answers.strip_string("x/2")
    assert answers.strip_equal("x/2", "x/2") and not answers.strip_equal("x/2", "x / 2")
    with pytest.raises(ValueError):
        answers.strip_string("1\\text{ m}\\text{ s}")


def test_minerva_normalisation_as_its_comments_state():
    # lm_eval/tasks/minerva_math/utils.py normalize_final_answer: "\\fracab -> \\frac{a}{b}",
    # "\\sqrta -> \\sqrt{a}", "100,000 -> 100000", the last "=" side, units and $...$ dropped.
    assert answers.minerva_normalize("\\fracab") == "\\frac{a}{b}"
    assert answers.minerva_normalize("\\sqrt2") == "\\sqrt{2}"
    assert answers.minerva_normalize("100,000") == "100000"
    assert answers.minerva_normalize("x = 5") == "5"
    assert answers.minerva_normalize("$\\boxed{24}$") == "24"
    assert answers.minerva_normalize("12 inches") == "12"
    assert answers.minerva_normalize("\\text{(C)}") == "(C)"


def test_minerva_shots_extract_and_match_their_boxed_answers():
    # The fixed examples lm-eval's minerva_math prompts with: the final-answer line's answer
    # equals the boxed one (what process_docs takes as the gold).
    finals = [answers.minerva_final_answer(shot["solution"]) for shot in MINERVA_SHOTS]
    assert finals == ["$[2,5)$", "$24$", "$16$", "$-\\frac{2}{3}$"]
    for shot, final in zip(MINERVA_SHOTS, finals):
        assert answers.math_equal(final, answers.math_gold(shot["solution"]))
    assert answers.minerva_final_answer("no final line") == answers.MINERVA_INVALID


def test_math_extraction_order():
    assert answers.math_extract("so $x = \\boxed{\\frac{1}{2}}$. Done") == "\\frac{1}{2}"
    assert answers.math_extract("\\boxed{1} then \\boxed{\\sqrt{2}}") == "\\sqrt{2}"  # the last
    assert answers.math_extract("We get \\[ 7 \\] and more") == "7"
    assert answers.math_extract("it is $3$ or $4$") == "3$ or $4"  # first to last $, as lm-eval
    assert answers.math_extract("Final Answer: The final answer is $5$. I hope it is correct.") == "$5$"
    assert answers.last_boxed("\\boxed{unclosed") is None and answers.unbox(None) is None
    assert answers.last_boxed("\\boxed 5$ rest") == "\\boxed 5" and answers.unbox("\\boxed 5") == "5"
    assert answers.math_equal("0.5", "\\frac12") and not answers.math_equal("0.5", None)


# lm_eval/tasks/gsm8k/gsm8k.yaml: strict "#### (\-?[0-9\.\,]+)", flexible last
# "(-?[$0-9.,]{2,})|(-?[0-9]+)", exact_match ignoring ",", "$", "(?s).*#### ", "\.$" and case.
GOLD = "She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 1,018"


@pytest.mark.parametrize(
    "generation, strict, strict_ok, flexible, flexible_ok",
    [
        ("so 1018 in all.\n#### 1018", "1018", True, "1018", True),
        ("#### 1,018.", "1,018.", True, "1,018.", True),
        ("#### $1,018", answers.INVALID, False, "$1,018", True),
        ("The answer is 1018.", answers.INVALID, False, "1018.", True),
        ("#### 1018.00", "1018.00", False, "1018.00", False),
        ("#### -3 and later 7", "-3", False, "7", False),
        ("no number here", answers.INVALID, False, answers.INVALID, False),
    ],
)
def test_gsm8k_strict_and_flexible(generation, strict, strict_ok, flexible, flexible_ok):
    assert answers.gsm8k_extract(generation) == strict
    assert answers.gsm8k_equal(strict, GOLD) is strict_ok
    assert answers.gsm8k_extract(generation, flexible=True) == flexible
    assert answers.gsm8k_equal(flexible, GOLD) is flexible_ok


def test_regex_filter_capture_groups():
    # lm-evaluation-harness tests/test_bbh_filters.py: an all-empty capture tuple is a
    # non-match (the fallback), a partly empty one takes its non-empty group, one group as is.
    assert answers.regex_extract("x", r"x(foo)?(bar)?") == answers.INVALID
    assert answers.regex_extract("xbar", r"x(foo)?(bar)?") == "bar"
    assert answers.regex_extract("The answer is (B)", r"\(([A-Z])\)") == "B"


def test_bbh_answer():
    # bbh/cot_fewshot: "(?<=the answer is )(.*)(?=.)", the first match; exact match after.
    assert answers.bbh_extract("The color of the mug is purple. So the answer is (Q).") == "(Q)"
    assert answers.bbh_extract("So the answer is Monsters, Inc.") == "Monsters, Inc"
    assert answers.bbh_extract("So the answer is valid.\nQ: next") == "valid"
    assert answers.bbh_extract("The answer is (A).") == answers.INVALID  # case matters, as in lm-eval


def test_exact_match_normalisation_options():
    assert (
        answers.normalize_exact("Hello, World!", ignore_case=True, ignore_punctuation=True) == "hello world"
    )
    assert answers.normalize_exact("a b", regexes_to_ignore=(" ",)) == "ab"


def test_code_block():
    # lm_eval/tasks/mbpp/utils.py extract_code_blocks: the first fenced block, else the text.
    assert answers.code_block("```python\ndef f():\n    return 1\n```\ntext") == "def f():\n    return 1"
    assert answers.code_block("def f():\n    return 1") == "def f():\n    return 1"
