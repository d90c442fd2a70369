"""studies.mixture_fit: sampling within bounds, fits recover planted relations, proposals find optima."""

from __future__ import annotations

import numpy as np
import pytest

from studies import mixture_fit as mf

TASKS = 4


def test_samples_are_seeded_within_bounds_and_around_the_centre():
    center = np.array([0.6, 0.25, 0.15, 0.0])
    alpha = mf.dirichlet_alpha(center, concentration=20.0, uniform_share=0.2)
    lower, upper = np.array([0.1, 0.0, 0.0, 0.0]), np.array([0.8, 1.0, 1.0, 0.3])
    w = mf.sample_weights(alpha, 200, seed=3, lower=lower, upper=upper)
    assert w.shape == (200, TASKS)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-9)
    assert np.all(w >= lower - 1e-9) and np.all(w <= upper + 1e-9)
    assert np.all(w[:, 3] > 0)  # the uniform share explores a task the centre leaves out
    np.testing.assert_allclose(w.mean(0), (0.8 * center + 0.05), atol=0.05)
    np.testing.assert_array_equal(w, mf.sample_weights(alpha, 200, seed=3, lower=lower, upper=upper))
    assert not np.array_equal(w, mf.sample_weights(alpha, 200, seed=4, lower=lower, upper=upper))


def test_impossible_bounds_fail_naming_the_field():
    with pytest.raises(ValueError, match="config.search.bounds"):
        mf.sample_weights(np.ones(3), 5, 0, lower=np.array([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="config.search.bounds"):
        mf.sample_weights(np.full(3, 50.0), 5, 0, lower=np.array([0.0, 0.0, 0.97]), max_tries=3)


def planted(w: np.ndarray) -> np.ndarray:
    """A Data-Mixing-Laws relation: loss falls exponentially with tasks 0 and 2."""
    return 2.0 + 1.5 * np.exp(-2.0 * w[:, 0] - 0.5 * w[:, 2] + 0.3 * w[:, 3])


def test_fit_recovers_a_planted_weight_to_loss_relation():
    x = mf.sample_weights(np.ones(TASKS), 30, seed=0)
    rng = np.random.default_rng(1)
    y = planted(x) + rng.normal(0, 0.003, len(x))
    fit = mf.fit("m", x, y)
    assert set(fit.cv) == {"gbt", "dml", "linear"}
    assert fit.kind == "dml"  # the planted form wins the cross-validation
    assert fit.cv["dml"]["spearman"] > 0.95
    held = mf.sample_weights(np.ones(TASKS), 50, seed=9)
    assert mf.spearman(fit.predict(held), planted(held)) > 0.95
    np.testing.assert_allclose(fit.predict(held), planted(held), atol=0.02)


def test_trees_win_a_relation_no_smooth_form_has():
    x = mf.sample_weights(np.ones(TASKS), 60, seed=0)
    y = np.where(x[:, 1] > 0.3, 3.0, 2.0) + 0.2 * (x[:, 0] > 0.5)
    fit = mf.fit("m", x, y)
    assert fit.kind == "gbt" and fit.cv["gbt"]["spearman"] > 0.8


def test_proposal_finds_a_synthetic_optimum_and_respects_the_constraint():
    target = np.array([0.1, 0.5, 0.3, 0.1])
    x = mf.sample_weights(np.ones(TASKS), 40, seed=0)

    class Exact:
        def __init__(self, f):
            self.f = f

        def predict(self, w):
            return self.f(np.atleast_2d(w))

    fits = {
        "obj": mf.Fit("obj", "exact", Exact(lambda w: ((w - target) ** 2).sum(1)), {}),
        "web": mf.Fit("web", "exact", Exact(lambda w: 3.0 - w[:, 0]), {}),
    }
    lower, upper = np.zeros(TASKS), np.ones(TASKS)
    free = mf.propose(fits, {"obj": 1.0}, [], x[0], lower, upper, seed=0)
    np.testing.assert_allclose(free["weights"], target, atol=0.02)
    # web must stay within 1% of the reference (w0 = 0.6): w0 >= 0.6 - 0.01 * 2.4 = 0.576.
    reference = np.array([0.6, 0.2, 0.1, 0.1])
    bound = mf.propose(fits, {"obj": 1.0}, [mf.Constraint("web", 0.01)], reference, lower, upper, seed=0)
    assert bound["feasible"]
    assert bound["predicted"]["web"] <= bound["limits"]["web"] + 1e-3
    assert bound["weights"][0] == pytest.approx(0.576, abs=0.01)
    # per-task bounds hold too
    capped = mf.propose(fits, {"obj": 1.0}, [], x[0], lower, np.array([1.0, 0.3, 1.0, 1.0]), seed=0)
    assert capped["weights"][1] <= 0.3 + 1e-3
