"""studies.anneal: branched arms are exact continuations, every arm is scored alike, the report adds up."""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
import pytest

from common.checks import ConfigError
from configs.anneal import demo
from data_pipeline import prepared
from pretrain import train as train_lib
from pretrain.metrics import read_metrics
from studies import anneal, anneal_report
from tests.support.mixtures import PACK_SEQ_LEN, packed_fixture
from tests.support.train import tiny_config

PREFIX, ANNEAL = 8, 4


def study_config(
    root: Path, prep_dir: Path, packed_dir: Path, vocab: Path, probe: Path
) -> ml_collections.ConfigDict:
    c = demo.get_config()
    train = tiny_config(root / "unused")
    train.data.synthetic = False
    train.data.seq_len = PACK_SEQ_LEN
    train.data.packed_dir, train.data.tokenizer = str(packed_dir), str(vocab)
    c.prep_dir = str(prep_dir)
    train.mixture = c.train.mixture
    train.mixture.seq_len = train.data.seq_len
    train.checkpoint.async_save = False
    train.eval.batches = 1
    c.train = train
    c.output_dir = str(root / "study")
    c.prefix_steps, c.anneal_steps, c.eval_every = PREFIX, ANNEAL, ANNEAL
    c.probes.sets = {"quiz": str(probe), "leaky": str(probe.with_name("leaky.jsonl"))}
    c.probes.groups = {"quizzes": ["quiz", "leaky"]}
    c.probes.max_items = 10
    c.probes.validation_docs = 3
    c.verdict.lower, c.verdict.level = ["quiz"], ["val_web"]
    c.arms = [  # the demo's first arms, fixed here (the demo's own recipe follows its mixture search)
        dict(name="general", weights=None, optim={}),
        dict(name="hq", weights={"web_hq": 0.4, "math_hq": 0.3, "code_hq": 0.3}, optim={}),
    ]
    return c


@pytest.fixture(scope="module")
def studied(tmp_path_factory):
    root = tmp_path_factory.mktemp("anneal")
    prep_dir, vocab, packed_dir = packed_fixture(tmp_path_factory)
    probe = root / "quiz.jsonl"  # eval-set shaped: question + reference answer
    probe.write_text(
        "".join(
            json.dumps(
                {
                    "question": f"let prove theorem {i} integer prime",
                    "answer": "sum equal proof group ring field",
                }
            )
            + "\n"
            for i in range(4)
        )
    )
    leaked = next(t for t in prepared.texts(prep_dir / "code", "train") if len(t.split()) >= 20)
    (root / "leaky.jsonl").write_text(json.dumps({"question": leaked}) + "\n")
    config = study_config(root, prep_dir, packed_dir, vocab, probe)
    report = anneal.study(config, trainer=train_in_process)
    return root, config, report


def train_in_process(config: ml_collections.ConfigDict, log_path: str) -> float:
    """The tests' trainer: pretrain.train's function, without a subprocess per run."""
    return train_lib.train(config)["wall_seconds"]


def test_a_rerun_reuses_its_runs_and_refuses_ones_made_with_other_settings(studied):
    """The same config trains nothing again; an edited arm or anneal length names the arm and
    what changed instead of reporting the old run's results under the new config."""
    _, config, report = studied

    def no_training(cfg, log_path):
        raise AssertionError(f"retrained {cfg.workdir}")

    again = anneal.run_arms(ml_collections.ConfigDict(config.to_dict()), lambda _: None, no_training)
    assert (
        again["seeds"]["0"]["arms"]["hq"]["workdir"] == report["runs"]["seeds"]["0"]["arms"]["hq"]["workdir"]
    )
    edited = ml_collections.ConfigDict(config.to_dict())
    edited.arms[1]["weights"] = {"web_hq": 0.2, "math_hq": 0.5, "code_hq": 0.3}
    with pytest.raises(
        ConfigError, match=r"^config\.arms\[1\]: .*/hq holds a run made with other settings \(config\.mixture"
    ):
        anneal.run_arms(edited, lambda _: None, no_training)
    longer = ml_collections.ConfigDict(config.to_dict())
    longer.anneal_steps = 2 * ANNEAL
    with pytest.raises(
        ConfigError,
        match=r"^config\.arms\[0\]: .*/general holds a run .*config\.train\.total_steps: 12 -> 16",
    ):
        anneal.run_arms(longer, lambda _: None, no_training)


