"""Web-text rules: Gopher quality and repetition (Rae et al. 2021), C4 (Raffel et al. 2020),
FineWeb line rules (Penedo et al. 2024). Defaults are the papers' (as datatrove uses them)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

import numpy as np

from common import checks
from data_pipeline.dedup.shingles import ngram_hashes, word_hashes
from data_pipeline.filters.base import (
    GOPHER_STOP_WORDS,
    TERMINAL_PUNCTUATION,
    Filter,
    lines,
    words,
)

_BULLETS = ("●", "•", "*", "-", "‣", "⁃", "◦", "▪", "▫", "–")
_ELLIPSES = ("...", "…")
_ALPHA = re.compile(r"[^\W\d_]")


@dataclasses.dataclass(eq=False, kw_only=True)
class GopherQuality(Filter):
    """Gopher's document heuristics: length, word shape, symbols, list-likeness, stop words."""

    name = "gopher_quality"

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2
    section: str = "filters.web.gopher_quality"
    non_negative: ClassVar = ("min_words", "max_words", "min_stop_words")
    fractions: ClassVar = ("max_bullet_lines_ratio", "max_ellipsis_lines_ratio", "min_alpha_words_ratio")

    def check(self) -> None:
        if self.min_mean_word_length > self.max_mean_word_length:
            raise checks.ConfigError(
                f"config.{self.section}.min_mean_word_length: must be <= max_mean_word_length"
            )

    def reject(self, record: dict[str, Any]) -> str | None:
        text = record["text"]
        tokens = words(text)
        n = len(tokens)
        if n < self.min_words or n > self.max_words:
            return self.name
        mean = sum(map(len, tokens)) / n
        if not self.min_mean_word_length <= mean <= self.max_mean_word_length:
            return self.name
        symbols = text.count("#") + sum(text.count(e) for e in _ELLIPSES)
        if symbols / n > self.max_symbol_word_ratio:
            return self.name
        doc_lines = lines(text)
        if doc_lines:
            bullets = sum(line.lstrip().startswith(_BULLETS) for line in doc_lines)
            if bullets / len(doc_lines) > self.max_bullet_lines_ratio:
                return self.name
            ellipses = sum(line.rstrip().endswith(_ELLIPSES) for line in doc_lines)
            if ellipses / len(doc_lines) > self.max_ellipsis_lines_ratio:
                return self.name
        if sum(bool(_ALPHA.search(w)) for w in tokens) / n < self.min_alpha_words_ratio:
            return self.name
        if sum(w.lower() in GOPHER_STOP_WORDS for w in tokens) < self.min_stop_words:
            return self.name
        return None


def _top_ngram_char_fraction(ids: np.ndarray, lengths: np.ndarray, n: int, total_chars: int) -> float:
    """Characters covered by the most frequent word n-gram (all its occurrences), over all word characters."""
    if len(ids) < n:
        return 0.0
    uniques, first, counts = np.unique(ngram_hashes(ids, n), return_index=True, return_counts=True)
    top = int(np.argmax(counts))
    if counts[top] < 2:
        return 0.0
    start = int(first[top])
    return float(lengths[start : start + n].sum()) * int(counts[top]) / total_chars


def _duplicate_ngram_char_fraction(ids: np.ndarray, lengths: np.ndarray, n: int, total_chars: int) -> float:
    """Characters of words inside repeats of an earlier n-gram, each character counted once."""
    if len(ids) < n:
        return 0.0
    grams = ngram_hashes(ids, n)
    _, first, inverse = np.unique(grams, return_index=True, return_inverse=True)
    repeat = (first[inverse] < np.arange(len(grams))).astype(np.int32)
    covered = np.convolve(repeat, np.ones(n, dtype=np.int32))[: len(ids)] > 0
    return float(lengths[covered].sum()) / total_chars


def _duplicate_fractions(parts: list[str]) -> tuple[float, float]:
    """(fraction of parts that repeat an earlier one, fraction of their characters)."""
    seen: set[str] = set()
    dup_count = dup_chars = 0
    for part in parts:
        if part in seen:
            dup_count += 1
            dup_chars += len(part)
        else:
            seen.add(part)
    total = sum(map(len, parts)) or 1
    return dup_count / max(len(parts), 1), dup_chars / total


