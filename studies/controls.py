"""Controls in every study, as decontamination has them: arms whose outcome is known.

- The null control: the reference arm's mixture on another data-order seed (`data_seed`, an
  offset added to the run's seed: other rows after the branch point, nothing else changed).
  Judged against the reference on every metric the study decides on, it must come out "no
  difference"; a "lower" or "higher" means the intervals are narrower than the noise, and
  every verdict of the study is too.
- The positive control: an arm whose effect is known in direction (Llama 3's annealing
  ablations: annealing on more math data lowers the loss on math), declared with the metric
  and the direction; it must come out that way beyond its interval, or the study cannot see
  an effect of that size.

An arm is a control when it carries `control`: `{"kind": "null"}` or `{"kind": "positive",
"metric": M, "expected": "lower" | "higher"}`. Controls are arms like the others (trained,
scored, in the tables), but never fitted, proposed or judged as contenders. `judge` needs a
paired interval per (arm, baseline, objective), which each study computes from its
per-item scores (`studies.noise.paired_difference`); a study without both kinds of control
is untrustworthy by construction (`noise.trustworthy`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from common import checks
from studies import noise

KINDS = ("null", "positive")
Interval = Callable[[str, str, Mapping[str, float]], Mapping[str, Any]]  # (arm, baseline, objective)


def is_control(arm: Mapping[str, Any]) -> bool:
    return bool(arm.get("control"))


def validate(config: ml_collections.ConfigDict) -> None:
    """The `control` and `data_seed` fields of `config.arms` (the first arm is the reference)."""
    reference = config.arms[0]
    checks.require(not is_control(reference), "arms[0]", "the reference arm cannot be a control")
    for i, arm in enumerate(config.arms):
        checks.require(
            isinstance(arm.get("data_seed", 0), int),
            f"arms[{i}].data_seed",
            "must be an int",
            arm.get("data_seed"),
        )
        if not is_control(arm):
            continue
        spec = dict(arm["control"])
        checks.one_of(spec.get("kind"), KINDS, f"arms[{i}].control.kind")
        if spec["kind"] == "null":
            checks.require(
                arm.get("weights") == reference.get("weights")
                and not arm.get("optim")
                and not arm.get("packed_dir"),
                f"arms[{i}].weights",
                f"a null control repeats the reference arm {reference['name']!r} (its weights, no optim, no packed_dir)",
                arm.get("weights"),
            )
            checks.require(
                arm.get("data_seed", 0) != 0,
                f"arms[{i}].data_seed",
                "a null control needs another data-order seed",
            )
        else:
            checks.require(
                bool(spec.get("metric")), f"arms[{i}].control.metric", "must name the metric it moves"
            )
            checks.one_of(spec.get("expected"), (noise.LOWER, noise.HIGHER), f"arms[{i}].control.expected")


def judge(
    config: ml_collections.ConfigDict, decided_on: Sequence[str], interval: Interval
) -> dict[str, dict[str, Any]]:
    """{control arm (per metric for the null control): noise.control outcome} against the reference.

    The null control is judged on each metric in `decided_on` (what the study's verdicts use),
    the positive control on its own metric.
    """
    reference = config.arms[0]["name"]
    out = {}
    for arm in config.arms:
        if not is_control(arm):
            continue
        spec = dict(arm["control"])
        if spec["kind"] == "null":
            for metric in decided_on:
                ci = interval(arm["name"], reference, {metric: 1.0})
                out[f"{arm['name']} ({metric})"] = {
                    "arm": arm["name"],
                    "metric": metric,
                    **noise.control("null", ci, ""),
                }
        else:
            ci = interval(arm["name"], reference, {spec["metric"]: 1.0})
            out[arm["name"]] = {
                "arm": arm["name"],
                "metric": spec["metric"],
                **noise.control("positive", ci, spec["expected"]),
            }
    return out


def markdown(outcomes: Mapping[str, Mapping[str, Any]], reference: str) -> list[str]:
    """The controls' lines of a report, and whether the study's verdicts can be trusted."""
    lines = [f"Controls (each against `{reference}`, paired interval over seeds and items):", ""]
    if not outcomes:
        lines.append("- none declared")
    for label, c in outcomes.items():
        lines.append(
            f"- {c['kind']} control `{label}`: expected {c['expected']}, got {c['verdict']} "
            f"({c['difference']:+.4f}, interval [{c['low']:+.4f}, {c['high']:+.4f}], {c['seeds']} seeds): "
            + ("passed" if c["passed"] else "FAILED")
        )
    missing = [k for k in KINDS if k not in {c["kind"] for c in outcomes.values()}]
    failed = [label for label, c in outcomes.items() if not c["passed"]]
    lines.append("")
    lines.append(
        "The verdicts below can be trusted: both controls passed."
        if noise.trustworthy(outcomes)
        else "**The verdicts below are UNTRUSTWORTHY**: "
        + "; ".join([f"no {k} control" for k in missing] + [f"control {label} failed" for label in failed])
        + ". They are printed for the record only."
    )
    return lines
