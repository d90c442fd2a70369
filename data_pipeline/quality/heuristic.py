"""The quality score used when no trained classifier is configured (``quality.model_path`` empty).

Not a model: the mean of a few clipped [0, 1] signals that correlate with well-formed
text, so the high-quality subset is still a meaningful "most document-like" slice.
web: length, prose punctuation, stop-word density, alphabetic words; math: length and
formula density; code: length, comments/docstrings, sane line lengths.
"""

from __future__ import annotations

import math
from typing import Any

from data_pipeline.filters.base import STOP_WORDS, TERMINAL_PUNCTUATION, lines, words
from data_pipeline.filters.math_density import math_density

_COMMENT_PREFIXES = ("#", "//", "/*", "*", '"""', "'''", "--", ";")


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def _length(n_words: int) -> float:
    return _clip(math.log10(max(n_words, 1)) / 3.0)  # 1000 words -> 1


def heuristic_score(record: dict[str, Any]) -> float:
    text = record["text"]
    tokens = words(text)
    doc_lines = lines(text)
    if not tokens or not doc_lines:
        return 0.0
    if record["domain"] == "code":
        comments = sum(line.lstrip().startswith(_COMMENT_PREFIXES) for line in doc_lines) / len(doc_lines)
        mean_line = sum(map(len, doc_lines)) / len(doc_lines)
        signals = [_length(len(tokens)), _clip(comments / 0.2), _clip(1.0 - abs(mean_line - 40.0) / 60.0)]
    elif record["domain"] == "math":
        signals = [_length(len(tokens)), _clip(math_density(text) / 0.3)]
    else:
        punct = sum(line.rstrip().endswith(TERMINAL_PUNCTUATION) for line in doc_lines) / len(doc_lines)
        stop = sum(t.lower() in STOP_WORDS for t in tokens) / len(tokens)
        alpha = sum(t.isalpha() for t in tokens) / len(tokens)
        signals = [_length(len(tokens)), punct, _clip(stop / 0.3), alpha]
    return sum(signals) / len(signals)