@dataclasses.dataclass(eq=False, kw_only=True)
class GopherRepetition(Filter):
    """Gopher's repetition rules: duplicated lines/paragraphs and dominating n-grams."""

    name = "gopher_repetition"

    max_dup_line_fraction: float = 0.3
    max_dup_para_fraction: float = 0.3
    max_dup_line_char_fraction: float = 0.2
    max_dup_para_char_fraction: float = 0.2
    # (n, largest fraction of word characters) pairs.
    top_ngram_max_fractions: tuple = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_ngram_max_fractions: tuple = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
    section: str = "filters.web.gopher_repetition"
    fractions: ClassVar = (
        "max_dup_line_fraction",
        "max_dup_para_fraction",
        "max_dup_line_char_fraction",
        "max_dup_para_char_fraction",
    )

    def check(self) -> None:
        for field in ("top_ngram_max_fractions", "dup_ngram_max_fractions"):
            pairs = tuple((int(n), float(f)) for n, f in getattr(self, field))
            for n, fraction in pairs:
                if n < 1:
                    raise checks.ConfigError(
                        f"config.{self.section}.{field}: n-gram sizes must be >= 1, got {n}"
                    )
                checks.fraction(fraction, f"{self.section}.{field}")
            setattr(self, field, pairs)

    def reject(self, record: dict[str, Any]) -> str | None:
        text = record["text"]
        paragraphs = [p.strip() for p in re.split(r"\n{2,}", text) if p.strip()]
        frac, char_frac = _duplicate_fractions(paragraphs)
        if frac > self.max_dup_para_fraction or char_frac > self.max_dup_para_char_fraction:
            return self.name
        frac, char_frac = _duplicate_fractions(lines(text))
        if frac > self.max_dup_line_fraction or char_frac > self.max_dup_line_char_fraction:
            return self.name
        tokens = words(text)
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        total_chars = int(lengths.sum())
        if not total_chars:
            return None
        ids = word_hashes(tokens)  # stable across processes (Python's hash() is salted per process)
        for n, limit in self.top_ngram_max_fractions:
            if _top_ngram_char_fraction(ids, lengths, n, total_chars) > limit:
                return self.name
        for n, limit in self.dup_ngram_max_fractions:
            if _duplicate_ngram_char_fraction(ids, lengths, n, total_chars) > limit:
                return self.name
        return None


_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")


@dataclasses.dataclass(eq=False, kw_only=True)
class C4(Filter):
    """C4's rules: keep lines that end in terminal punctuation and have 3+ words; drop pages with
    lorem ipsum, curly braces (code) or fewer than ``min_sentences`` sentences left."""

    name = "c4"

    min_words_per_line: int = 3
    max_word_length: int = 1000
    min_sentences: int = 5
    remove_citations: bool = True
    drop_terminal_punct_free_lines: bool = True
    drop_javascript_lines: bool = True
    drop_policy_lines: bool = True
    drop_lorem_ipsum: bool = True
    drop_curly_bracket: bool = True
    section: str = "filters.web.c4"
    non_negative: ClassVar = ("min_words_per_line", "max_word_length", "min_sentences")

    def _keep_line(self, line: str) -> bool:
        tokens = line.split()
        if any(len(t) > self.max_word_length for t in tokens):
            return False
        if self.drop_terminal_punct_free_lines and not line.endswith(TERMINAL_PUNCTUATION):
            return False
        if len(tokens) < self.min_words_per_line:
            return False
        lower = line.lower()
        if self.drop_javascript_lines and "javascript" in lower:
            return False
        return not (self.drop_policy_lines and any(p in lower for p in _POLICY))

    def reject(self, record: dict[str, Any]) -> str | None:
        text = record["text"]
        lower = text.lower()
        if self.drop_lorem_ipsum and "lorem ipsum" in lower:
            return self.name
        if self.drop_curly_bracket and "{" in text:
            return self.name
        kept = []
        for line in text.split("\n"):
            line = line.strip()
            if self.remove_citations:
                line = _CITATION.sub("", line).strip()
            if line and self._keep_line(line):
                kept.append(line)
        new_text = "\n".join(kept)
        if len(_SENTENCE_END.findall(new_text)) < self.min_sentences:
            return self.name
        record["text"] = new_text
        return None


@dataclasses.dataclass(eq=False, kw_only=True)
class FineWeb(Filter):
    """FineWeb's line rules: enough lines end in punctuation, not mostly short lines, few
    duplicated-line characters, and not a list (too many newlines per word)."""

    name = "fineweb"

    min_line_punct_ratio: float = 0.12
    max_short_line_ratio: float = 0.67
    short_line_length: int = 30
    max_char_duplicates_ratio: float = 0.01
    max_new_line_ratio: float = 0.3
    section: str = "filters.web.fineweb"
    non_negative: ClassVar = ("short_line_length", "max_new_line_ratio")
    fractions: ClassVar = ("min_line_punct_ratio", "max_short_line_ratio", "max_char_duplicates_ratio")

    def reject(self, record: dict[str, Any]) -> str | None:
        text = record["text"]
        doc_lines = [line.strip() for line in lines(text)]
        if not doc_lines:
            return self.name
        if (
            sum(line.endswith(TERMINAL_PUNCTUATION) for line in doc_lines) / len(doc_lines)
            < self.min_line_punct_ratio
        ):
            return self.name
        if (
            sum(len(line) <= self.short_line_length for line in doc_lines) / len(doc_lines)
            > self.max_short_line_ratio
        ):
            return self.name
        _, dup_char_fraction = _duplicate_fractions(doc_lines)
        if dup_char_fraction > self.max_char_duplicates_ratio:
            return self.name
        n_words = len(words(text)) or 1
        if text.count("\n") / n_words > self.max_new_line_ratio:
            return self.name
        return None
