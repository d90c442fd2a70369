"""The pure parts of the mixture search: sampling weights, fitting loss(weights), proposing, bootstrap.

- `sample_weights`: annealing-stage weight vectors from a Dirichlet around a centre mixture
  (the general mixture blended with uniform, so every task is explored), kept inside
  per-task bounds by rejection; seeded, so a search's arms are reproducible.
- `fit`: per metric, the candidate regressions from weights to loss are cross-validated
  (k-fold, leave-one-out for few arms) and the one whose out-of-fold predictions rank the
  arms best (Spearman) is kept: RegMix's gradient-boosted trees (`gbt`), Data Mixing Laws'
  `loss = c + k * exp(t . w)` (`dml`), and a linear model (`linear`, the baseline both beat
  only with enough arms).
- `propose`: the weight vector minimising the objective (a weighted sum of predicted
  metrics) on the simplex within the bounds, subject to constraints `pred(m, w) <=
  pred(m, reference) * (1 + tolerance) - margin` (for a metric where higher is better, such
  as an accuracy: `pred(m, w) >= pred(m, reference) * (1 - tolerance) + margin`; relative to the model's own prediction for
  the reference arm, so a shared bias of the model cancels; the margin, e.g. the model's
  cross-validated RMSE, keeps the proposal off the constraint's edge, where the model's error
  would decide); random search then local refinement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common import checks

# ----------------------------------------------------------------------------- sampling


def dirichlet_alpha(center: np.ndarray, concentration: float, uniform_share: float) -> np.ndarray:
    """Dirichlet parameters whose mean is `center` blended with uniform by `uniform_share`."""
    center = np.asarray(center, np.float64)
    center = center / center.sum()
    mean = (1.0 - uniform_share) * center + uniform_share / center.size
    return concentration * mean


def check_bounds(lower: np.ndarray, upper: np.ndarray) -> None:
    checks.require(bool(np.all(lower <= upper)), "search.bounds", "lower above upper", (lower, upper))
    checks.require(
        lower.sum() <= 1.0 + 1e-9 and upper.sum() >= 1.0 - 1e-9,
        "search.bounds",
        "no weight vector fits: the lower bounds must sum to <= 1 and the upper ones to >= 1",
        (lower.tolist(), upper.tolist()),
    )


def sample_weights(
    alpha: np.ndarray,
    n: int,
    seed: int,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    max_tries: int = 1000,
) -> np.ndarray:
    """(n, tasks) weight vectors from Dirichlet(alpha) inside [lower, upper] (rejection)."""
    alpha = np.asarray(alpha, np.float64)
    lower = np.zeros_like(alpha) if lower is None else np.asarray(lower, np.float64)
    upper = np.ones_like(alpha) if upper is None else np.asarray(upper, np.float64)
    check_bounds(lower, upper)
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for _ in range(max_tries):
        draw = rng.dirichlet(alpha, size=max(4 * n, 64))
        ok = np.all((draw >= lower - 1e-12) & (draw <= upper + 1e-12), axis=1)
        out.extend(draw[ok])
        if len(out) >= n:
            w = np.stack(out[:n])
            return w / w.sum(1, keepdims=True)
    raise checks.ConfigError(
        "config.search.bounds: under 1 in "
        f"{max_tries * max(4 * n, 64) // max(len(out), 1)} Dirichlet draws fits the bounds; widen them "
        "or move search.center inside them"
    )


# ----------------------------------------------------------------------------- models


class Linear:
    name = "linear"

    def fit(self, x: np.ndarray, y: np.ndarray) -> Linear:
        from sklearn.linear_model import Ridge

        self.model = Ridge(alpha=1e-3).fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(np.atleast_2d(x))


class GradientBoosting:
    """RegMix's regressor: gradient-boosted trees on the weight vector."""

    name = "gbt"

    def fit(self, x: np.ndarray, y: np.ndarray) -> GradientBoosting:
        from sklearn.ensemble import GradientBoostingRegressor

        self.model = GradientBoostingRegressor(
            n_estimators=300,
            max_depth=2,
            learning_rate=0.05,
            subsample=0.8,
            min_samples_leaf=2,
            random_state=0,
        ).fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(np.atleast_2d(x))


class MixingLaw:
    """Data Mixing Laws (Ye et al. 2024): loss = c + k * exp(t . w), least squares."""

    name = "dml"

    def fit(self, x: np.ndarray, y: np.ndarray) -> MixingLaw:
        from scipy.optimize import least_squares

        scale = float(np.std(y)) or 1.0
        best = None
        for sign in (1.0, -1.0):
            start = np.concatenate([[y.min() - scale * (sign > 0)], [scale], np.zeros(x.shape[1])])
            start[1] = scale if sign > 0 else -scale
            res = least_squares(
                lambda p: self._f(p, x) - y, start, jac=lambda p: self._jac(p, x), method="trf", max_nfev=300
            )
            if best is None or res.cost < best.cost:
                best = res
        self.params = best.x
        return self

    @staticmethod
    def _f(p: np.ndarray, x: np.ndarray) -> np.ndarray:
        return p[0] + p[1] * np.exp(np.clip(np.atleast_2d(x) @ p[2:], -30, 30))

    @staticmethod
    def _jac(p: np.ndarray, x: np.ndarray) -> np.ndarray:
        e = np.exp(np.clip(x @ p[2:], -30, 30))
        return np.column_stack([np.ones(len(x)), e, p[1] * e[:, None] * x])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._f(self.params, x)


