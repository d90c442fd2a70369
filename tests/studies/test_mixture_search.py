"""studies.mixture_search: the search's command with a stub trainer and scorer (a planted
weight -> loss relation), so that resume, slices, merge, proposal and proof run in seconds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from common.checks import ConfigError
from configs.anneal import demo, search_demo
from mixtures.schedule import Schedule
from studies import mixture_search as ms
from tests.support.mixtures import packed_fixture

ITEMS = 30
DATA: dict[str, str] = {}  # the prepared data, packed rows and tokenizer every search hashes as its inputs


@pytest.fixture(autouse=True)
def _inputs(tmp_path_factory):
    prep_dir, vocab, packed_dir = packed_fixture(tmp_path_factory)
    DATA.update(prep_dir=str(prep_dir), packed_dir=str(packed_dir), tokenizer=str(vocab))


def planted(weights: dict[str, float]) -> dict[str, float]:
    """Code loss falls with code and code_hq (hq twice as fast), math with math_hq; web with web."""
    w = lambda *ts: sum(weights.get(t, 0.0) for t in ts)  # noqa: E731
    return {
        "humaneval": 3.0 + np.exp(-2.0 * w("code") - 4.0 * w("code_hq")),
        "val_math": 3.0 + np.exp(-1.0 * w("math") - 3.0 * w("math_hq")),
        "val_web": 3.0 + np.exp(-1.5 * w("web") - 1.0 * w("web_hq")),
    }


class Stub:
    """Trainer: records the config and writes the final checkpoint's directory. Scorer: the
    planted losses per item (fixed item offsets, so arms are paired), seed noise 0.002 per run
    and 0.02 per item (the same for every arm of a seed: the data order; `flat`: no relation)."""

    def __init__(self, fail_after: int | None = None, flat: bool = False):
        self.trained: list[str] = []
        self.fail_after = fail_after
        self.flat = flat

    def train(self, config: ml_collections.ConfigDict, log_path: str) -> float:
        if self.fail_after is not None and len(self.trained) >= self.fail_after:
            raise RuntimeError("killed")
        workdir = Path(config.workdir)
        (workdir / "checkpoints" / str(config.train.total_steps)).mkdir(parents=True)
        stage = config.mixture.stages[-1]
        (workdir / "stub.json").write_text(
            json.dumps({"weights": dict(stage["weights"]), "seed": config.seed})
        )
        self.trained.append(str(workdir))
        return 1.0

    def score(self, workdir: str, step: int) -> dict:
        run = json.loads((Path(workdir) / "stub.json").read_text())
        rng = np.random.default_rng(run["seed"])
        noise, per_item = rng.normal(0, 0.002), rng.normal(0, 0.02, ITEMS)
        offsets = np.random.default_rng(7).normal(0, 0.05, ITEMS)
        items = {}
        for source, loss in planted({} if self.flat else run["weights"]).items():
            tokens = np.full(ITEMS, 10.0)
            items[source] = {
                "ids": list(range(ITEMS)),
                "num": ((loss + noise + per_item + offsets) * tokens).tolist(),
                "den": tokens.tolist(),
            }
        metrics = {s: float(np.sum(v["num"]) / np.sum(v["den"])) for s, v in items.items()}
        metrics["code"] = metrics["humaneval"]
        return {"metrics": metrics, "items": items}


def config(tmp_path: Path, **search) -> ml_collections.ConfigDict:
    c = search_demo.get_config()
    c.output_dir = str(tmp_path / "search")
    c.prep_dir, c.train.data.packed_dir, c.train.data.tokenizer = (
        DATA["prep_dir"],
        DATA["packed_dir"],
        DATA["tokenizer"],
    )
    c.seeds = (0, 1)
    c.search.update({"arms": 16, "holdout": 5, "proof_seeds": (100, 101), "bootstrap": 200, **search})
    c.search.objective = {"code": 1.0, "val_math": 1.0}
    c.search.constraints = [dict(metric="val_web", tolerance=0.01)]
    c.arms = [  # the reference, and a hand-written recipe that breaks the planted web constraint
        dict(name="general", weights=None, optim={}),
        dict(name="hq", weights={"web_hq": 0.4, "math_hq": 0.3, "code_hq": 0.3}, optim={}),
    ]
    return c


def arm_runs(stub: Stub) -> list[str]:
    return [t for t in stub.trained if not t.endswith("prefix")]


def test_search_fits_proposes_and_proves_on_a_planted_relation(tmp_path):
    stub = Stub()
    report = ms.search(config(tmp_path), lambda _: None, stub.train, stub.score)
    fitted = report["fitted"]
    assert fitted["holdout"]["objective"]["spearman"] >= 0.8
    assert len(fitted["held_out"]) == 5
    proposal = fitted["proposal"]["weights"]
    assert sum(proposal.values()) == pytest.approx(1.0, abs=1e-3)
    truth = planted(proposal)
    general = planted({"web": 0.6, "code": 0.25, "math": 0.15})
    assert truth["val_web"] <= general["val_web"] * 1.01 + 0.002  # the constraint, by the planted truth
    proof = report["proof"]
    assert set(proof["objective"]) == {"general", "hq", report["best_sampled"]}
    assert proof["objective"]["general"]["beats"] and proof["constraints_ok"] and proof["wins"]
    assert not proof["objective"]["hq"]["meets_constraints"]  # lower code+math loss, far worse web
    assert proof["objective"][report["best_sampled"]]["difference"] < 0
    # 2 prefixes + 18 arms x 2 seeds; proof: 2 prefixes + 4 arms x 2 fresh seeds
    assert len(arm_runs(stub)) == 18 * 2 + 4 * 2
    for kind in ("json", "md", "png"):
        assert Path(report["paths"][kind]).stat().st_size > 0
    assert "Proof on fresh seeds [100, 101]" in report["markdown"]


def load(path: str):
    spec = importlib.util.spec_from_file_location("proposal", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_proposal_is_a_mixture_config_the_trainer_and_mixtures_take(tmp_path):
    stub = Stub()
    report = ms.search(config(tmp_path, arms=8, holdout=2), lambda _: None, stub.train, stub.score)
    mixture = load(report["proposal_configs"]["mixture"])
    assert [s["name"] for s in mixture.stages] == ["prefix", "anneal"]
    assert mixture.stages[-1]["start"] == pytest.approx(0.8)
    schedule = Schedule.from_config(mixture, 450)
    assert schedule.weights_at(449) == pytest.approx(
        {t: report["fitted"]["proposal"]["weights"].get(t, 0.0) for t in mixture.tasks}
    )
    assert schedule.weights_at(0)["web"] == pytest.approx(0.6)
    train = load(report["proposal_configs"]["train"])
    assert train.mixture.to_dict() == mixture.to_dict()
    assert (
        train.optim.decay_start == "anneal"
        and train.model.to_dict() == config(tmp_path).train.model.to_dict()
    )


def test_a_killed_search_resumes_without_retraining_finished_arms(tmp_path):
    c = config(tmp_path, arms=6, holdout=2)
    killed = Stub(fail_after=5)  # prefix 0, general seed 0, prefix 1, general seed 1, hq seed 0; then dies
    with pytest.raises(RuntimeError, match="killed"):
        ms.search(c, lambda _: None, killed.train, killed.score)
    scored = sorted(p.parent.name + "/" + p.name for p in Path(c.output_dir, "scores").rglob("*.json"))
    assert scored == ["general/seed0.json", "general/seed1.json", "hq/seed0.json"]
    again = Stub()
    ms.search(config(tmp_path, arms=6, holdout=2), lambda _: None, again.train, again.score)
    retrained = {Path(t).name + "/" + Path(t).parent.name for t in again.trained}
    assert not {"general/seed0", "general/seed1", "hq/seed0", "prefix/seed0", "prefix/seed1"} & retrained
    assert len(arm_runs(again)) == 8 * 2 - 3 + 4 * 2  # the rest of the search, then the proof
    third = Stub()  # everything scored: nothing trains
    ms.search(config(tmp_path, arms=6, holdout=2), lambda _: None, third.train, third.score)
    assert third.trained == []


def test_slices_share_a_search_and_a_merge_reads_them_all(tmp_path):
    stubs = []
    for i in range(3):
        stub = Stub()
        result = ms.search(
            config(tmp_path, arms=7, holdout=2, arms_slice=f"{i}/3"), lambda _: None, stub.train, stub.score
        )
        assert result["slice"] == f"{i}/3" and "markdown" not in result
        stubs.append({Path(t).name for t in arm_runs(stub)})
        if i == 0:
            with pytest.raises(ValueError, match="search.merge: .* scores are missing"):
                ms.search(
                    config(tmp_path, arms=7, holdout=2, merge=True),
                    lambda _: None,
                    Stub().train,
                    Stub().score,
                )
    names = [a for s in stubs for a in s]
    assert sorted(names) == sorted({*names}) and len(names) == 9  # 2 recipes + 7 sampled, each once
    merger = Stub()
    report = ms.search(
        config(tmp_path, arms=7, holdout=2, merge=True), lambda _: None, merger.train, merger.score
    )
    assert {Path(t).parent.name for t in arm_runs(merger)} == {"seed100", "seed101"}  # only the proof
    assert len(report["fitted"]["measured"]) == 9


def test_a_changed_proposal_is_proved_as_a_new_arm(tmp_path):
    """Proof arms are named by their weights: a re-merge with another objective trains the new
    proposal instead of reusing the old one's scores; nothing else retrains."""
    first = Stub()
    report = ms.search(config(tmp_path, arms=6, holdout=2), lambda _: None, first.train, first.score)
    again = Stub()
    other = config(tmp_path, arms=6, holdout=2, merge=True)
    other.search.objective = {"val_math": 1.0}
    second = ms.search(other, lambda _: None, again.train, again.score)
    assert second["proof"]["proposal"] != report["proof"]["proposal"]
    assert {Path(t).name for t in arm_runs(again)} == {second["proof"]["proposal"]}
    assert len(arm_runs(again)) == 2  # the new proposal on the 2 proof seeds


