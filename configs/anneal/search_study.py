"""The mixture search of bench/RESULTS.md: the anneal study's setup (configs/anneal/study.py),
searched instead of guessed.

Data: `bench/mixture_search_study.py` (the data stages of bench/anneal_study.py) under OUT,
or DIR in `--config=configs/anneal/search_study.py:DIR`. The arms read the classifier-chosen
pack (OUT/packed_reference), so the hand-written recipe (b) `hq_reference_mc` is one point
of the searched space; the reference is the general mixture. Objective: the math and code
probes (GSM8K + MATH, HumanEval + MBPP), subject to the web validation split staying within
1% of the general arm's. Two seeds per arm (the fit and the SNR floor need the seed noise),
the null and positive controls of configs/anneal/study.py.

The training config is a field: `--config=configs/anneal/search_study.py:DIR,TRAIN` takes
configs/train/TRAIN.py (e.g. `gpu_2b`, `tpu_v5e_2b`) for the prefix and every arm, with the
data paths under DIR, so the same command gives the larger-scale answer on an accelerator.
"""

from __future__ import annotations

import importlib
import os

from configs.anneal import demo, search_demo, study

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOSTLY_MATH = {"web": 0.1, "math": 0.8, "code": 0.1}  # the positive control's annealing mixture
EVAL_DIR = os.path.join(
    os.environ.get("SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data")), "eval"
)


def get_config(arg: str = ""):
    out, _, train = arg.partition(",")
    root = out or study.OUT
    c = study.get_config(root)
    c.output_dir = f"{root}/search"
    c.seeds = (0, 1)
    c.eval_every = c.anneal_steps  # no curves: one validation at the end of every arm
    if train:  # another training setup (model, mesh, batch, steps) on the study's data and mixture
        accelerator = importlib.import_module(f"configs.train.{train}").get_config()
        accelerator.workdir, accelerator.data.tokenizer = c.train.workdir, c.train.data.tokenizer
        accelerator.mixture = c.train.mixture
        accelerator.mixture.seq_len = accelerator.data.seq_len
        # The study's prefix is its own short WSD stable phase: the warmup must fit in it.
        accelerator.optim.warmup_steps = min(accelerator.optim.warmup_steps, c.prefix_steps)
        c.train = accelerator
    c.train.data.packed_dir = f"{root}/packed_reference"
    c.arms = [
        dict(name="general", weights=None, optim={}),
        dict(name="hq_reference_mc", weights=study.MATH_CODE, optim={}),  # recipe (b)
        demo.NULL_CONTROL,
        # Annealing on mostly mathematics (the corpus's is LaTeX: two books) lowers the bits per
        # byte of MATH's worked solutions (LaTeX too); measured at this size in bench/RESULTS.md.
        demo.positive_control("math_bpb/bpb", MOSTLY_MATH),
    ]
    # Downstream metrics beside the loss probes (studies.downstream): ARC-Easy in lm-eval's cloze
    # form (prob_correct, logprob_per_char, acc, acc_norm) and MATH's solutions in bits per byte.
    c.downstream.update(dict(tasks=("arc_easy", "math_bpb"), eval_dir=EVAL_DIR, limit=80))
    # Sized for ~30 minutes on 2 idle cores (bench/RESULTS.md, issue 34: measured per-run CPU):
    # 4 sampled arms + the 4 of config.arms on 2 seeds, then 6 proof arms on 2 fresh seeds;
    # 50 items per probe set. A larger machine: --config.search.arms=10 --config.search.holdout=3.
    c.probes.max_items = 50
    c.search = search_demo.search_config()
    c.search.update(dict(arms=4, holdout=1, proof_seeds=(100, 101)))
    c.search.objective = {"math_probes": 1.0, "code_probes": 1.0}
    c.search.constraints = [dict(metric="val_web", tolerance=0.01)]
    return c