def test_arm_is_the_uninterrupted_run_it_branched_from(studied):
    root, config, report = studied
    arm_dir = report["runs"]["seeds"]["0"]["arms"]["general"]["workdir"]
    # One run of prefix + anneal steps, WSD decay from the prefix's end, no branching.
    whole = ml_collections.ConfigDict(config.train.to_dict())
    whole.workdir = str(root / "whole")
    whole.train.total_steps = PREFIX + ANNEAL
    whole.optim.schedule, whole.optim.decay_start = "wsd", str(PREFIX)
    whole.eval.every_steps = 0
    train_lib.train(whole)
    expected = {r["step"]: r["loss"] for r in read_metrics(whole.workdir)}
    branched = read_metrics(arm_dir)
    assert [r["step"] for r in branched] == list(range(PREFIX + 1, PREFIX + ANNEAL + 1))
    assert all(r["loss"] == expected[r["step"]] for r in branched)
    assert branched[0]["lr"] == pytest.approx(config.train.optim.peak_lr)  # decay from the branch
    assert branched[1]["lr"] < branched[0]["lr"]


def test_arms_differ_only_in_their_annealing_mixture(studied):
    _, _, report = studied
    arms = report["runs"]["seeds"]["0"]["arms"]
    hq = read_metrics(arms["hq"]["workdir"])
    general = read_metrics(arms["general"]["workdir"])
    assert hq[-1]["mixture_weights"]["web_hq"] == pytest.approx(0.4)
    assert set(hq[-1]["loss_per_source"]) <= {"web_hq", "math_hq", "code_hq"}
    assert set(general[-1]["loss_per_source"]) <= {"web", "math", "code"}
    assert [r["lr"] for r in hq] == [r["lr"] for r in general]
    prefix_ckpts = Path(report["runs"]["seeds"]["0"]["prefix"]["workdir"]) / "checkpoints"
    assert [p.name for p in prefix_ckpts.iterdir()] == [str(PREFIX)]  # trained once


def test_every_run_scored_on_the_same_heldout_sets(studied):
    _, config, report = studied
    losses = report["losses"]["0"]
    assert set(losses) == {"prefix", "general", "hq"}
    for run in losses.values():
        assert set(run) == {"val_web", "val_math", "val_code", "quiz", "leaky", "quizzes"}
    assert report["heldout"]["documents"] == {
        "val_web": 3,
        "val_math": 3,
        "val_code": 3,
        "quiz": 4,
        "leaky": 1,
    }
    # Annealing moves the probes off the prefix's values.
    assert losses["general"]["val_web"] != losses["prefix"]["val_web"]
    delta = report["summary"]["delta"]["quiz"]["hq"]["mean"]
    assert delta == pytest.approx(losses["hq"]["quiz"] - losses["general"]["quiz"])
    assert "general" not in report["summary"]["delta"]["quiz"]


def test_contamination_check_finds_a_probe_that_is_in_training(studied):
    root, _, report = studied
    assert report["heldout"]["contaminated_items"] == {"quiz": 0, "leaky": 1}
    assert "CONTAMINATED" in report["markdown"]
    for kind in ("json", "md", "png"):
        assert Path(report["paths"][kind]).stat().st_size > 0
    assert json.loads(Path(report["paths"]["json"]).read_text())["reference"] == "general"


def test_arms_branch_from_a_hugging_face_import(studied, tmp_path):
    """--from_workdir on what pretrain.convert.hf_import writes (a step-0 checkpoint of HF weights):
    the arms start from those weights, and the imported model is the pre-anneal baseline."""
    from pretrain.convert import export, hf_import
    from pretrain.model.transformer import TransformerConfig
    from pretrain.tools import evaluate
    from tests.support.export import random_params

    root, base, _ = studied
    model = TransformerConfig.from_config_dict(base.train.model.to_dict())
    export.export_hf(random_params(model), model, None, tmp_path / "hf", dtype="float32")
    imported = ml_collections.ConfigDict(base.train.to_dict())
    imported.workdir = str(tmp_path / "imported")
    params, _ = hf_import.import_hf(tmp_path / "hf", vocab_size=model.vocab_size)
    hf_import.write_training_checkpoint(params, imported)

    config = ml_collections.ConfigDict(base.to_dict())
    config.from_workdir, config.output_dir = imported.workdir, str(tmp_path / "study")
    config.seeds = (0,)
    report = anneal.study(config, trainer=train_in_process)
    runs = report["runs"]["seeds"]["0"]
    assert runs["prefix"] == {"workdir": imported.workdir, "step": 0, "weights": runs["prefix"]["weights"]}
    for arm in runs["arms"].values():
        assert [r["step"] for r in read_metrics(arm["workdir"]) if "loss" in r] == list(range(1, ANNEAL + 1))
    heldout = report["heldout"]["path"]
    assert report["losses"]["0"]["prefix"]["quiz"] == pytest.approx(
        evaluate.evaluate(imported.workdir, heldout, step=0)["per_source"]["quiz"]["loss"]
    )


