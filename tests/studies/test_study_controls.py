"""studies.controls: control arms are checked, judged against the reference, and gate trust."""

from __future__ import annotations

import pytest

from common.checks import ConfigError
from configs.anneal import demo, search_controls
from studies import anneal_arms, controls, noise

NULL = dict(name="null_control", weights=None, optim={}, data_seed=1, control={"kind": "null"})
MORE_MATH = {"math": 0.6, "web": 0.25, "code": 0.15}
POSITIVE = dict(
    name="more_math",
    weights=MORE_MATH,
    optim={},
    control=dict(kind="positive", metric="val_math", expected="lower"),
)


def _config(*arms):
    c = demo.get_config()
    c.arms = [dict(name="general", weights=None, optim={}), *arms]
    return c


@pytest.mark.parametrize(
    "arm, message",
    [
        (
            {**NULL, "weights": MORE_MATH},
            r"arms\[1\].weights: a null control repeats the reference arm 'general'",
        ),
        ({**NULL, "data_seed": 0}, r"arms\[1\].data_seed: a null control needs another data-order seed"),
        ({**POSITIVE, "control": {"kind": "positive"}}, r"arms\[1\].control.metric: must name"),
        ({**POSITIVE, "control": {"kind": "positive", "metric": "m", "expected": "up"}}, r"control.expected"),
        ({**NULL, "control": {"kind": "maybe"}}, r"arms\[1\].control.kind: must be one of"),
    ],
)
def test_bad_controls_are_refused_naming_the_field(arm, message):
    with pytest.raises(ConfigError, match=message):
        controls.validate(_config(arm))


def test_judged_against_the_reference_and_trust_needs_both():
    config = _config(NULL, POSITIVE, dict(name="other", weights=MORE_MATH, optim={}))
    controls.validate(config)
    asked = []
    level = {"difference": 0.01, "low": -0.02, "high": 0.03, "seeds": 2}
    lower = {"difference": -0.2, "low": -0.3, "high": -0.1, "seeds": 2}

    def interval(arm, baseline, objective):
        asked.append((arm, baseline, dict(objective)))
        return level if arm == "null_control" else lower

    out = controls.judge(config, ["code", "val_web"], interval)
    assert asked == [
        ("null_control", "general", {"code": 1.0}),
        ("null_control", "general", {"val_web": 1.0}),
        ("more_math", "general", {"val_math": 1.0}),
    ]
    assert all(c["passed"] for c in out.values()) and noise.trustworthy(out)
    assert "can be trusted" in "\n".join(controls.markdown(out, "general"))
    broken = controls.judge(config, ["code"], lambda arm, base, obj: lower)  # the null control moved
    assert not noise.trustworthy(broken)
    text = "\n".join(controls.markdown(broken, "general"))
    assert "UNTRUSTWORTHY" in text and "control null_control (code) failed" in text
    only_null = controls.judge(_config(NULL), ["code"], interval)
    assert "no positive control" in "\n".join(controls.markdown(only_null, "general"))


def test_the_search_benchs_controls_run_alone_and_their_metric_is_scored(tmp_path):
    """configs/anneal/search_controls.py: the search study's reference arm and its two controls,
    valid, in their own folder; the positive control's metric is one the study scores."""
    config = search_controls.get_config(str(tmp_path))
    anneal_arms.validate(config)
    controls.validate(config)
    assert [a["name"] for a in config.arms] == ["general", "null_control", "more_math"]
    assert config.output_dir == f"{tmp_path}/controls" and tuple(config.seeds) == (0, 1)
    positive = dict(config.arms[2]["control"])
    task = positive["metric"].split("/")[0]
    assert task in config.downstream.tasks and config.arms[2]["weights"]["math"] >= 0.8
