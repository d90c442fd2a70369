"""Answer extraction and normalisation for the generative tasks, as lm-evaluation-harness does it.

Each function states the lm-eval 0.4.x behaviour it reproduces, so a score here means what the
same task name means in published tables:

- GSM8K (lm_eval/tasks/gsm8k/gsm8k.yaml): the "strict-match" filter takes the first
  ``#### N``; "flexible-extract" takes the last number-like span; exact match compares after
  removing ``,``, ``$``, everything up to ``#### `` and a trailing ``.``, ignoring case.
- MATH (lm_eval/tasks/minerva_math/utils.py, hendrycks_math/utils.py): the answer is the
  Minerva "Final Answer: The final answer is X. I hope it is correct." line, else the last
  ``\\boxed{}``; two answers are equal when Minerva's ``normalize_final_answer`` or the
  MATH paper's ``strip_string`` makes them the same string. lm-eval's minerva_math also
  checks symbolic equality with sympy's LaTeX parser (antlr4); that is not done here.
- BBH chain-of-thought (lm_eval/tasks/bbh/cot_fewshot): the text after "the answer is "
  up to its last character, compared exactly.
- Code (lm_eval/tasks/mbpp/utils.py): the first fenced block when the model wrote one.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Sequence

INVALID = "[invalid]"  # lm-eval's RegexFilter fallback
MINERVA_INVALID = "[invalidanswer]"  # minerva_math's get_unnormalized_answer fallback

GSM8K_STRICT = r"#### (\-?[0-9\.\,]+)"
GSM8K_FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
GSM8K_IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")
BBH_ANSWER = r"(?<=the answer is )(.*)(?=.)"

_PUNCTUATION = dict.fromkeys(i for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P"))


def regex_extract(text: str, pattern: str, group_select: int = 0, fallback: str = INVALID) -> str:
    """lm-eval's ``regex`` filter: match ``group_select`` of ``findall`` (its first non-empty
    group when the pattern has several), stripped; ``fallback`` when nothing matches."""
    matches = re.findall(pattern, text)
    if not matches:
        return fallback
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((group for group in match if group), "")
        if not match:
            return fallback
    return match.strip()


def normalize_exact(
    text: str,
    regexes_to_ignore: Sequence[str] = (),
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
) -> str:
    """lm-eval's exact_match preprocessing of one string (prediction or reference)."""
    for pattern in regexes_to_ignore:
        text = re.sub(pattern, "", text)
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(_PUNCTUATION)
    return text


def gsm8k_extract(generation: str, flexible: bool = False) -> str:
    """The strict ``#### N`` answer, or with ``flexible`` the last number in the text."""
    if flexible:
        return regex_extract(generation, GSM8K_FLEXIBLE, group_select=-1)
    return regex_extract(generation, GSM8K_STRICT)


def gsm8k_equal(extracted: str, gold_solution: str) -> bool:
    """Exact match against the dataset's ``answer`` field (a worked solution ending ``#### N``)."""
    return normalize_exact(extracted, GSM8K_IGNORE, ignore_case=True) == normalize_exact(
        gold_solution, GSM8K_IGNORE, ignore_case=True
    )


def bbh_extract(generation: str) -> str:
    return regex_extract(generation, BBH_ANSWER)


# --- MATH ------------------------------------------------------------------------------------


