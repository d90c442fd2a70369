"""Task metrics from per-item records, each with a seeded 95% bootstrap interval over items.

Every metric is a ratio of per-item sums, sum(numerator) / sum(denominator): a mean over
items has denominator 1; bits per byte (lm-eval's `bits_per_byte` aggregation) sums bits
and bytes. A bootstrap resample draws items with replacement and recomputes the ratio;
the interval is the 2.5th and 97.5th percentile. A paired comparison draws the same items
from both result sets and takes the difference each time, so item difficulty cancels.

Multiple choice (lm-eval's definitions, ties to the first choice as np.argmax):
- `acc`: the highest loglikelihood is the gold choice's;
- `acc_norm`: the highest loglikelihood per character of the choice text (lm-eval acc_norm);
- `prob_correct`: the gold choice's probability normalised over the choices (softmax);
- `logprob_per_char`: the gold choice's loglikelihood per character (DataDecide's CORRECT PROB, in log space).
Gold text: `bpb`, bits per UTF-8 byte of the gold continuation. Generated: `exact_match`
(the record's `passed`), `pass@k` (its `pass_at_k`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evals.tasks import GOLD_TEXT

RESAMPLES = 1000
LEVEL = 0.95

Record = dict[str, Any]


def _argmax(values: Sequence[float]) -> int:
    return int(np.argmax(np.asarray(values, np.float64)))


def acc(r: Record) -> tuple[float, float]:
    return float(_argmax(r["loglikelihoods"]) == r["gold"]), 1.0


def acc_norm(r: Record) -> tuple[float, float]:
    per_char = np.asarray(r["loglikelihoods"], np.float64) / np.maximum(np.asarray(r["characters"]), 1)
    return float(_argmax(per_char) == r["gold"]), 1.0


def prob_correct(r: Record) -> tuple[float, float]:
    lls = np.asarray(r["loglikelihoods"], np.float64)
    probs = np.exp(lls - lls.max())
    return float(probs[r["gold"]] / probs.sum()), 1.0


def logprob_per_char(r: Record) -> tuple[float, float]:
    return r["loglikelihoods"][r["gold"]] / max(r["characters"][r["gold"]], 1), 1.0


def bpb(r: Record) -> tuple[float, float]:
    return -r["loglikelihoods"][r["gold"]] / math.log(2), float(r["bytes"][r["gold"]])


def exact_match(r: Record) -> tuple[float, float]:
    passed = r["passed"]
    return float(np.mean(passed)) if isinstance(passed, list) else float(passed), 1.0


def pass_at(k: str) -> Callable[[Record], tuple[float, float]]:
    return lambda r: (float(r["pass_at_k"][k]), 1.0)


MULTIPLE_CHOICE_METRICS = {
    "acc": acc, "acc_norm": acc_norm, "prob_correct": prob_correct, "logprob_per_char": logprob_per_char
}  # fmt: skip
GOLD_TEXT_METRICS = {"bpb": bpb}
CHANCE = ("acc", "acc_norm", "prob_correct")  # metrics whose chance level is 1 / choices
LOWER_IS_BETTER = ("bpb",)


def metrics_for(records: Sequence[Record]) -> dict[str, Callable[[Record], tuple[float, float]]]:
    """The metrics that apply to a task's records (by what the first record holds)."""
    first = records[0]
    if "pass_at_k" in first:
        return {f"pass@{k}": pass_at(k) for k in sorted(first["pass_at_k"], key=int)}
    if "passed" in first:
        return {"exact_match": exact_match}
    if first.get("kind") == GOLD_TEXT:
        return dict(GOLD_TEXT_METRICS)
    return dict(MULTIPLE_CHOICE_METRICS)


def _ratios(
    num: np.ndarray, den: np.ndarray, seed: int, paired: tuple[np.ndarray, np.ndarray] | None
) -> np.ndarray:
    """RESAMPLES bootstrap values of sum(num)/sum(den) (minus the paired set's), in chunks."""
    rng = np.random.default_rng(seed)
    n, out = len(num), []
    for start in range(0, RESAMPLES, 100):
        idx = rng.integers(0, n, size=(min(100, RESAMPLES - start), n))
        values = num[idx].sum(1) / den[idx].sum(1)
        if paired is not None:
            values = values - paired[0][idx].sum(1) / paired[1][idx].sum(1)
        out.append(values)
    return np.concatenate(out)


def _interval(values: np.ndarray) -> list[float]:
    tail = (1 - LEVEL) / 2 * 100
    return [float(v) for v in np.percentile(values, [tail, 100 - tail])]


@dataclasses.dataclass(frozen=True)
class Estimate:
    value: float
    interval: list[float]  # 95% bootstrap interval
    chance: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "ci95": self.interval}
        if self.chance is not None:
            out["chance"] = self.chance
            out["differs_from_chance"] = not self.interval[0] <= self.chance <= self.interval[1]
        return out


def _pairs(
    records: Sequence[Record], metric: Callable[[Record], tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.asarray([metric(r) for r in records], np.float64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def summarize(records: Sequence[Record], seed: int = 0) -> dict[str, Estimate]:
    """{metric: Estimate} over one task's records (none: {})."""
    if not records:
        return {}
    out = {}
    for name, metric in metrics_for(records).items():
        num, den = _pairs(records, metric)
        chance = None
        if name in CHANCE:
            chance = float(np.mean([1 / len(r["loglikelihoods"]) for r in records]))
        out[name] = Estimate(float(num.sum() / den.sum()), _interval(_ratios(num, den, seed, None)), chance)
    return out


def item_key(r: Record) -> tuple[str, str, int]:
    return r["task"], r.get("source", ""), int(r["doc_id"])


def compare(a: Sequence[Record], b: Sequence[Record], seed: int = 0) -> dict[str, dict[str, Any]]:
    """Paired comparison of two result sets of one task on the items both hold:
    {metric: {a, b, difference (a - b), ci95, items, no_difference}}."""
    by_key = {item_key(r): r for r in b}
    shared = [(r, by_key[item_key(r)]) for r in a if item_key(r) in by_key]
    if not shared:
        return {}
    left, right = [x for x, _ in shared], [y for _, y in shared]
    out = {}
    for name, metric in metrics_for(left).items():
        num_a, den_a = _pairs(left, metric)
        num_b, den_b = _pairs(right, metric)
        value_a, value_b = num_a.sum() / den_a.sum(), num_b.sum() / den_b.sum()
        low, high = _interval(_ratios(num_a, den_a, seed, (num_b, den_b)))
        out[name] = {
            "a": float(value_a),
            "b": float(value_b),
            "difference": float(value_a - value_b),
            "ci95": [low, high],
            "items": len(shared),
            "no_difference": low <= 0 <= high,
        }
    return out
