"""Optax optimiser and learning-rate schedules for pretraining.

AdamW with *decoupled* weight decay (Loshchilov & Hutter, 2019) applied only to the
parameters the config allows (norm scales and embeddings are usually excluded),
global-norm clipping before the update, and either warmup + cosine or
warmup-stable-decay (WSD, Hu et al. 2024 "MiniCPM") whose decay phase can start exactly
when the data mixture switches to its annealing stage. Parameters and optimiser moments
stay float32 ("master weights") whatever the activation dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from common import checks

SCHEDULES = ("cosine", "wsd", "constant")


def validate(cfg: ml_collections.ConfigDict, total_steps: int) -> None:
    """Fails fast on bad `config.optim` values, naming the field."""

    def check(ok: bool, field: str, msg: str, value: Any) -> None:
        checks.require(ok, f"optim.{field}", msg, value)

    check(cfg.schedule in SCHEDULES, "schedule", f"must be one of {SCHEDULES}", cfg.schedule)

    def number(field: str, ok: Callable[[float], bool], msg: str) -> None:
        value = cfg[field]
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        check(finite and ok(value), field, f"must be a finite number {msg}", value)

    number("peak_lr", lambda v: v > 0, "> 0")
    number("end_lr_ratio", lambda v: 0 <= v <= 1, "in [0, 1]")
    check(
        0 <= cfg.warmup_steps <= total_steps,
        "warmup_steps",
        f"must be in [0, total_steps={total_steps}]",
        cfg.warmup_steps,
    )
    number("weight_decay", lambda v: v >= 0, ">= 0")
    number("clip_norm", lambda v: v >= 0, ">= 0 (0 disables clipping)")
    number("b1", lambda v: 0 <= v < 1, "in [0, 1)")
    number("b2", lambda v: 0 <= v < 1, "in [0, 1)")
    number("eps", lambda v: v > 0, "> 0")
    if cfg.schedule == "wsd":
        check(
            _parse_decay_start(cfg.decay_start) is not None,
            "decay_start",
            "must be 'anneal' (the mixture's annealing stage), a step like '900' or a "
            "fraction of total_steps like '0.8'",
            cfg.decay_start,
        )


def _parse_decay_start(text: str) -> str | int | float | None:
    """'anneal' | '900' (a step) | '0.8' (a fraction); a string so CLI overrides keep one type."""
    text = str(text).strip()
    if text == "anneal":
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        fraction = float(text)
    except ValueError:
        return None
    return fraction if 0 <= fraction <= 1 else None


def decay_start_step(cfg: ml_collections.ConfigDict, total_steps: int, anneal_start: int | None) -> int:
    """First step of the WSD decay phase: the annealing stage's start, a step, or a fraction."""
    start = _parse_decay_start(cfg.decay_start)
    if start == "anneal":
        if anneal_start is None:
            raise checks.ConfigError(
                "config.optim.decay_start: 'anneal' needs a mixture with an "
                "annealing stage, got none (synthetic data has no mixture)"
            )
        step = anneal_start
    elif isinstance(start, float):
        step = int(round(start * total_steps))
    else:
        step = int(start)
    if not cfg.warmup_steps <= step <= total_steps:
        raise checks.ConfigError(
            f"config.optim.decay_start: resolves to step {step}, which must be "
            f"in [warmup_steps={cfg.warmup_steps}, total_steps={total_steps}]"
        )
    return step


def make_schedule(
    cfg: ml_collections.ConfigDict, total_steps: int, anneal_start: int | None = None
) -> optax.Schedule:
    """Learning rate as a function of the optimiser step."""
    peak, end = cfg.peak_lr, cfg.peak_lr * cfg.end_lr_ratio
    warmup = cfg.warmup_steps
    if cfg.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak)], [warmup]
        )
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=peak,
            warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1),
            end_value=end,
        )
    start = decay_start_step(cfg, total_steps, anneal_start)
    decay_len = max(total_steps - start, 1)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, max(warmup, 1)),
            optax.constant_schedule(peak),
            optax.linear_schedule(peak, end, decay_len),
        ],
        [warmup, start],
    )


def _path_str(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def decay_mask(params: Any, exclude: tuple[str, ...]) -> Any:
    """True where weight decay applies: parameters whose path names none of `exclude`."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(word in _path_str(path) for word in exclude), params
    )


def make_optimizer(cfg: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """Clip -> AdamW (decoupled, masked weight decay), all in float32."""
    exclude = tuple(cfg.weight_decay_exclude)
    adamw = optax.adamw(
        learning_rate=schedule,
        b1=cfg.b1,
        b2=cfg.b2,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        mu_dtype=jnp.float32,
        mask=lambda params: decay_mask(params, exclude),
    )
    if cfg.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw)
    return adamw


def default_config() -> ml_collections.ConfigDict:
    """`config.optim` defaults; training configs override fields."""
    return ml_collections.ConfigDict(
        dict(
            schedule="cosine",  # cosine | wsd | constant
            peak_lr=3e-4,
            end_lr_ratio=0.1,  # final lr = peak_lr * end_lr_ratio
            warmup_steps=100,
            decay_start="anneal",  # wsd only: 'anneal', a step ('900') or a fraction ('0.8')
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            weight_decay=0.1,
            weight_decay_exclude=("norm", "embedder"),
            clip_norm=1.0,
        )
    )
