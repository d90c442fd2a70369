"""Text normalisation applied to every record before any rule looks at it.

NFC so that the same visible text has one byte sequence (dedup and n-gram matching rely on
it); one newline convention; no invisible control or zero-width characters. Whitespace
inside lines is kept: code indentation and the tokenizer's byte-exact round trip need it.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

# C0/C1 controls except tab and newline, plus zero-width and BOM characters.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200c\u200d\u2060\ufeff]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


def normalize_text(text: str, form: str = "NFC") -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    text = unicodedata.normalize(form, text)
    text = _TRAILING_SPACE.sub("\n", text)
    return text.strip("\n").rstrip()


def normalize_record(record: dict[str, Any], form: str = "NFC") -> dict[str, Any]:
    return {**record, "text": normalize_text(record["text"], form)}
