"""Rules every domain gets: empty documents and documents too short to teach anything."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from data_pipeline.filters.base import Filter


class Empty(Filter):
    name = "empty"

    def reject(self, record: dict[str, Any]) -> str | None:
        return self.name if not record["text"].strip() else None


@dataclasses.dataclass(eq=False, kw_only=True)
class TooShort(Filter):
    name = "too_short"

    min_chars: int
    section: str = "filters.common"
    non_negative: ClassVar = ("min_chars",)

    def reject(self, record: dict[str, Any]) -> str | None:
        return self.name if len(record["text"].strip()) < self.min_chars else None
