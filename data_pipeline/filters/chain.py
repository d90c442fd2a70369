"""Builds each domain's filter chain from the config and runs it on one record.

The order is FineWeb's (language, repetition, quality, C4, line rules): cheap and decisive
rules first, and C4's line removal before the rules that look at the surviving lines.
"""

from __future__ import annotations

import inspect
from typing import Any

from data_pipeline.filters.base import Filter
from data_pipeline.filters.code import Code
from data_pipeline.filters.language import Language
from data_pipeline.filters.length import Empty, TooShort
from data_pipeline.filters.math_density import MathDensity
from data_pipeline.filters.web import C4, FineWeb, GopherQuality, GopherRepetition

REGISTRY: dict[str, type[Filter]] = {
    "language": Language,
    "gopher_repetition": GopherRepetition,
    "gopher_quality": GopherQuality,
    "c4": C4,
    "fineweb": FineWeb,
    "math_density": MathDensity,
    "code": Code,
}


def default_params(name: str) -> dict[str, Any]:
    """A filter's parameters with their defaults, so configs list (and can override) every one."""
    signature = inspect.signature(REGISTRY[name].__init__)
    return {k: p.default for k, p in signature.parameters.items() if k not in ("self", "section")}


def build_chain(domain: str, filters_config: Any) -> list[Filter]:
    """[Empty, TooShort, then the enabled filters of ``filters.<domain>`` in REGISTRY order]."""
    chain: list[Filter] = [Empty(), TooShort(min_chars=filters_config.min_chars)]
    domain_config = filters_config.get(domain) or {}
    unknown = set(domain_config) - set(REGISTRY)
    if unknown:
        raise ValueError(f"filters.{domain}: unknown filters {sorted(unknown)}; known: {sorted(REGISTRY)}")
    for name, cls in REGISTRY.items():
        if name not in domain_config:
            continue
        params = dict(domain_config[name])
        if not params.pop("enabled", True):
            continue
        section = f"filters.{domain}.{name}"
        try:
            chain.append(cls(section=section, **params))
        except TypeError as e:
            raise ValueError(f"{section}: {e}") from None
    return chain


def run_chain(chain: list[Filter], record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(possibly rewritten copy of the record, first rejection reason or None)."""
    record = dict(record)
    for rule in chain:
        reason = rule(record)
        if reason is not None:
            return record, reason
    return record, None
