"""Signal-to-noise, minimum detectable difference, paired intervals and verdicts on numbers
whose answer is known."""

import numpy as np
import pytest

from studies import noise


def test_snr_is_the_arm_range_over_the_pooled_seed_std():
    row = noise.signal_to_noise({"a": [1.0, 1.2], "b": [2.0, 2.2], "c": [1.5, 1.7]})
    s = np.sqrt(0.02)  # every arm's sample variance is 0.02
    assert row["seed_std"] == pytest.approx(s)
    assert row["spread"] == pytest.approx(1.0)
    assert row["snr"] == pytest.approx(1.0 / s)
    assert row["signal"] == pytest.approx(1.0 / 1.6) and row["noise"] == pytest.approx(s / 1.6)
    one_seed = noise.signal_to_noise({"a": [1.0], "b": [2.0]})
    assert np.isnan(one_seed["seed_std"]) and np.isnan(one_seed["snr"])


def test_min_detectable_difference_formula_and_its_power():
    assert noise.min_detectable_difference(1.0, 2) == pytest.approx(1.959964 + 0.841621, rel=1e-5)
    assert noise.min_detectable_difference(0.5, 8) == pytest.approx(2.801585 * 0.5 * 0.5, rel=1e-5)
    assert noise.min_detectable_difference(1.0, 1) == float("inf")
    # A true difference of one MDD is detected by the two-sided z test in ~80% of experiments.
    rng = np.random.default_rng(0)
    sigma, n = 0.3, 4
    mdd = noise.min_detectable_difference(sigma, n)
    a = rng.normal(mdd, sigma, (20000, n)).mean(1)
    b = rng.normal(0.0, sigma, (20000, n)).mean(1)
    power = np.mean(np.abs(a - b) > 1.959964 * sigma * np.sqrt(2 / n))
    assert 0.78 < power < 0.82


def test_noise_table_counts_seeds_and_gives_mdd():
    table = noise.noise_table({"loss": {"a": [1.0, 1.2], "b": [2.0, 2.2]}, "acc": {"a": [0.5], "b": [0.6]}})
    assert table["loss"]["seeds"] == 2 and np.isfinite(table["loss"]["mdd"])
    assert table["acc"]["seeds"] == 1 and table["acc"]["mdd"] == float("inf")
    assert noise.below_floor(table, ["loss", "acc"], floor=2.0) == ["acc"]
    assert noise.below_floor(table, ["loss"], floor=10.0) == ["loss"]


def _paired(a, b):
    items = lambda arm: [noise.as_items({"s": x}) for x in arm]
    return noise.paired_difference(items(a), items(b), {"s": 1.0}, resamples=300)


def test_paired_interval_sees_a_small_shift_under_large_shared_item_noise():
    rng = np.random.default_rng(1)
    items = [rng.normal(0, 1.0, 300) for _ in range(3)]  # item difficulty: shared by both arms
    a = [x + 0.02 + rng.normal(0, 0.01, 300) for x in items]
    b = [x + rng.normal(0, 0.01, 300) for x in items]
    ci = _paired(a, b)
    assert ci["low"] > 0 and ci["difference"] == pytest.approx(0.02, abs=0.005)
    assert noise.verdict(ci) == noise.HIGHER
    assert noise.verdict(_paired(b, a)) == noise.LOWER


def test_same_distribution_is_no_difference_and_one_seed_no_verdict():
    rng = np.random.default_rng(2)
    a = [rng.normal(0, 1, 200) for _ in range(3)]
    b = [rng.normal(0, 1, 200) for _ in range(3)]
    assert noise.verdict(_paired(a, b)) == noise.NO_DIFFERENCE
    shifted = [x - 1.0 for x in a[:1]]
    one = _paired(shifted, a[:1])
    assert one["high"] < 0, "an interval over items alone excludes 0 ..."
    assert noise.verdict(one) == noise.ONE_SEED, "... but one seed has no seed spread: no verdict"
    with pytest.raises(ValueError, match="same seeds"):
        _paired(a, b[:2])


def test_controls_make_verdicts_trustworthy_only_when_both_pass():
    same = {"difference": 0.0, "low": -0.1, "high": 0.1, "seeds": 2}
    down = {"difference": -0.3, "low": -0.4, "high": -0.2, "seeds": 2}
    null_ok = noise.control("null", same, "")
    positive_ok = noise.control("positive", down, noise.LOWER)
    assert null_ok["passed"] and positive_ok["passed"]
    assert noise.trustworthy({"null": null_ok, "positive": positive_ok})
    assert not noise.control("null", down, "")["passed"]
    assert not noise.control("positive", same, noise.LOWER)["passed"]
    assert not noise.control("positive", {**down, "seeds": 1}, noise.LOWER)["passed"]
    assert not noise.trustworthy({"null": null_ok, "positive": noise.control("positive", same, noise.LOWER)})
    assert not noise.trustworthy({"null": null_ok}), "a study without a positive control proves nothing"


def test_ratio_metrics_pool_items_and_groups_pool_sets():
    items = {
        "x": {"num": np.array([2.0, 4.0]), "den": np.array([1.0, 3.0])},
        "y": {"num": np.array([6.0]), "den": np.array([2.0])},
    }
    assert noise.pooled(items, ["x"]) == pytest.approx(6 / 4)
    assert noise.pooled(items, ["x", "y"]) == pytest.approx(12 / 6)
    assert noise.objective_of(items, {"both": 1.0, "y": -2.0}, {"both": ["x", "y"]}) == pytest.approx(2 - 6)
    ci = noise.paired_difference([items, items], [items, items], {"both": 1.0}, {"both": ["x", "y"]}, 50)
    assert ci["difference"] == ci["low"] == ci["high"] == 0.0 and ci["seeds"] == 2


def test_bootstrap_interval_covers_the_difference_and_narrows_with_items():
    def arms(n: int, seeds: int, rng) -> tuple[list, list]:
        """a is b lowered by 0.1 nats per token, plus noise per item; same items for both."""
        a, b = [], []
        for _ in range(seeds):
            tokens = rng.integers(20, 60, n).astype(float)
            base = 3.0 + rng.normal(0, 0.5, n)
            b.append({"p": {"num": base * tokens, "den": tokens}})
            a.append({"p": {"num": (base - 0.1 + rng.normal(0, 0.3, n)) * tokens, "den": tokens}})
        return a, b

    widths = []
    for n in (40, 400):
        a, b = arms(n, 3, np.random.default_rng(n))
        ci = noise.paired_difference(a, b, {"m": 1.0}, {"m": ["p"]}, resamples=400)
        assert ci["low"] < -0.1 < ci["high"]
        assert ci["low"] < ci["difference"] < ci["high"]
        widths.append(ci["high"] - ci["low"])
    assert widths[1] < widths[0] / 2  # ~ 1 / sqrt(items)
    # a difference far beyond the noise: the interval excludes 0
    a, b = arms(400, 2, np.random.default_rng(0))
    assert noise.paired_difference(a, b, {"m": 1.0}, {"m": ["p"]}, resamples=200)["high"] < 0