def test_another_search_in_the_same_directory_is_refused(tmp_path):
    stub = Stub()
    ms.search(config(tmp_path, arms=4, holdout=1, arms_slice="0/4"), lambda _: None, stub.train, stub.score)
    with pytest.raises(ValueError, match="holds another search"):
        ms.search(
            config(tmp_path, arms=4, holdout=1, seed=1, arms_slice="0/4"),
            lambda _: None,
            stub.train,
            stub.score,
        )
    longer = config(tmp_path, arms=4, holdout=1, arms_slice="0/4")
    longer.anneal_steps *= 2  # the scored arms annealed for fewer steps: not this search's
    with pytest.raises(ValueError, match="holds another search"):
        ms.search(longer, lambda _: None, stub.train, stub.score)


def test_a_base_run_trained_further_is_another_search_when_branching_at_its_latest_step(tmp_path):
    """from_step=-1 branches at the base run's newest checkpoint: the plan records that step."""
    base = tmp_path / "base"
    first = config(tmp_path, arms=4, holdout=1, arms_slice="0/4")
    (base / "checkpoints" / str(first.prefix_steps)).mkdir(parents=True)
    (base / "config.json").write_text(first.train.to_json())
    first.from_workdir, first.from_step = str(base), -1
    stub = Stub()
    ms.search(first, lambda _: None, stub.train, stub.score)
    (base / "checkpoints" / str(2 * first.prefix_steps)).mkdir()  # the base run went on meanwhile
    with pytest.raises(ValueError, match="holds another search"):
        ms.search(first, lambda _: None, stub.train, stub.score)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("proof_seeds", (0, 1), "search.proof_seeds: must be fresh"),
        ("proof_seeds", (100,), "search.proof_seeds: one seed gives no verdict"),
        ("snr_floor", -1.0, "search.snr_floor: must be >= 0"),
        ("holdout", 16, "search.holdout"),
        ("bounds", {"nope": (0, 1)}, "name tasks outside search.tasks"),
        ("arms_slice", "3/2", "search.arms_slice"),
    ],
)
def test_bad_search_config_fails_naming_field(tmp_path, field, value, message):
    c = config(tmp_path)
    c.search[field] = value
    with pytest.raises(ValueError, match=message):
        ms.validate(c)
        ms.parse_slice(c.search.arms_slice)