MODELS: dict[str, Callable[[], Any]] = {"gbt": GradientBoosting, "dml": MixingLaw, "linear": Linear}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def cross_val_predictions(kind: str, x: np.ndarray, y: np.ndarray, folds: int) -> np.ndarray:
    """Out-of-fold predictions (leave-one-out when folds >= len(y))."""
    n = len(y)
    folds = min(folds, n)
    order = np.arange(n)
    out = np.zeros(n)
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        out[test] = MODELS[kind]().fit(x[train], y[train]).predict(x[test])
    return out


@dataclasses.dataclass
class Fit:
    metric: str
    kind: str
    model: Any
    cv: dict[str, dict[str, float]]  # kind -> {spearman, rmse} of out-of-fold predictions

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(np.atleast_2d(x))


def fit(
    metric: str,
    x: np.ndarray,
    y: np.ndarray,
    kinds: Sequence[str] = ("gbt", "dml", "linear"),
    folds: int = 10,
) -> Fit:
    """The candidate with the best cross-validated Spearman (ties: lower RMSE), refit on all arms."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cv = {}
    for kind in kinds:
        pred = cross_val_predictions(kind, x, y, folds)
        rho = spearman(pred, y)
        cv[kind] = {
            "spearman": rho if np.isfinite(rho) else -1.0,
            "rmse": float(np.sqrt(np.mean((pred - y) ** 2))),
        }
    kind = max(kinds, key=lambda k: (round(cv[k]["spearman"], 6), -cv[k]["rmse"]))
    return Fit(metric, kind, MODELS[kind]().fit(x, y), cv)


# ----------------------------------------------------------------------------- proposal


BETTER = ("lower", "higher")  # a constraint's direction: losses are lower-better, accuracies higher-better


@dataclasses.dataclass(frozen=True)
class Constraint:
    metric: str
    tolerance: float  # relative: pred(w) <= pred(reference) * (1 + tolerance) - margin
    margin: float = 0.0  # absolute: e.g. the model's cross-validated RMSE, to stay clear of the edge
    better: str = "lower"  # "higher": pred(w) >= pred(reference) * (1 - tolerance) + margin

    def limit(self, reference: float) -> float:
        """The worst value the constraint admits, given the reference's."""
        if self.better == "higher":
            return reference * (1 - self.tolerance) + self.margin
        return reference * (1 + self.tolerance) - self.margin

    def met(self, value: Any, limit: float) -> Any:
        """Whether `value` (a number or an array) is on the good side of `limit`."""
        return value >= limit if self.better == "higher" else value <= limit


def objective_values(fits: dict[str, Fit], objective: dict[str, float], x: np.ndarray) -> np.ndarray:
    return sum(coef * fits[m].predict(x) for m, coef in objective.items())


def propose(
    fits: dict[str, Fit],
    objective: dict[str, float],
    constraints: Sequence[Constraint],
    reference: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    seed: int = 0,
    candidates: int = 20000,
    rounds: int = 4,
    starts: Sequence[np.ndarray] = (),
    min_weight: float = 0.005,
) -> dict[str, Any]:
    """The feasible weight vector with the lowest predicted objective, and what the models say of it."""
    check_bounds(lower, upper)
    rng = np.random.default_rng(seed)
    t = len(lower)
    limits = {c.metric: c.limit(float(fits[c.metric].predict(reference)[0])) for c in constraints}

    def inside(x: np.ndarray) -> np.ndarray:
        return np.all((x >= lower - 1e-9) & (x <= upper + 1e-9), axis=1)

    def feasible(x: np.ndarray) -> np.ndarray:
        ok = inside(x)
        for c in constraints:
            ok &= c.met(fits[c.metric].predict(x), limits[c.metric])
        return ok

    pool = [rng.dirichlet(np.ones(t), candidates), rng.dirichlet(np.full(t, 0.3), candidates)]
    pool += [np.atleast_2d(reference), *[np.atleast_2d(s) for s in starts]]
    x = np.concatenate(pool)
    best, best_value = None, np.inf
    for r in range(rounds + 1):
        x = x[feasible(x)]
        if len(x):
            values = objective_values(fits, objective, x)
            i = int(np.argmin(values))
            if values[i] < best_value:
                best, best_value = x[i], float(values[i])
        if best is None or r == rounds:
            break
        concentration = 50.0 * 4**r  # tighter around the incumbent every round
        x = rng.dirichlet(np.maximum(best, 1e-4) * concentration + 1e-3, candidates // 4)
    if best is None:
        return {"feasible": False, "weights": None, "objective": None, "predicted": {}, "limits": limits}
    best = np.where((best < min_weight) & (lower <= 0), 0.0, best)  # no 0.01% slots
    best = np.round(best / best.sum(), 4)
    best = best / best.sum()
    return {
        "feasible": True,
        "weights": best,
        "objective": float(objective_values(fits, objective, best)[0]),
        "predicted": {m: float(f.predict(best)[0]) for m, f in fits.items()},
        "limits": limits,
    }
