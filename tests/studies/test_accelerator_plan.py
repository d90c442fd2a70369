"""The search study runs unchanged on an accelerator training config: only `config.train` differs,
and every run the study plans is that config with the study's own fields set (item 6 of issue 34).
Nothing is trained: the plan and the generated run configs are built and compared."""

from __future__ import annotations

import pytest

from configs.anneal import search_study
from studies import anneal_arms
from studies import mixture_search as ms

# What the study sets in every run it generates; everything else is the training config's.
STUDY_FIELDS = {
    "workdir", "seed", "mixture", "train.total_steps", "train.log_every", "optim.schedule",
    "optim.decay_start", "optim.warmup_steps", "init_from", "eval.every_steps", "checkpoint.every_steps",
}  # fmt: skip


def _flat(config, prefix=""):
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items") and name not in STUDY_FIELDS:
            out.update(_flat(value, name + "."))
        elif name not in STUDY_FIELDS:
            out[name] = value
    return out


@pytest.mark.parametrize("train", ["gpu_2b", "tpu_v5e_2b"])
def test_the_plan_for_an_accelerator_config_is_the_cpu_plan_with_its_training_config(tmp_path, train):
    cpu = search_study.get_config(str(tmp_path))
    accelerator = search_study.get_config(f"{tmp_path},{train}")
    assert {k: v for k, v in accelerator.items() if k != "train"} == {
        k: v for k, v in cpu.items() if k != "train"
    }
    assert accelerator.train.model.num_layers == 18 and accelerator.train.data.seq_len == 8192
    ms.validate(accelerator)
    step = anneal_arms.branch_step(accelerator)
    general = ms.general_weights(accelerator, step)
    assert general == ms.general_weights(cpu, step)
    arms = ms.plan(accelerator, general)
    assert [a["name"] for a in arms] == [a["name"] for a in ms.plan(cpu, general)]
    assert {"null_control", "more_math"} <= {a["name"] for a in arms}
    prefix = anneal_arms.prefix_config(accelerator, 0, str(tmp_path / "prefix"))
    expected = _flat(accelerator.train)
    assert _flat(prefix) == expected
    for arm in arms:
        run = anneal_arms.arm_config(
            prefix, arm, general, str(tmp_path / "prefix"), step, accelerator.anneal_steps,
            accelerator.eval_every, 0, str(tmp_path / arm["name"]),
        )  # fmt: skip
        assert _flat(run) == expected, arm["name"]
        assert run.seed == arm.get("data_seed", 0)  # the null control reads another data order
        assert run.model.num_layers == 18 and run.mixture.seq_len == 8192