def test_search_end_to_end_on_a_tiny_model(tmp_path, tmp_path_factory):
    """The real path: anneal arms trained by pretrain.train (in process), scored by
    pretrain.tools.evaluate per item on the held-out file, fitted, proposed, proved, reported."""
    from pretrain.tools.evaluate import read_documents
    from tests.studies.test_anneal import study_config, train_in_process
    from tests.support.eval_files import write_eval_dir

    prep_dir, vocab, packed_dir = packed_fixture(tmp_path_factory)
    probe = tmp_path / "quiz.jsonl"
    probe.write_text(
        "".join(
            json.dumps({"question": f"let prove theorem {i} integer prime", "answer": "sum equal proof ring"})
            + "\n"
            for i in range(6)
        )
    )
    (tmp_path / "leaky.jsonl").write_text(json.dumps({"question": "def sum of list return value"}) + "\n")
    c = study_config(tmp_path, prep_dir, packed_dir, vocab, probe)
    c.search = search_demo.search_config()
    c.seeds = (0, 1)
    c.search.update({"arms": 4, "holdout": 1, "folds": 3, "proof_seeds": (100, 101), "bootstrap": 50})
    c.search.update({"allow_low_snr": True})  # a few steps of a tiny model: the noise decides
    c.downstream.update(
        dict(tasks=("arc_easy", "gsm8k_bpb"), eval_dir=str(write_eval_dir(tmp_path / "eval")))
    )
    c.search.objective = {"quiz": 1.0, "arc_easy/prob_correct": -1.0}
    c.search.constraints = [dict(metric="val_web", tolerance=0.05)]
    c.search.anneal_start = 0.75
    report = ms.search(c, lambda _: None, train_in_process)
    out = Path(c.output_dir)
    record = json.loads((out / "scores" / "mix000" / "seed0.json").read_text())
    assert len(record["items"]["quiz"]["ids"]) == 6 and len(record["items"]["val_web"]["ids"]) == 3
    for metric in ("quiz", "arc_easy/prob_correct", "gsm8k_bpb/bpb"):  # the items add up to the metric
        pooled = sum(record["items"][metric]["num"]) / sum(record["items"][metric]["den"])
        assert pooled == pytest.approx(record["metrics"][metric], rel=1e-6)
    assert 0 < record["metrics"]["arc_easy/prob_correct"] < 1 and record["metrics"]["gsm8k_bpb/bpb"] > 0
    assert len(record["items"]["arc_easy/acc"]["ids"]) == 4
    assert len(read_documents(out / "heldout.jsonl")) == 9 + 6 + 1
    proposal = report["proof"]["proposal"]
    assert proposal == ms.proposal_name(report["fitted"]["proposal"]["weights"])
    assert report["proof"]["measured"][proposal]["objective"] > 0
    assert set(report["proof"]["objective"]) == {"general", "hq", report["best_sampled"]}
    mixture = load(report["proposal_configs"]["mixture"])
    assert mixture.stages[-1]["weights"] == report["fitted"]["proposal"]["weights"]
    assert (out / "report.png").stat().st_size > 0


