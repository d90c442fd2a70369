"""Find the annealing mixture instead of guessing it: a RegMix-style search over branched anneal arms.

  python -m studies.mixture_search --config=configs/anneal/search_demo.py --from_workdir=W \\
      --output=S [--arms=i/n] [--merge]

1. Search: N annealing-stage weight vectors over `search.tasks` are sampled from a Dirichlet
   around the general mixture (`search.center`, blended with uniform by `search.uniform_share`),
   inside `search.bounds`; each is an anneal arm (`studies.anneal_arms.run_arms`: same prefix,
   same decay, a `pretrain.train` subprocess), as are the hand-written recipes of `config.arms` (the first is the
   reference). Every arm is scored on `config.seeds` with the study's held-out file
   (`studies.anneal_eval`: validation splits and probes), per item, into
   S/scores/<arm>/seed<S>.json. An arm whose scores exist is never retrained, so a killed
   search resumes where it stopped; `--arms=i/n` runs only every n-th arm from the i-th, so n
   processes or machines share a search (over a shared S; the prefix must exist first:
   `--from_workdir`, or one slice that trains it), and stops after scoring.
2. Fit (`--merge`, or a run without `--arms`): per metric of the objective and constraints,
   `studies.mixture_fit.fit` picks gradient-boosted trees (RegMix), the Data-Mixing-Laws
   exponential or a linear model by cross-validated rank correlation; the last
   `search.holdout` sampled arms are kept out of the fit and the report gives the Spearman
   correlation between predicted and measured loss on them.
3. Proposal: the weights minimising `search.objective` (a weighted sum of metrics) subject to
   `search.constraints` (metric <= the reference's * (1 + tolerance); with `better="higher"`,
   for an accuracy: metric >= the reference's * (1 - tolerance)), written as a mixture
   config (S/proposal/mixture.py: `mixtures.pack` / `mixtures.report --config=`) and a training
   config using it as its annealing stage (S/proposal/train.py: `pretrain.train --config=`).
4. Proof: the proposal, the reference, every other recipe and the best sampled arm (lowest
   measured objective among those meeting the constraints) are trained on `search.proof_seeds`
   (never used by the search) and compared with bootstrap confidence intervals over probe
   items and seeds. S/report.{md,json,png}: predicted vs measured, the proposal, the verdict
   and the cost (`studies.mixture_report` renders it; this module trains, scores and decides).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from common import checks, cli, fs
from pretrain.checkpoint import load_train_config
from studies import anneal_arms, anneal_eval, controls, inputs, mixture_report, noise
from studies import mixture_fit as mf

PROPOSAL = "proposal"
SAMPLE_PREFIX = "mix"
Scorer = anneal_eval.Scorer


# ----------------------------------------------------------------------------- config


def validate(config: ml_collections.ConfigDict) -> None:
    anneal_arms.validate(config)
    controls.validate(config)
    s = config.search
    checks.require(
        len(config.seeds) >= 2, "seeds", "the fit needs the seed noise: name at least two seeds", config.seeds
    )
    checks.non_negative(s.snr_floor, "search.snr_floor")
    checks.require(len(s.tasks) >= 2, "search.tasks", "must name at least two packed tasks", s.tasks)
    checks.positive(s.arms, "search.arms")
    checks.require(0 <= s.holdout < s.arms, "search.holdout", "must be in [0, search.arms)", s.holdout)
    checks.require(bool(s.objective), "search.objective", "must weight at least one metric")
    checks.require(
        not set(s.proof_seeds) & set(config.seeds),
        "search.proof_seeds",
        "must be fresh: none of config.seeds",
        s.proof_seeds,
    )
    checks.require(
        len(s.proof_seeds) >= 2,
        "search.proof_seeds",
        "one seed gives no verdict: name at least two",
        s.proof_seeds,
    )
    unknown = (set(s.center) | set(s.bounds)) - set(s.tasks)
    checks.require(not unknown, "search.center/bounds", f"name tasks outside search.tasks: {sorted(unknown)}")
    for k, c in enumerate(s.constraints):
        field = f"search.constraints[{k}]"
        unknown = set(c) - {"metric", "tolerance", "better"}
        checks.require(
            not unknown, field, f"unknown keys {sorted(unknown)} (known: metric, tolerance, better)"
        )
        checks.require(bool(c.get("metric")), f"{field}.metric", "must name a metric", c.get("metric"))
        checks.require(c.get("tolerance", 0) >= 0, f"{field}.tolerance", "must be >= 0", c.get("tolerance"))
        checks.one_of(c.get("better", "lower"), mf.BETTER, f"{field}.better")
    names = {arm["name"] for arm in config.arms}
    clash = {n for n in names if n.startswith((PROPOSAL, SAMPLE_PREFIX))}
    checks.require(not clash, "arms", f"names reserved for the search's own arms: {sorted(clash)}")


def parse_slice(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n), 0 <= i < n; '' -> (0, 1)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise checks.ConfigError(f"--arms: expected i/n (e.g. 0/4), got {text!r}") from None
    checks.require(n >= 1 and 0 <= i < n, "search.arms_slice", "expected i/n with 0 <= i < n", text)
    return i, n


def bounds(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    tasks = list(config.search.tasks)
    lower, upper = np.zeros(len(tasks)), np.ones(len(tasks))
    for task, (lo, hi) in config.search.bounds.items():
        lower[tasks.index(task)], upper[tasks.index(task)] = lo, hi
    return lower, upper


def vector(tasks: list[str], weights: dict[str, float]) -> np.ndarray | None:
    """The weights on `tasks` (None when the arm uses a task outside them)."""
    if set(k for k, v in weights.items() if v) - set(tasks):
        return None
    return np.array([float(weights.get(t, 0.0)) for t in tasks])


def as_weights(tasks: list[str], v: np.ndarray) -> dict[str, float]:
    return {t: round(float(w), 6) for t, w in zip(tasks, v) if round(float(w), 6) > 0}


def plan(config: ml_collections.ConfigDict, general: dict[str, float]) -> list[dict[str, Any]]:
    """Every arm of the search: the recipes of config.arms, then the sampled ones (seeded)."""
    s = config.search
    tasks = list(s.tasks)
    center = vector(tasks, dict(s.center) or general)
    checks.require(
        center is not None and center.sum() > 0, "search.center", "must weight search.tasks", dict(s.center)
    )
    alpha = mf.dirichlet_alpha(center, s.concentration, s.uniform_share)
    lower, upper = bounds(config)
    drawn = mf.sample_weights(alpha, s.arms, s.seed, lower, upper)
    arms = [dict(arm) for arm in config.arms]
    for i, w in enumerate(drawn):
        weights = as_weights(tasks, w)
        total = sum(weights.values())
        weights[max(weights, key=weights.get)] += round(1.0 - total, 6)  # sums to 1 after rounding
        arms.append(dict(name=f"{SAMPLE_PREFIX}{i:03d}", weights=weights, optim={}))
    return arms


# ----------------------------------------------------------------------------- arms


def score_path(output_dir: str, arm: str, seed: int) -> str:
    return fs.join(output_dir, "scores", arm, f"seed{seed}.json")


def read_scores(output_dir: str, arm: str, seed: int) -> dict[str, Any] | None:
    path = score_path(output_dir, arm, seed)
    return fs.read_json_state(path, "remove it: the arm is then scored again") if fs.exists(path) else None


def run_and_score(
    config: ml_collections.ConfigDict,
    arms: list[dict[str, Any]],
    seeds: list[int],
    trainer: anneal_arms.Trainer,
    scorer: Scorer,
    progress: Callable[[str], None],
) -> None:
    """Trains (anneal_arms.run_arms) and scores every arm x seed that has no scores yet."""
    out = config.output_dir
    for arm in arms:
        for seed in seeds:
            if read_scores(out, arm["name"], seed) is not None:
                continue
            sub = ml_collections.ConfigDict(config.to_dict())
            sub.output_dir, sub.seeds, sub.arms = fs.join(out, "runs"), (seed,), [arm]
            runs = anneal_arms.run_arms(sub, progress, trainer)
            run = runs["seeds"][str(seed)]["arms"][arm["name"]]
            t0 = time.perf_counter()
            scores = scorer(run["workdir"], run["step"])
            timing = runs["timings"]["arms"][arm["name"]][0]
            record = {
                "arm": arm["name"],
                "seed": seed,
                "weights": run["weights"],
                "train_seconds": timing["seconds"],
                "score_seconds": time.perf_counter() - t0,
                "prefix": runs["seeds"][str(seed)]["prefix"],
                **scores,
            }
            fs.write_text_atomic(score_path(out, arm["name"], seed), json.dumps(record))
            progress(f"arm {arm['name']} seed {seed}: scored")


def cost(output_dir: str, arms: list[str], seeds: list[int]) -> dict[str, float]:
    """Seconds spent on the scored runs of `arms` x `seeds`, and on the prefixes they branched
    from (each prefix once)."""
    records = [r for r in (read_scores(output_dir, a, s) for a in arms for s in seeds) if r]
    prefixes = {
        r["prefix"]["workdir"]: anneal_arms.timing(r["prefix"]["workdir"])["seconds"] for r in records
    }
    return {
        "runs": len(records),
        "train_seconds": float(sum(r["train_seconds"] for r in records)),
        "score_seconds": float(sum(r["score_seconds"] for r in records)),
        "prefix_seconds": float(sum(prefixes.values())),
    }


def costs_of(
    config: ml_collections.ConfigDict, arms: list[dict[str, Any]], proof: dict[str, Any] | None
) -> dict[str, dict[str, float]]:
    """{"search", "proof"}: the cost of the search's runs and of the proof's (none without a proof)."""
    out = config.output_dir
    return {
        "search": cost(out, [a["name"] for a in arms], list(config.seeds)),
        "proof": cost(out, list(proof["measured"]) if proof else [], list(config.search.proof_seeds)),
    }


def general_weights(config: ml_collections.ConfigDict, step: int) -> dict[str, float]:
    """The prefix's mixture at the branch `step` (what the reference arm keeps), without training anything."""
    return anneal_arms.prefix_weights(
        load_train_config(config.from_workdir) if config.from_workdir else config.train, step
    )