def last_boxed(text: str) -> str | None:
    """The last ``\\boxed{...}`` (braces balanced) or ``\\fbox{...}``, or ``\\boxed X`` up to
    the next ``$``, with its command; None when there is none or its braces do not close."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for end in range(start, len(text)):
        if text[end] == "{":
            depth += 1
        elif text[end] == "}":
            depth -= 1
            if depth == 0:
                return text[start : end + 1]
    return None


def unbox(boxed: str | None) -> str | None:
    """The content of a ``last_boxed`` string (None stays None, as does an ``\\fbox``)."""
    if boxed is None:
        return None
    if boxed.startswith("\\boxed "):
        return boxed[len("\\boxed ") :]
    if boxed.startswith("\\boxed{") and boxed.endswith("}"):
        return boxed[len("\\boxed{") : -1]
    return None


def math_gold(solution: str) -> str | None:
    """The reference answer of a MATH solution: its last boxed expression."""
    return unbox(last_boxed(solution))


def minerva_final_answer(text: str) -> str:
    """The X of "Final Answer: The final answer is X. I hope it is correct." (the Minerva
    prompt's last line), else ``[invalidanswer]``."""
    match = re.search(
        r"Final Answer: The final answer is(.*?). I hope it is correct.", text + "I hope it is correct."
    )
    return match.group(1).strip() if match else MINERVA_INVALID


def math_extract(generation: str) -> str:
    """The Minerva final answer when the model wrote that line, else the last boxed answer,
    else a display formula ``\\[...\\]``, else the span between the first and last ``$``
    (hendrycks_math's ``extract_answer`` order), else the whole text."""
    final = minerva_final_answer(generation)
    if final != MINERVA_INVALID:
        return final
    boxed = unbox(last_boxed(generation))
    if boxed is not None:
        return boxed
    display = re.search(r"\\\[(.+?)\\\]", generation, re.DOTALL)
    if display:
        return display.group(1).strip()
    dollars = [i for i, c in enumerate(generation) if c == "$"]
    if len(dollars) >= 2:
        return generation[dollars[0] + 1 : dollars[-1]]
    return generation


# Minerva appendix D (Lewkowycz et al. 2022), as minerva_math/utils.py applies it.
_MINERVA_SUBSTITUTIONS = (
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
)  # fmt: skip
_MINERVA_REMOVED = (
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units",
    "\\ldots", "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm",
    "pounds", "meters", "meals", "edges", "students", "childrentickets", "multiples",
    "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}",
    "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", '"', "\\dots",
)  # fmt: skip


def minerva_normalize(answer: str) -> str:
    """Minerva's ``normalize_final_answer``: last ``=`` side, units and words dropped, the
    inside of ``$...$``, ``\\text{}``, ``\\textbf{}``, ``\\overline{}``, ``\\boxed{}``,
    ``\\fracab`` -> ``\\frac{a}{b}``, ``\\sqrta`` -> ``\\sqrt{a}``, ``100,000`` -> ``100000``."""
    answer = answer.split("=")[-1]
    for before, after in _MINERVA_SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expression in _MINERVA_REMOVED:
        answer = answer.replace(expression, "")
    answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
    for command in ("text", "textbf", "overline"):
        answer = re.sub(rf"(\\{command}\{{)(.*?)(\}})", "\\2", answer)
    answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
    answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
    answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer


def _fix_fracs(text: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{72}`` -> ``\\frac{1}{72}``; unchanged when a
    ``\\frac`` has fewer than two characters after it. Raises IndexError on a bare trailing
    ``\\frac`` (the MATH reference does; ``math_equal`` then compares the raw strings)."""
    head, *tails = text.split("\\frac")
    out = head
    for tail in tails:
        out += "\\frac"
        if tail[0] == "{":
            out += tail
        elif len(tail) < 2:
            return text
        elif tail[1] != "{":
            out += "{" + tail[0] + "}{" + tail[1] + "}" + tail[2:]
        else:
            out += "{" + tail[0] + "}" + tail[1:]
    return out


def _fix_a_slash_b(text: str) -> str:
    """``3/4`` -> ``\\frac{3}{4}`` for plain integers; raises ValueError for other ``x/y``
    (as the MATH reference does)."""
    parts = text.split("/")
    if len(parts) != 2:
        return text
    a, b = int(parts[0]), int(parts[1])
    return f"\\frac{{{a}}}{{{b}}}" if text == f"{a}/{b}" else text


def _fix_sqrt(text: str) -> str:
    head, *tails = text.split("\\sqrt")
    return head + "".join(
        "\\sqrt" + (tail if tail[0] == "{" else "{" + tail[0] + "}" + tail[1:]) for tail in tails
    )


def strip_string(text: str) -> str:
    """The MATH paper's answer normalisation (hendrycks/math modeling/math_equivalence.py,
    copied by lm-eval's hendrycks_math): LaTeX spacing, ``\\left``/``\\right``, degrees,
    dollars, units after ``\\text{ ``, percent, leading zeros of decimals, a short ``k =``
    prefix, ``\\sqrt3``, spaces, ``\\frac12``, ``0.5`` and ``a/b`` made uniform.
    Raises (IndexError, ValueError) where the reference does."""
    text = text.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in text:
        number, *units = text.split("\\text{ ")
        if len(units) != 1:
            raise ValueError(f"more than one unit in {text!r}")
        text = number
    text = text.replace("\\%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        text = sides[1]
    text = _fix_sqrt(text).replace(" ", "")
    text = _fix_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _fix_a_slash_b(text)


def strip_equal(a: str, b: str) -> bool:
    """hendrycks_math's ``is_equiv``: equal after ``strip_string``; the raw strings compared
    when either cannot be normalised."""
    try:
        return strip_string(a) == strip_string(b)
    except (IndexError, ValueError):
        return a == b


def math_equal(extracted: str, gold: str | None) -> bool:
    """The same answer after Minerva's normalisation or after the MATH paper's."""
    if gold is None:
        return False
    return minerva_normalize(extracted) == minerva_normalize(gold) or strip_equal(extracted, gold)


# --- code ------------------------------------------------------------------------------------


def code_block(generation: str) -> str:
    """The first fenced block (```` ```python ... ``` ````) of a generation that has one, else
    the generation itself: base models often answer a code prompt with a Markdown fence."""
    match = re.search(r"```(?:\w+)?\n?(.*?)\n?```", generation, re.DOTALL)
    return match.group(1) if match else generation