def test_controls_noise_and_inputs_go_into_the_decision(tmp_path):
    c = config(tmp_path, arms=8, holdout=2)
    c.arms = [*c.arms, demo.NULL_CONTROL, demo.positive_control("val_math")]
    stub = Stub()
    report = ms.search(c, lambda _: None, stub.train, stub.score)
    outcomes = report["controls"]
    assert {o["kind"] for o in outcomes.values()} == {"null", "positive"}
    assert all(o["passed"] for o in outcomes.values()), outcomes
    assert report["decision"]["summary"] == "proposal wins" and report["decision"]["trustworthy"]
    assert (
        "null_control" not in report["fitted"]["arms"] and "null_control" not in report["proof"]["objective"]
    )
    assert (
        report["noise"]["objective"]["snr"] > c.search.snr_floor
        and report["noise"]["objective"]["seeds"] == 2
    )
    assert set(report["inputs"]) >= {"packed", "tokenizer", "heldout"}
    assert "Controls" in report["markdown"] and "| objective | 2 |" in report["markdown"]


def test_an_objective_below_the_snr_floor_gives_no_decision_unless_allowed(tmp_path):
    c = config(tmp_path, arms=6, holdout=2)
    c.arms = [*c.arms, demo.NULL_CONTROL, demo.positive_control("val_math")]
    report = ms.search(c, lambda _: None, Stub(flat=True).train, Stub(flat=True).score)
    assert report["decision"]["summary"] == "no decision" and report["fitted"] is None
    assert "below search.snr_floor 3" in report["decision"]["reason"]
    assert "**Decision: no decision**" in report["markdown"]
    assert not report["controls"]["more_math"]["passed"]  # no effect planted: the positive control sees none
    allowed = config(tmp_path, arms=6, holdout=2, allow_low_snr=True, merge=True)
    allowed.arms = c.arms
    assert ms.search(allowed, lambda _: None, Stub(flat=True).train, Stub(flat=True).score)["fitted"]


