"""Schedule validation and weights; row apportionment keeps every 50-step window on schedule."""

import ml_collections
import numpy as np
import pytest

from mixtures.assignment import row_tasks, task_counts_before
from mixtures.schedule import Schedule
from tests.support.mixtures import demo_mixture


def _cfg(stages, tasks=("a", "b", "c")):
    cfg = ml_collections.ConfigDict()
    cfg.tasks = list(tasks)
    cfg.stages = stages
    return cfg


def test_constant_stages_switch_at_start_fraction():
    s = Schedule.from_config(
        _cfg(
            [
                dict(start=0.0, weights={"a": 0.5, "b": 0.5}),
                dict(start=0.9, weights={"c": 1.0}, name="anneal"),
            ]
        ),
        100,
    )
    assert s.weights_at(0) == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert s.weights_at(89) == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert s.weights_at(90) == {"a": 0.0, "b": 0.0, "c": 1.0}
    assert s.weights_at(500) == {"a": 0.0, "b": 0.0, "c": 1.0}
    assert (s.stage_at(10), s.stage_at(95)) == ("stage0", "anneal")


def test_interpolation_moves_linearly_to_next_stage():
    s = Schedule.from_config(
        _cfg([dict(start=0.0, weights={"a": 1.0}, interpolate=True), dict(start=0.5, weights={"b": 1.0})]),
        100,
    )
    assert s.weights_at(25) == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0})
    assert s.weights_at(10) == pytest.approx({"a": 0.8, "b": 0.2, "c": 0.0})
    assert s.weights_at(50) == {"a": 0.0, "b": 1.0, "c": 0.0}


@pytest.mark.parametrize(
    "stages, message",
    [
        ([], r"config.stages: must hold"),
        (
            [dict(start=0.1, weights={"a": 1.0})],
            r"config.stages\[0\].start: the first stage must start at 0.0",
        ),
        ([dict(start=0.0, weights={"z": 1.0})], r"config.stages\[0\].weights: unknown tasks \['z'\]"),
        (
            [dict(start=0.0, weights={"a": 1.5, "b": -0.5})],
            r"config.stages\[0\].weights\['b'\]: must be a finite number >= 0",
        ),
        (
            [dict(start=0.0, weights={"a": 0.5, "b": 0.4})],
            r"config.stages\[0\].weights: must sum to 1, got 0.9",
        ),
        (
            [
                dict(start=0.0, weights={"a": 1.0}),
                dict(start=0.5, weights={"b": 1.0}),
                dict(start=0.4, weights={"c": 1.0}),
            ],
            r"config.stages\[2\].start: stages must start in increasing order",
        ),
        (
            [dict(start=0.0, weights={"a": 1.0}), dict(start=1.0, weights={"b": 1.0})],
            r"config.stages\[1\].start: must be a fraction in \[0, 1\)",
        ),
        (
            [dict(start=0.0, weights={"a": 1.0}, interpolate=True)],
            r"config.stages\[0\].interpolate: the last stage",
        ),
    ],
)
def test_bad_configs_name_the_fault(stages, message):
    with pytest.raises(ValueError, match=message):
        Schedule.from_config(_cfg(stages), 100)


def test_errors_are_config_errors_with_the_full_field_path():
    """A training config holds the mixture under config.mixture: its errors say so."""
    from common.checks import ConfigError

    stages = [
        dict(start=0.0, weights={"a": 1.0}),
        dict(start=0.5, weights={"b": 1.0}),
        dict(start=0.4, weights={"c": 1.0}),
    ]
    with pytest.raises(ConfigError, match=r"^config\.mixture\.stages\[2\]\.start: stages must start"):
        Schedule.from_config(_cfg(stages), 100, "config.mixture")
    with pytest.raises(ConfigError, match=r"^config\.mixture\.tasks: duplicate"):
        Schedule.from_config(_cfg(stages, tasks=("a", "a")), 100, "config.mixture")


