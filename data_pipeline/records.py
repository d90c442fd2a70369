"""The record shapes that flow between stages, so every stage builds them the same way.

A record is a plain dict (pickles everywhere, no schema library on the workers):
``{"id", "text", "source", "domain", "language"}`` plus optional ``quality_score``,
``high_quality``, ``redactions``, ``path``. A rejection says which rule dropped a record;
a dead letter keeps the raw bytes of something that could not be read at all.
"""

from __future__ import annotations

import base64
from typing import Any

from common.domains import DOMAINS  # noqa: F401 - records name their domain from this list

# The tag of every stage's rejected output (and the rejected/ folder): defined here only.
REJECTED = "rejected"
# Rejected text is kept for inspection, but not whole huge documents.
REJECTED_TEXT_CHARS = 2000


def rejection(record: dict[str, Any], reason: str, keep_text: bool = True) -> dict[str, Any]:
    """The rejection entry for a record dropped by the rule named ``reason``."""
    text = record.get("text", "") if keep_text else ""
    return {
        "id": record["id"],
        "source": record["source"],
        "domain": record["domain"],
        "reason": reason,
        "text": text[:REJECTED_TEXT_CHARS],
    }


def dead_letter(
    record_id: str, source: str, path: str, error: str, raw: bytes, max_raw_bytes: int
) -> dict[str, Any]:
    """The dead-letter entry for unreadable input; ``raw`` is base64, cut to ``max_raw_bytes``."""
    return {
        "id": record_id,
        "source": source,
        "path": path,
        "error": error,
        "raw": base64.b64encode(raw[:max_raw_bytes]).decode("ascii"),
        "raw_size": len(raw),
    }