def test_one_seed_is_refused_and_a_study_on_other_inputs_too(tmp_path):
    one = config(tmp_path, arms=4, holdout=1)
    one.seeds = (0,)
    with pytest.raises(ConfigError, match=r"config.seeds: the fit needs the seed noise"):
        ms.validate(one)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "web.jsonl").write_text('{"id": "a", "text": "one"}\n')
    c = config(tmp_path, arms=4, holdout=1, arms_slice="0/4")
    c.corpus_dir = str(corpus)
    stub = Stub()
    ms.search(c, lambda _: None, stub.train, stub.score)
    assert json.loads((tmp_path / "search" / "plan.json").read_text())["inputs"]["corpus"]
    (corpus / "web.jsonl").write_text('{"id": "a", "text": "another"}\n')
    trained = len(stub.trained)
    with pytest.raises(ConfigError, match=r"config.output_dir: .* was planned on other inputs \(corpus "):
        ms.search(c, lambda _: None, stub.train, stub.score)
    assert len(stub.trained) == trained


class HigherStub(Stub):
    """Adds `web_acc`, 10 - the web loss per item: a metric where higher is better (as an accuracy)."""

    def score(self, workdir: str, step: int) -> dict:
        out = super().score(workdir, step)
        web = out["items"]["val_web"]
        out["items"]["web_acc"] = {
            "ids": web["ids"],
            "num": [10.0 * d - n for n, d in zip(web["num"], web["den"])],
            "den": web["den"],
        }
        out["metrics"]["web_acc"] = 10.0 - out["metrics"]["val_web"]
        return out


def test_a_constraint_where_higher_is_better_keeps_the_metric_up(tmp_path):
    """The web constraint said as `web_acc >= general x (1 - 0.005)`: the proposal keeps the web
    (by the planted truth) and the web-breaking recipe `hq` fails it (read as `<=`, it would pass)."""
    stub = HigherStub()
    c = config(tmp_path)
    c.search.constraints = [dict(metric="web_acc", tolerance=0.005, better="higher")]
    report = ms.search(c, lambda _: None, stub.train, stub.score)
    weights = report["fitted"]["proposal"]["weights"]
    general = 10.0 - planted({"web": 0.6, "code": 0.25, "math": 0.15})["val_web"]
    assert 10.0 - planted(weights)["val_web"] >= general * (1 - 0.005) - 0.002
    proof = report["proof"]
    assert proof["constraints"]["web_acc"]["better"] == "higher" and proof["constraints_ok"]
    assert not proof["objective"]["hq"]["meets_constraints"]
    assert "subject to web_acc >= general x (1 - 0.005)" in report["markdown"]


@pytest.mark.parametrize(
    "constraint, message",
    [
        (
            dict(metric="val_web", tolerance=0.01, better="up"),
            r"search.constraints\[0\].better: must be one of",
        ),
        (dict(metric="val_web", tolerance=-0.1), r"search.constraints\[0\].tolerance: must be >= 0"),
        (dict(metric="val_web", higher=True), r"search.constraints\[0\]: unknown keys \['higher'\]"),
        (dict(tolerance=0.01), r"search.constraints\[0\].metric: must name a metric"),
    ],
)
def test_a_bad_constraint_fails_naming_its_field(tmp_path, constraint, message):
    c = config(tmp_path)
    c.search.constraints = [constraint]
    with pytest.raises(ConfigError, match=message):
        ms.validate(c)