def test_bad_tasks_and_total_steps():
    with pytest.raises(ValueError, match="config.tasks: duplicate"):
        Schedule.from_config(_cfg([dict(start=0.0, weights={"a": 1.0})], tasks=("a", "a")), 10)
    with pytest.raises(ValueError, match="total_steps"):
        Schedule.from_config(_cfg([dict(start=0.0, weights={"a": 1.0})]), 0)


def _worst_window_error(schedule, seed, batch_size, steps, window=50):
    counts = np.zeros((steps, len(schedule.tasks)))
    for step in range(steps):
        np.add.at(counts[step], row_tasks(schedule, seed, step, batch_size), 1)
    weights = np.array([[schedule.weights_at(s)[t] for t in schedule.tasks] for s in range(steps)])
    worst = 0.0
    for start in range(steps - window + 1):
        realized = counts[start : start + window].sum(0) / (window * batch_size)
        worst = max(worst, np.abs(realized - weights[start : start + window].mean(0)).max())
    return worst


@pytest.mark.parametrize("interpolate", [False, True])
@pytest.mark.parametrize("batch_size", [4, 8, 16])
def test_every_50_step_window_is_within_0_02_of_schedule(batch_size, interpolate):
    schedule = Schedule.from_config(demo_mixture(interpolate=interpolate), 400)
    for seed in (0, 1, 1234):
        assert _worst_window_error(schedule, seed, batch_size, 400) <= 0.02


def test_row_tasks_is_a_pure_function_of_seed_and_step():
    schedule = Schedule.from_config(demo_mixture(), 100)
    a = [row_tasks(schedule, 7, s, 8) for s in range(20)]
    assert all((x == row_tasks(schedule, 7, s, 8)).all() for s, x in enumerate(a))
    assert any((x != row_tasks(schedule, 8, s, 8)).any() for s, x in enumerate(a))
    # zero-weight tasks never get a row
    assert set(np.concatenate(a)) <= {0, 1, 2}


@pytest.mark.parametrize("name", ["demo_two_stage", "gemma_anneal"])
def test_shipped_configs_validate_and_end_on_high_quality(name):
    import importlib

    cfg = importlib.import_module(f"configs.mixtures.{name}").get_config()
    s = Schedule.from_config(cfg, 1000)
    assert s.weights_at(0)["web"] == 0.6
    assert s.stage_at(999) == "anneal" and s.weights_at(999)["web_hq"] == 0.4


@pytest.mark.parametrize("interpolate", [False, True])
def test_task_counts_before_a_step_match_the_rows_assigned_so_far(interpolate, monkeypatch):
    from mixtures import assignment

    schedule = Schedule.from_config(demo_mixture(interpolate=interpolate), 40)
    running = np.zeros(len(schedule.tasks), np.int64)
    monkeypatch.setattr(assignment, "_COUNT_CHUNK_ROWS", 24)  # several chunks of 3 steps at batch 8
    for step in range(40):
        np.testing.assert_array_equal(task_counts_before(schedule, 3, step, 8), running)
        running += np.bincount(row_tasks(schedule, 3, step, 8), minlength=len(schedule.tasks))
    since = (10, task_counts_before(schedule, 3, 10, 8))
    np.testing.assert_array_equal(task_counts_before(schedule, 3, 40, 8, since), running)


def test_weights_array_equals_weights_at_exactly():
    s = Schedule.from_config(
        _cfg(
            [
                dict(start=0.0, weights={"a": 0.7, "b": 0.3}),
                dict(start=0.3, weights={"a": 0.2, "c": 0.8}, interpolate=True),
                dict(start=0.77, weights={"c": 1.0}),
            ]
        ),
        97,
    )
    steps = np.arange(0, 130)
    expected = np.array([[s.weights_at(int(i))[t] for t in s.tasks] for i in steps])
    np.testing.assert_array_equal(s.weights_array(steps), expected)