# ----------------------------------------------------------------------------- fit and proposal


def constraint(c: dict[str, Any], share: float = 1.0, margin: float = 0.0) -> mf.Constraint:
    """A `search.constraints` entry as the fit's Constraint (`share` of its tolerance, `margin` inside it)."""
    return mf.Constraint(c["metric"], c.get("tolerance", 0.0) * share, margin, c.get("better", "lower"))


def metrics_needed(config: ml_collections.ConfigDict) -> list[str]:
    return list(dict.fromkeys([*config.search.objective, *(c["metric"] for c in config.search.constraints)]))


def measured(config: ml_collections.ConfigDict, arm: str, seeds: list[int]) -> dict[str, float]:
    """Mean over seeds of every metric of an arm, and its objective."""
    records = [read_scores(config.output_dir, arm, s) for s in seeds]
    metrics = {m: float(np.mean([r["metrics"][m] for r in records])) for m in records[0]["metrics"]}
    metrics["objective"] = sum(c * metrics[m] for m, c in config.search.objective.items())
    return metrics


def in_fit(config: ml_collections.ConfigDict, arm: dict[str, Any], general: dict[str, float]) -> bool:
    if controls.is_control(arm):
        return False
    same_pack = not arm.get("packed_dir") or fs.resolve(arm["packed_dir"]) == config.train.data.packed_dir
    weights = general if arm.get("weights") is None else arm["weights"]
    return same_pack and not arm.get("optim") and vector(list(config.search.tasks), weights) is not None


