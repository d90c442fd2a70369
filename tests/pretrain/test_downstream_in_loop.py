"""Downstream evaluation in the training loop: what it refuses before a run writes anything.

What it logs, when, and that it equals lm-evaluation-harness's scores: tests/evals/test_lm_eval_parity.py."""

from __future__ import annotations

import pytest

from common.checks import ConfigError
from pretrain import train as train_lib
from tests.support import export as fx
from tests.support.evals import arc_rows, write_jsonl
from tests.support.train import tiny_config


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("in_loop")
    return fx.train_tokenizer(root), write_jsonl(root / "ARC-Easy-Test.jsonl", arc_rows(6))


def _config(workdir, inputs, **downstream):
    tokenizer, items = inputs
    config = tiny_config(str(workdir), total_steps=6, log_every=2)
    config.model.vocab_size = 320  # the tokenizer's 300 pieces, padded
    config.data.tokenizer = str(tokenizer)
    config.downstream.update(
        {"tasks": "arc_easy", "eval_sets": f"arc_easy={items}", "limit": 4, **downstream}
    )
    return config


@pytest.mark.parametrize(
    "downstream, field",
    [
        (dict(every_steps=3), "downstream.every_steps"),  # not a multiple of log_every
        (dict(tasks="arc_hard"), "arc_hard"),
        (dict(eval_sets="arc_easy=/no/such/ARC-Easy-Test.jsonl"), "arc_easy"),
    ],
)
def test_bad_settings_stop_the_run_before_anything_is_written(inputs, tmp_path, downstream, field):
    with pytest.raises(ConfigError, match=field):
        train_lib.train(_config(tmp_path / "run", inputs, **downstream))
    assert not (tmp_path / "run" / "config.json").exists()
