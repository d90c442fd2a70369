"""Text that no UTF-8 encodes: lone UTF-16 surrogates.

JSON may escape a UTF-16 surrogate alone (`"\\ud83d"`: an emoji cut in half, common in
crawled JSON); Python decodes it into a str that cannot be encoded as UTF-8, so a writer
(Beam's coders, TFDS, SentencePiece) fails on it far from where it was read. A valid pair
(`"\\ud83d\\ude00"`) decodes to one character, so any surrogate left in a str is lone. The
readers decide at the door: data prep dead-letters the record, the tokenizer trainer
skips the document, evaluation replaces them with U+FFFD (each counts what it did).
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def replace_lone_surrogates(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD, the replacement character."""
    return _SURROGATE.sub("\ufffd", text)


def escape_lone_surrogates(text: str) -> str:
    """`text` with each lone surrogate written as `\\udXXX` (ids, names: kept readable)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