def fit_and_propose(
    config: ml_collections.ConfigDict, arms: list[dict[str, Any]], general: dict[str, float]
) -> dict[str, Any]:
    s = config.search
    tasks, seeds = list(s.tasks), list(config.seeds)
    usable = [a for a in arms if in_fit(config, a, general)]
    x = np.stack([vector(tasks, general if a.get("weights") is None else a["weights"]) for a in usable])
    values = {a["name"]: measured(config, a["name"], seeds) for a in usable}
    sampled = [a["name"] for a in usable if a["name"].startswith(SAMPLE_PREFIX)]
    held = set(sampled[len(sampled) - s.holdout :]) if s.holdout else set()
    train = np.array([a["name"] not in held for a in usable])
    fits, holdout, held_pred = {}, {}, {}
    names = [a["name"] for a in usable if a["name"] in held]

    def scored(pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        return {
            "spearman": mf.spearman(pred, y),
            "predicted": pred.tolist(),
            "measured": y.tolist(),
            "arms": names,
        }

    for m in metrics_needed(config):
        y = values_of(usable, values, m)
        fits[m] = mf.fit(m, x, y, list(s.models), s.folds)
        if held:  # the model kind chosen on all arms, refitted without the held-out ones
            held_pred[m] = mf.MODELS[fits[m].kind]().fit(x[train], y[train]).predict(x[~train])
            holdout[m] = scored(held_pred[m], y[~train])
    if held:
        pred = sum(c * held_pred[m] for m, c in s.objective.items())
        holdout["objective"] = scored(pred, values_of(usable, values, "objective")[~train])
    reference = config.arms[0]
    ref_vec = vector(tasks, general if reference.get("weights") is None else reference["weights"])
    checks.require(ref_vec is not None, "arms[0]", "the reference arm must use only search.tasks")
    lower, upper = bounds(config)
    constraints = [  # within `use_tolerance` of the tolerance, `margin` cross-validated RMSEs inside
        constraint(c, s.use_tolerance, s.margin * fits[c["metric"]].cv[fits[c["metric"]].kind]["rmse"])
        for c in s.constraints
    ]
    if s.trust_region:  # no extrapolation: each weight within the range the fitted arms span
        lower, upper = np.maximum(lower, x.min(0)), np.minimum(upper, x.max(0))
    proposal = mf.propose(
        fits, dict(s.objective), constraints, ref_vec, lower, upper, seed=s.seed, starts=list(x)
    )
    in_sample = {a["name"]: {m: float(fits[m].predict(xi)[0]) for m in fits} for a, xi in zip(usable, x)}
    return {
        "tasks": tasks,
        "general": general,
        "arms": [a["name"] for a in usable],
        "weights": {a["name"]: x[i].tolist() for i, a in enumerate(usable)},
        "measured": values,
        "predicted": in_sample,
        "held_out": sorted(held),
        "fits": {m: {"model": f.kind, "cv": f.cv} for m, f in fits.items()},
        "holdout": holdout,
        "proposal": {
            **proposal,
            "bounds": {"lower": lower.tolist(), "upper": upper.tolist()},
            "weights": None if proposal["weights"] is None else as_weights(tasks, proposal["weights"]),
        },
    }


def values_of(usable: list[dict[str, Any]], values: dict[str, dict[str, float]], m: str) -> np.ndarray:
    return np.array([values[a["name"]][m] for a in usable])


def best_sampled(config: ml_collections.ConfigDict, fitted: dict[str, Any]) -> str:
    """The sampled arm with the lowest measured objective among those meeting the constraints."""
    ref = fitted["measured"][config.arms[0]["name"]]

    def ok(v: dict[str, float]) -> bool:
        return all(
            constraint(c).met(v[c["metric"]], constraint(c).limit(ref[c["metric"]]))
            for c in config.search.constraints
        )

    sampled = {n: v for n, v in fitted["measured"].items() if n.startswith(SAMPLE_PREFIX)}
    feasible = {n: v for n, v in sampled.items() if ok(v)} or sampled
    return min(feasible, key=lambda n: feasible[n]["objective"])


# ----------------------------------------------------------------------------- proposal configs


def _config_module(doc: str, config: ml_collections.ConfigDict) -> str:
    return (
        f'"""{doc}"""\n\nimport json\n\nimport ml_collections\n\n\ndef get_config():\n'
        f"    return ml_collections.ConfigDict(json.loads({config.to_json(indent=2)!r}))\n"
    )


def write_proposal(
    config: ml_collections.ConfigDict, general: dict[str, float], weights: dict[str, float]
) -> dict[str, str]:
    """S/proposal/mixture.py (the schedule: general, then the proposed annealing stage from
    `search.anneal_start`) and S/proposal/train.py (the training config with that mixture)."""
    total = config.train.train.total_steps
    start = int(round(config.search.anneal_start * total))
    mixture = anneal_arms.arm_mixture(config.train.mixture, general, weights, start, total)
    mixture.stages[-1]["name"] = "anneal"
    train = ml_collections.ConfigDict(config.train.to_dict())
    train.mixture = mixture
    train.workdir = ""
    out = fs.makedirs(fs.join(config.output_dir, PROPOSAL))
    paths = {"mixture": fs.join(out, "mixture.py"), "train": fs.join(out, "train.py")}
    what = ", ".join(f"{k}={v:g}" for k, v in weights.items())
    fs.write_text(
        paths["mixture"],
        _config_module(
            f"Mixture proposed by studies.mixture_search ({config.output_dir}): annealing stage {what} "
            f"from {config.search.anneal_start:g} of training.\n\nmixtures.pack / mixtures.report --config=THIS",
            mixture,
        ),
    )
    fs.write_text(
        paths["train"],
        _config_module(
            f"Training config with the mixture studies.mixture_search proposed ({what}).\n\n"
            "python -m pretrain.train --config=THIS --config.workdir=W",
            train,
        ),
    )
    return paths


# ----------------------------------------------------------------------------- proof


def proposal_name(weights: dict[str, float]) -> str:
    """The proof arm of a proposal, named by its weights: another proposal is another arm."""
    return f"{PROPOSAL}-" + hashlib.sha1(json.dumps(weights, sort_keys=True).encode()).hexdigest()[:6]


def prove(config: ml_collections.ConfigDict, contenders: list[str], proposal: str) -> dict[str, Any]:
    """Bootstrap CIs (seeds x probe items) of the proposal against every contender, on the
    objective and on each constraint metric (against the reference)."""
    s = config.search
    seeds = list(s.proof_seeds)
    interval = interval_on(config, seeds)
    out: dict[str, Any] = {"proposal": proposal, "objective": {}, "constraints": {}, "measured": {}}
    for a in [proposal, *contenders]:
        out["measured"][a] = measured(config, a, seeds)
    for a in contenders:
        ci = interval(proposal, a, dict(s.objective))
        ci["verdict"] = noise.verdict(ci)
        ci["beats"] = ci["verdict"] == noise.LOWER
        out["objective"][a] = ci
    reference = config.arms[0]["name"]
    for c in s.constraints:
        m = c["metric"]
        ci = interval(proposal, reference, {m: 1.0})
        base = out["measured"][reference][m]
        bound = constraint(c)
        ci.update(relative=ci["difference"] / base, tolerance=bound.tolerance, better=bound.better)
        ci["ok"] = bool(bound.met(base + ci["difference"], bound.limit(base)))
        out["constraints"][m] = ci
        for a in contenders:  # a contender that breaks a constraint is no alternative to the proposal
            within = bound.met(out["measured"][a][m], bound.limit(base))
            out["objective"][a]["meets_constraints"] = (
                out["objective"][a].get("meets_constraints", True) and within
            )
    out["constraints_ok"] = all(v["ok"] for v in out["constraints"].values())
    out["all_beaten"] = all(v["beats"] for v in out["objective"].values())
    out["wins"] = out["constraints_ok"] and all(
        v["beats"] or not v.get("meets_constraints", True) for v in out["objective"].values()
    )
    return out


# ----------------------------------------------------------------------------- command


def interval_on(config: ml_collections.ConfigDict, seeds: list[int]) -> controls.Interval:
    """(arm, baseline, objective) -> the paired bootstrap interval over `seeds` and the items."""
    s = config.search
    groups = {k: list(v) for k, v in config.probes.groups.items()}

    def items(arm: str) -> list[dict[str, dict[str, np.ndarray]]]:
        return [anneal_eval.item_arrays(read_scores(config.output_dir, arm, seed)) for seed in seeds]

    def interval(arm: str, base: str, objective: dict[str, float]) -> dict[str, Any]:
        return noise.paired_difference(
            items(arm), items(base), objective, groups, s.bootstrap, s.confidence, s.seed
        )

    return interval


def search_noise(config: ml_collections.ConfigDict, arms: list[dict[str, Any]]) -> dict[str, Any]:
    """Signal-to-noise and minimum detectable difference over the fitted arms on the search
    seeds, for every metric of the objective and constraints and for the objective itself."""
    seeds = list(config.seeds)
    records = {a["name"]: [read_scores(config.output_dir, a["name"], seed) for seed in seeds] for a in arms}
    values = {
        m: {a: [r["metrics"][m] for r in rs] for a, rs in records.items()} for m in metrics_needed(config)
    }
    values["objective"] = {
        a: [sum(c * r["metrics"][m] for m, c in config.search.objective.items()) for r in rs]
        for a, rs in records.items()
    }
    return noise.noise_table(values, config.search.confidence)


def decide(
    config: ml_collections.ConfigDict,
    noise_rows: dict[str, Any],
    outcomes: dict[str, Any],
    proof: dict[str, Any] | None,
) -> dict[str, Any]:
    """The search's answer in one line (`summary`: what two reruns must agree on), and why."""
    s = config.search
    row = noise_rows["objective"]
    if proof is None:
        reason = (
            f"the objective's SNR over the search arms is {row['snr']:.2f}, below search.snr_floor "
            f"{s.snr_floor:g} (arm spread {row['spread']:.4f}, seed std {row['seed_std']:.4f}, minimum "
            f"detectable difference {row['mdd']:.4f} at {row['seeds']} seeds)"
        )
        return {"summary": "no decision", "reason": reason, "trustworthy": noise.trustworthy(outcomes)}
    summary = "proposal wins" if proof["wins"] else "proposal does not win"
    trust = noise.trustworthy(outcomes)
    return {
        "summary": summary if trust else f"{summary} (untrustworthy: controls)",
        "reason": "",
        "trustworthy": trust,
    }


def search(
    config: ml_collections.ConfigDict,
    progress: Callable[[str], None] = logging.info,
    trainer: anneal_arms.Trainer = anneal_arms.train_subprocess,
    scorer: Scorer | None = None,
) -> dict[str, Any]:
    """Runs the search's slice; without a slice (or with merge) also fits, proposes, proves and reports."""
    validate(config)
    anneal_arms.resolve_paths(config)
    out = fs.makedirs(config.output_dir)
    scorer = scorer or anneal_eval.item_scorer(config)
    branch = anneal_arms.branch_step(config)  # once: a base run may save a checkpoint meanwhile
    general = general_weights(config, branch)
    arms = plan(config, general)
    plan_path = fs.join(out, "plan.json")
    hashes = anneal_eval.study_inputs(config)
    recorded = inputs.read_recorded(plan_path)
    if recorded is not None:  # first: a study on other data is refused naming what changed
        inputs.check_same(recorded, hashes, out)
    planned = json.dumps(
        {
            "arms": [{k: a.get(k) for k in ("name", "weights", "optim", "data_seed")} for a in arms],
            "branch": {"from_workdir": config.from_workdir, "step": branch},
            "anneal": {k: config[k] for k in ("anneal_steps", "eval_every")},
            "inputs": hashes,
        },
        sort_keys=True,
    )
    if fs.exists(plan_path) and fs.read_text(plan_path) != planned:
        raise checks.ConfigError(
            f"config.output_dir: {out} holds another search (its plan.json differs: other arms, "
            "seed, bounds, branch point or anneal length); use another directory"
        )
    fs.write_text_atomic(plan_path, planned)
    i, n = parse_slice(config.search.arms_slice)
    t0 = time.perf_counter()
    if not config.search.merge:
        mine = arms[i::n]
        progress(f"search: {len(mine)} of {len(arms)} arms (slice {i}/{n}) on seeds {list(config.seeds)}")
        run_and_score(config, mine, list(config.seeds), trainer, scorer, progress)
        if config.search.arms_slice:
            done = sum(all(read_scores(out, a["name"], s) for s in config.seeds) for a in arms)
            return {
                "slice": f"{i}/{n}",
                "arms": [a["name"] for a in mine],
                "scored": done,
                "total": len(arms),
            }
    missing = [a["name"] for a in arms for s in config.seeds if read_scores(out, a["name"], s) is None]
    if missing:
        raise checks.ConfigError(
            f"search.merge: {len(missing)} arm x seed scores are missing ({', '.join(missing[:8])}"
            f"{'...' if len(missing) > 8 else ''}); run the slices that hold them first"
        )
    noise_rows = search_noise(config, [a for a in arms if in_fit(config, a, general)])
    decided_on = metrics_needed(config)
    low = noise.below_floor(noise_rows, ["objective"], config.search.snr_floor)
    if low and not config.search.allow_low_snr:
        progress(
            f"no decision: the objective's SNR {noise_rows['objective']['snr']:.2f} is below "
            f"search.snr_floor {config.search.snr_floor:g} (--config.search.allow_low_snr=true fits anyway)"
        )
        outcomes = controls.judge(config, decided_on, interval_on(config, list(config.seeds)))
        decision = decide(config, noise_rows, outcomes, None)
        return mixture_report.write(
            config,
            arms,
            None,
            None,
            None,
            None,
            costs_of(config, arms, None),
            time.perf_counter() - t0,
            noise_rows,
            outcomes,
            decision,
            hashes,
        )
    progress("fitting loss(weights) per metric and proposing a mixture")
    fitted = fit_and_propose(config, arms, general)
    proposal = fitted["proposal"]
    if not proposal["feasible"]:
        raise checks.ConfigError(
            "search.constraints: no mixture within the bounds meets them by the fitted models"
        )
    paths = write_proposal(config, general, proposal["weights"])
    best = best_sampled(config, fitted)
    contenders = [a["name"] for a in config.arms if not controls.is_control(a)] + [best]
    proof_arms = [a for a in config.arms] + [a for a in arms if a["name"] == best]
    name = proposal_name(proposal["weights"])
    proof_arms.append(dict(name=name, weights=proposal["weights"], optim={}))
    progress(
        f"proof: {', '.join(a['name'] for a in proof_arms)} on fresh seeds {list(config.search.proof_seeds)}"
    )
    run_and_score(config, proof_arms, list(config.search.proof_seeds), trainer, scorer, progress)
    proof = prove(config, contenders, name)
    outcomes = controls.judge(config, decided_on, interval_on(config, list(config.search.proof_seeds)))
    decision = decide(config, noise_rows, outcomes, proof)
    return mixture_report.write(
        config,
        arms,
        fitted,
        best,
        proof,
        paths,
        costs_of(config, arms, proof),
        time.perf_counter() - t0,
        noise_rows,
        outcomes,
        decision,
        hashes,
    )


def main(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    del argv
    result = search(config, progress=lambda line: print(line, flush=True))
    if "markdown" in result:
        print(result["markdown"])
        print(f"report: {result['paths']}")
    else:
        print(
            f"slice {result['slice']}: {len(result['arms'])} arms; {result['scored']}/{result['total']} scored"
        )


def run() -> None:
    """Console-script entry point."""
    cli.run(
        main,
        doc=__doc__,
        default_config="anneal/search_demo.py",
        shortcuts=[
            cli.Shortcut("from_workdir", help="Branch from this workdir's checkpoint instead of a prefix"),
            cli.Shortcut(
                "output",
                "output_dir",
                "Where arms, scores, the proposal and the report go",
                deprecated=("output_dir",),
            ),
            cli.Shortcut("arms", "search.arms_slice", help="i/n: run only this slice of the arms, then stop"),
            cli.Shortcut(
                "merge", "search.merge", help="Train no search arm: fit the scored ones, prove, report"
            ),
        ],
        required=["output_dir"],
    )


if __name__ == "__main__":
    run()
