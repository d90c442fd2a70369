"""Math rules: keep formula-dense text and worked solutions.

Web word rules (stop words, mean word length, terminal punctuation) would drop LaTeX-heavy
documents, so math gets its own signal: mathematical tokens (LaTeX commands, ``$``
delimiters, operators, math symbols) per word. Worked solutions ("Solution", "Proof",
``\\boxed``) are kept at a lower density, since their prose explains the formulas.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

from data_pipeline.filters.base import Filter, words

_MATH_TOKEN = re.compile(r"\\[A-Za-z]+|\$|[=+^_<>≤≥≠≈∑∏∫√∞∂∈∉∀∃→⇒↔×÷±·∇]|\d+(?:\.\d+)?")
_SOLUTION_MARKER = re.compile(
    r"\b(?:solution|proof|answer|therefore|hence|q\.e\.d|we have|it follows|step \d)\b|\\boxed|\\begin\{proof\}|∎",
    re.IGNORECASE,
)


def math_density(text: str) -> float:
    """Mathematical tokens per word."""
    return len(_MATH_TOKEN.findall(text)) / max(len(words(text)), 1)


@dataclasses.dataclass(eq=False, kw_only=True)
class MathDensity(Filter):
    name = "math_density"

    min_density: float = 0.1
    min_solution_density: float = 0.03
    section: str = "filters.math.math_density"
    non_negative: ClassVar = ("min_density", "min_solution_density")

    def reject(self, record: dict[str, Any]) -> str | None:
        text = record["text"]
        density = math_density(text)
        if density >= self.min_density:
            return None
        if density >= self.min_solution_density and _SOLUTION_MARKER.search(text):
            return None
        return self.name
