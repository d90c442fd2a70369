"""Per-task mixture weights as a function of the training step.

A schedule is a list of stages, each starting at a fraction of `total_steps`. Within a
stage the weights are constant, or, when the stage says `interpolate=True`, they move
linearly from its own weights to those of the next stage (so an annealing ramp is one
flag). Everything is checked at construction so a bad config fails before training.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from common.checks import ConfigError

SUM_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    start_step: int
    weights: dict[str, float]
    interpolate: bool


def config_field(cfg: Any, key: str, default: Any = None) -> Any:
    """Reads a field from a ConfigDict or a plain dict alike."""
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


class Schedule:
    """Stages over `tasks`; `weights_at(step)` gives a weight for every task (0 if absent)."""

    def __init__(self, tasks: Sequence[str], stages: Sequence[Stage], total_steps: int):
        self.tasks = list(tasks)
        self.stages = list(stages)
        self.total_steps = total_steps

    @classmethod
    def from_config(cls, mixture_cfg: Any, total_steps: int, field: str = "config") -> Schedule:
        """Validates `mixture_cfg.tasks` / `.stages` and turns start fractions into steps.

        `field` is where `mixture_cfg` sits in the command's config (`config.mixture` in a
        training config), so a ConfigError names the full path of the bad field.
        """
        if not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"total_steps: must be a positive int, got {total_steps!r}")
        tasks = list(config_field(mixture_cfg, "tasks") or [])
        if not tasks:
            raise ConfigError(f"{field}.tasks: must name at least one task")
        if len(set(tasks)) != len(tasks):
            raise ConfigError(f"{field}.tasks: duplicate task names in {tasks}")
        raw_stages = list(config_field(mixture_cfg, "stages") or [])
        if not raw_stages:
            raise ConfigError(f"{field}.stages: must hold at least one stage")
        stages = []
        for i, raw in enumerate(raw_stages):
            where = f"{field}.stages[{i}]"
            start = config_field(raw, "start")
            if not isinstance(start, (int, float)) or not 0.0 <= start < 1.0:
                raise ConfigError(f"{where}.start: must be a fraction in [0, 1), got {start!r}")
            if i == 0 and start != 0.0:
                raise ConfigError(f"{where}.start: the first stage must start at 0.0, got {start}")
            weights = dict(config_field(raw, "weights") or {})
            unknown = sorted(set(weights) - set(tasks))
            if unknown:
                raise ConfigError(f"{where}.weights: unknown tasks {unknown}; {field}.tasks is {tasks}")
            for task, w in weights.items():
                if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                    raise ConfigError(f"{where}.weights[{task!r}]: must be a finite number >= 0, got {w!r}")
            total = sum(weights.values())
            if abs(total - 1.0) > SUM_TOLERANCE:
                raise ConfigError(f"{where}.weights: must sum to 1, got {total:.6g}")
            start_step = int(round(start * total_steps))
            if stages and start_step <= stages[-1].start_step:
                raise ConfigError(
                    f"{where}.start: stages must start in increasing order of step; {start} gives step "
                    f"{start_step}, not after the previous stage's step {stages[-1].start_step} "
                    f"(total_steps={total_steps})"
                )
            interpolate = bool(config_field(raw, "interpolate", False))
            if interpolate and i == len(raw_stages) - 1:
                raise ConfigError(f"{where}.interpolate: the last stage has no next stage to move towards")
            full = {t: float(weights.get(t, 0.0)) for t in tasks}
            stages.append(Stage(config_field(raw, "name") or f"stage{i}", start_step, full, interpolate))
        return cls(tasks, stages, total_steps)

    def stage_index_at(self, step: int) -> int:
        if step < 0:
            raise ValueError(f"step: must be >= 0, got {step}")
        index = 0
        for i, stage in enumerate(self.stages):
            if stage.start_step <= step:
                index = i
        return index

    def stage_at(self, step: int) -> str:
        """Name of the stage in force at `step` (for logging)."""
        return self.stages[self.stage_index_at(step)].name

    def weights_at(self, step: int) -> dict[str, float]:
        """Scheduled weight of every task at `step`; steps past `total_steps` keep the last stage."""
        i = self.stage_index_at(step)
        stage = self.stages[i]
        if not stage.interpolate:
            return dict(stage.weights)
        nxt = self.stages[i + 1]
        alpha = (step - stage.start_step) / (nxt.start_step - stage.start_step)
        return {t: (1 - alpha) * stage.weights[t] + alpha * nxt.weights[t] for t in self.tasks}

    def weights_array(self, steps: np.ndarray) -> np.ndarray:
        """`weights_at` for many steps at once: [len(steps), tasks], the same floats, vectorised."""
        steps = np.asarray(steps, np.int64)
        if steps.size and steps.min() < 0:
            raise ValueError(f"step: must be >= 0, got {steps.min()}")
        starts = np.array([stage.start_step for stage in self.stages])
        index = np.searchsorted(starts, steps, side="right") - 1
        table = np.array([[stage.weights[t] for t in self.tasks] for stage in self.stages])
        out = table[index]
        for i, stage in enumerate(self.stages):
            mine = index == i
            if stage.interpolate and mine.any():
                nxt = self.stages[i + 1]
                alpha = ((steps[mine] - stage.start_step) / (nxt.start_step - stage.start_step))[:, None]
                out[mine] = (1 - alpha) * table[i] + alpha * table[i + 1]
        return out

    def table(self) -> list[dict[str, Any]]:
        """One row per stage: name, step span, weights, interpolation (for printing)."""
        rows = []
        for i, stage in enumerate(self.stages):
            end = self.stages[i + 1].start_step if i + 1 < len(self.stages) else self.total_steps
            rows.append(
                dict(
                    name=stage.name,
                    start_step=stage.start_step,
                    end_step=end,
                    weights=dict(stage.weights),
                    interpolate=stage.interpolate,
                )
            )
        return rows


def mixture_schedule(config: Any) -> Schedule | None:
    """A training config's mixture Schedule over `train.total_steps`, or None when
    `config.mixture` has no stages.

    Built even for synthetic data, so a synthetic run has the real run's learning-rate
    schedule (the WSD decay aligned with the annealing stage).
    """
    if not config.mixture.get("stages"):
        return None
    return Schedule.from_config(config.mixture, config.train.total_steps, "config.mixture")


def anneal_start(schedule: Schedule | None) -> int | None:
    """Step at which the mixture's last (annealing) stage begins, for the WSD decay."""
    if schedule is None or len(schedule.stages) < 2:
        return None
    return schedule.stages[-1].start_step