def test_summary_spread_and_verdict():
    losses = {
        s: {"prefix": {"m": 3.0, "w": 3.0}, "a": {"m": 2.0 + d, "w": 2.0}, "b": {"m": 1.8 + d, "w": 2.03}}
        for s, d in (("0", 0.0), ("1", 0.02))
    }
    summary = anneal_report.summarize(losses, "a")
    assert summary["table"]["m"]["a"]["std"] == pytest.approx(0.0141421, rel=1e-4)
    assert summary["delta"]["m"]["b"]["mean"] == pytest.approx(-0.2)
    assert summary["delta"]["m"]["b"]["std"] == pytest.approx(0.0, abs=1e-12)
    v = anneal_report.verdict(summary, "a", lower=["m"], level=["w"], tolerance=0.01)["b"]
    assert v["checks"]["m"]["ok"] and not v["checks"]["w"]["ok"]  # +1.5% > 1%, spread 0
    assert anneal_report.verdict(summary, "a", ["m"], ["w"], 0.02)["b"]["all_ok"]


def test_arm_with_versus_is_also_judged_against_that_arm():
    """Arm (c) = (b) plus a candidate dataset: the question is what the candidate adds to (b)."""
    losses = {
        s: {
            "prefix": {"m": 3.0},
            "a": {"m": 2.0 + d},
            "b": {"m": 1.9 + d},
            "c": {"m": 1.9 + d + (0.05 if s == "1" else 0.0)},
        }
        for s, d in (("0", 0.0), ("1", 0.02))
    }
    summary = anneal_report.summarize(losses, "a", versus={"c": "b"})
    assert list(summary["comparisons"]) == ["b", "c", "c vs b"]
    assert summary["delta"]["m"]["c vs b"]["mean"] == pytest.approx(0.025)
    assert summary["delta"]["m"]["c"]["mean"] == pytest.approx(-0.075)
    verdicts = anneal_report.verdict(summary, "a", lower=["m"], level=[], tolerance=0.0)
    assert verdicts["c"]["checks"]["m"]["ok"]  # beats a
    assert verdicts["c vs b"]["baseline"] == "b" and not verdicts["c vs b"]["checks"]["m"]["ok"]


def test_study_config_declares_the_three_arms_of_the_issue(tmp_path):
    """configs/anneal/study.py (bench/anneal_study.py) is valid: (c) is (b) at 70% plus the
    candidate task at 30%, judged against (b), read from the pack that holds the candidate."""
    from configs.anneal import study

    config = study.get_config(str(tmp_path))
    anneal.validate(config)
    arms = {arm["name"]: arm for arm in config.arms}
    b, c = arms["hq_reference_mc"], arms["candidate_gsm8k_train"]
    assert c["versus"] == "hq_reference_mc" and c["packed_dir"] == b["packed_dir"]
    assert c["weights"]["gsm8k_train"] == pytest.approx(0.3)
    assert {k: v / 0.7 for k, v in c["weights"].items() if k != "gsm8k_train"} == pytest.approx(b["weights"])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("anneal_steps", 0, "config.anneal_steps: must be > 0"),
        ("eval_every", 3, "config.eval_every: must divide anneal_steps"),
        ("arms", [dict(name="x", weights={"web": 0.5})], "config.arms[0].weights: must be >= 0 and sum to 1"),
        ("arms", [dict(name="x", weights=None, optim={"peak": 1})], "config.arms[0].optim: unknown"),
        ("arms", [dict(name="x", weights=None, versus="y")], "config.arms[0].versus: must name another arm"),
        ("arms", [dict(name="x", weights=None, versus="x")], "config.arms[0].versus: must name another arm"),
    ],
)
def test_bad_config_fails_naming_field(field, value, message):
    config = demo.get_config()
    config.anneal_steps = 40
    with config.unlocked():
        config[field] = value
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        anneal.validate(config)


def test_subprocess_trainer_runs_the_config_it_is_given(tmp_path):
    config = tiny_config(tmp_path / "run", total_steps=2)
    config.optim.warmup_steps = 1
    seconds = anneal.train_subprocess(config, str(tmp_path / "train.log"))
    assert seconds > 0
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written == json.loads(config.to_json())
    assert [r["step"] for r in read_metrics(config.workdir)] == [1, 2]
    assert (tmp_path / "train.log").stat().st_size > 0
