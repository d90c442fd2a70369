"""Config validation: one helper, one message shape.

Every command checks its config at start and fails naming the field, e.g.
`config.optim.warmup_steps: must be >= 0, got -1`, before any work is done.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config value is invalid; the message names the field (`config.a.b: ...`)."""


def require(ok: bool, field: str, message: str, value: Any = ...) -> None:
    """Raises ConfigError(`config.<field>: <message>, got <value>`) unless `ok`."""
    if not ok:
        got = "" if value is ... else f", got {value!r}"
        raise ConfigError(f"config.{field}: {message}{got}")


def positive(value: Any, field: str) -> None:
    require(value > 0, field, "must be > 0", value)


def non_negative(value: Any, field: str) -> None:
    require(value >= 0, field, "must be >= 0", value)


def fraction(value: Any, field: str) -> None:
    require(0 <= value <= 1, field, "must be in [0, 1]", value)


def one_of(value: Any, choices: Any, field: str) -> None:
    require(value in choices, field, f"must be one of {sorted(choices)}", value)


def get(config: Any, dotted: str) -> Any:
    """config['a']['b'] for 'a.b'."""
    for part in dotted.split("."):
        config = config[part]
    return config
