"""Noise measured, not assumed: signal-to-noise ratio, minimum detectable difference, verdicts.

A study compares arms (annealing mixtures) trained on several seeds. Before a difference
between two arms means anything, the study must know how much a metric moves when only the
seed changes. This module is the statistics every study's report uses; it knows nothing of
training.

- Signal-to-noise ratio, after "Signal and Noise" (Heineman et al. 2025, arXiv 2508.13144,
  whose reference code computes signal = max_{j,k} |m_j - m_k| / mean(m) over the models'
  scores, and noise = std(m) / mean(m) over a run's final checkpoints). Here the models are
  the arms (m_j: arm j's mean over seeds) and the noise is the seed spread instead of the
  checkpoint-to-checkpoint spread:

      signal = (max_j m_j - min_j m_j) / mean_j m_j
      noise  = s / mean_j m_j,   s = sqrt(mean_j var_j),  var_j: arm j's sample variance over seeds
      SNR    = signal / noise = (max_j m_j - min_j m_j) / s

  so SNR 1 means the best and worst arms are one seed standard deviation apart.
- Minimum detectable difference at the seeds used (two arms, n seeds each, two-sided test
  at level alpha = 1 - confidence with power 1 - beta, normal approximation):

      MDD = (z_{1 - alpha/2} + z_{1 - beta}) * s * sqrt(2 / n)

  (2.80 s sqrt(2/n) at 95% and 80% power): a true difference smaller than this is missed
  more often than not, so arms closer than the MDD cannot be ranked with these seeds.
- Paired comparisons: the difference of two arms on an objective (a weighted sum of
  metrics, each a ratio of per-item sums: a mean, a token-pooled loss, bits per byte), mean
  over seeds, with a percentile bootstrap interval that resamples seeds and items (the same
  draw for both arms: they share the prefix per seed and the items).
- Verdicts: one seed gives "one seed: no verdict" (there is no seed spread to judge by); an
  interval spanning zero gives "no difference"; else "lower" or "higher".
- Controls: the null control (the same mixture on another data-order seed) must come out
  "no difference", the positive control (an effect known in direction) must come out in
  that direction; when either fails, every verdict of the study is untrustworthy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import norm

ONE_SEED = "one seed: no verdict"
NO_DIFFERENCE = "no difference"
LOWER, HIGHER = "lower", "higher"


def pooled_seed_std(values: Mapping[str, Sequence[float]]) -> float:
    """s = sqrt(mean over arms of each arm's sample variance over seeds); nan without an arm of
    two seeds."""
    variances = [np.var(v, ddof=1) for v in values.values() if len(v) >= 2]
    return float(np.sqrt(np.mean(variances))) if variances else float("nan")


def signal_to_noise(values: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """{signal, noise, snr, seed_std, spread} of one metric from {arm: [value per seed]}."""
    means = np.array([np.mean(v) for v in values.values()], np.float64)
    scale = abs(float(means.mean())) or 1.0  # relative measures; an all-zero metric keeps them absolute
    spread = float(means.max() - means.min())
    s = pooled_seed_std(values)
    with np.errstate(divide="ignore", invalid="ignore"):  # s = 0: inf (or nan when spread is 0 too)
        snr = float(np.float64(spread) / s)
    return {
        "signal": spread / scale,
        "noise": s / scale,
        "snr": snr,
        "seed_std": s,
        "spread": spread,
    }


def min_detectable_difference(
    seed_std: float, seeds: int, confidence: float = 0.95, power: float = 0.8
) -> float:
    """(z_{1-alpha/2} + z_{power}) * s * sqrt(2 / n); inf with one seed (no spread to judge by)."""
    if seeds < 2 or not np.isfinite(seed_std):
        return float("inf")
    z = norm.ppf(1 - (1 - confidence) / 2) + norm.ppf(power)
    return float(z * seed_std * np.sqrt(2.0 / seeds))


def noise_table(
    values: Mapping[str, Mapping[str, Sequence[float]]], confidence: float = 0.95, power: float = 0.8
) -> dict[str, dict[str, float]]:
    """{metric: signal_to_noise + {seeds, mdd}} from {metric: {arm: [value per seed]}}."""
    out = {}
    for metric, arms in values.items():
        seeds = min(len(v) for v in arms.values())
        row = signal_to_noise(arms)
        row.update(seeds=seeds, mdd=min_detectable_difference(row["seed_std"], seeds, confidence, power))
        out[metric] = row
    return out


Items = Mapping[str, Mapping[str, np.ndarray]]  # {set: {"num": per-item numerators, "den": denominators}}


def pooled(items: Items, members: Sequence[str], index: Mapping[str, np.ndarray] | None = None) -> float:
    """sum(num) / sum(den) over the items of `members` (sets): a mean (den 1), a token-pooled
    loss (num: loss sums, den: tokens) or bits per byte; `index[set]` picks (resampled) items."""
    num = den = 0.0
    for s in members:
        n, d = items[s]["num"], items[s]["den"]
        if index is not None:
            n, d = n[index[s]], d[index[s]]
        num += float(n.sum())
        den += float(d.sum())
    return num / den if den else float("nan")


def objective_of(
    items: Items,
    objective: Mapping[str, float],
    groups: Mapping[str, Sequence[str]],
    index: Mapping[str, np.ndarray] | None = None,
) -> float:
    """sum of coef x metric; a metric is a group of sets (pooled) or one set."""
    return sum(coef * pooled(items, groups.get(m, [m]), index) for m, coef in objective.items())


def paired_difference(
    a: Sequence[Items],
    b: Sequence[Items],
    objective: Mapping[str, float],
    groups: Mapping[str, Sequence[str]] | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """objective(a) - objective(b), mean over seeds, with a percentile bootstrap interval.

    `a[i]`, `b[i]`: seed i's per-item values of the two arms, the same items in the same
    order (paired). Every resample draws seeds, then every set's items, once for both arms.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference: both arms need the same seeds, got {len(a)} and {len(b)}")
    groups = groups or {}
    rng = np.random.default_rng(seed)
    sets = sorted({s for m in objective for s in groups.get(m, [m])})
    sizes = {s: len(a[0][s]["num"]) for s in sets}
    per_seed = [objective_of(x, objective, groups) - objective_of(y, objective, groups) for x, y in zip(a, b)]
    draws = np.empty(resamples)
    for r in range(resamples):
        index = {s: rng.integers(0, n, n) for s, n in sizes.items()}
        seeds = rng.integers(0, len(a), len(a))
        draws[r] = np.mean(
            [
                objective_of(a[i], objective, groups, index) - objective_of(b[i], objective, groups, index)
                for i in seeds
            ]
        )
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return {
        "difference": float(np.mean(per_seed)),
        "low": float(low),
        "high": float(high),
        "confidence": confidence,
        "seeds": len(a),
        "seed_spread": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
        "resamples": resamples,
    }


def as_items(values: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """{set: per-item values} as Items of means (den 1)."""
    return {s: {"num": np.asarray(v, np.float64), "den": np.ones(len(v))} for s, v in values.items()}


def verdict(interval: Mapping[str, Any]) -> str:
    """ "one seed: no verdict", "no difference" (the interval spans 0), "lower" or "higher"."""
    if interval["seeds"] < 2:
        return ONE_SEED
    if interval["low"] <= 0 <= interval["high"]:
        return NO_DIFFERENCE
    return LOWER if interval["high"] < 0 else HIGHER


def control(kind: str, interval: Mapping[str, Any], expected: str) -> dict[str, Any]:
    """A control's outcome: `kind` "null" expects "no difference", "positive" the `expected`
    direction ("lower" or "higher"); with one seed a control cannot pass."""
    got = verdict(interval)
    want = NO_DIFFERENCE if kind == "null" else expected
    return {"kind": kind, "expected": want, "verdict": got, "passed": got == want, **dict(interval)}


def trustworthy(controls: Mapping[str, Mapping[str, Any]]) -> bool:
    """Verdicts count only when the study ran both controls and both passed."""
    kinds = {c["kind"] for c in controls.values()}
    return {"null", "positive"} <= kinds and all(c["passed"] for c in controls.values())


def below_floor(table: Mapping[str, Mapping[str, float]], metrics: Sequence[str], floor: float) -> list[str]:
    """The metrics whose SNR is below `floor` (or unmeasured: one seed): not fit to decide on."""
    return [m for m in metrics if not table[m]["snr"] >= floor]
