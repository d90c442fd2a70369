"""Rules every domain gets: empty documents and documents too short to teach anything."""

from __future__ import annotations

from typing import Any

from data_pipeline.filters.base import Filter, check_positive


class Empty(Filter):
    name = "empty"

    def reject(self, record: dict[str, Any]) -> str | None:
        return self.name if not record["text"].strip() else None


class TooShort(Filter):
    name = "too_short"

    def __init__(self, min_chars: int, section: str = "filters.common"):
        super().__init__()
        check_positive(section, "min_chars", min_chars)
        self.min_chars = min_chars

    def reject(self, record: dict[str, Any]) -> str | None:
        return self.name if len(record["text"].strip()) < self.min_chars else None
