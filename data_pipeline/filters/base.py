"""The one interface every per-document rule implements, and the word/line helpers they share.

A filter returns ``None`` to keep a record or the stable snake_case reason that rejects it.
Line-level rules (C4) may rewrite ``record["text"]``; the caller hands each chain its own
copy of the record. Every filter counts what it sees and drops (datatrove style), which the
pipeline reports as Beam metrics.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, ClassVar

from common import checks

WORD = re.compile(r"\S+")
_PUNCT_ONLY = re.compile(r"^\W+$")
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "”", "’", "。", "！", "？", ":")
# The package's stop words: Gopher's eight (a page needs two of them), within the common
# English function words whose density the heuristic quality score uses.
GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
STOP_WORDS = GOPHER_STOP_WORDS | frozenset("a in it for not on as you do at this but by from".split())


# A record passes through several rules that split the same text: the last few splits are
# remembered (read-only tuples) so each is computed once per document.
@functools.lru_cache(maxsize=4)
def words(text: str) -> tuple[str, ...]:
    """Whitespace tokens without the punctuation-only ones (Gopher counts words this way)."""
    return tuple(w for w in WORD.findall(text) if not _PUNCT_ONLY.match(w))


@functools.lru_cache(maxsize=4)
def lines(text: str) -> tuple[str, ...]:
    """Non-blank lines."""
    return tuple(line for line in text.split("\n") if line.strip())


@dataclasses.dataclass(eq=False, kw_only=True)
class Filter:
    """Base class. Subclasses are keyword-only dataclasses whose fields are the rule's
    parameters (configs override them by name); they set ``name``, the rejection reason,
    and implement ``reject``. Fields listed in ``fractions`` must lie in [0, 1] and those in
    ``non_negative`` must be >= 0; ``check`` adds a rule's own validation. Errors name the
    field as ``<section>.<field>``.
    """

    name: ClassVar[str] = ""
    fractions: ClassVar[tuple[str, ...]] = ()
    non_negative: ClassVar[tuple[str, ...]] = ()
    section: str = "filters"

    def __post_init__(self) -> None:
        for field in self.non_negative:
            checks.non_negative(getattr(self, field), f"{self.section}.{field}")
        for field in self.fractions:
            checks.fraction(getattr(self, field), f"{self.section}.{field}")
        self.check()
        self.seen = 0
        self.dropped = 0

    def check(self) -> None:
        """Validation beyond the ranges of ``fractions`` and ``non_negative``."""

    def reject(self, record: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def __call__(self, record: dict[str, Any]) -> str | None:
        self.seen += 1
        reason = self.reject(record)
        if reason is not None:
            self.dropped += 1
        return reason
