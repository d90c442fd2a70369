"""Parsers of the values commands take, shared by every stage."""

from __future__ import annotations


def parse_assignment(value: str, flag: str, left: str = "NAME", right: str = "PATH") -> tuple[str, str]:
    """``"NAME=PATH"`` -> ``(NAME, PATH)``, both stripped; the error names the flag."""
    name, sep, path = value.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ValueError(f"--{flag}: expected {left}={right}, got {value!r}")
    return name, path


def comma_list(text: str) -> list[str]:
    """ "a, b,,c" -> ["a", "b", "c"]: a list kept in a string config field (a flag sets it whole)."""
    return [part.strip() for part in text.split(",") if part.strip()]
