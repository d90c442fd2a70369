"""The mixture search of bench/RESULTS.md: the anneal study's setup (configs/anneal/study.py),
searched instead of guessed.

Data: `bench/mixture_search_study.py` (the data stages of bench/anneal_study.py) under OUT,
or DIR in `--config=configs/anneal/search_study.py:DIR`. The arms read the classifier-chosen
pack (OUT/packed_reference), so the hand-written recipe (b) `hq_reference_mc` is one point
of the searched space; the reference is the general mixture. Objective: the math and code
probes (GSM8K + MATH, HumanEval + MBPP), subject to the web validation split staying within
1% of the general arm's.
"""

from __future__ import annotations

from configs.anneal import search_demo, study


def get_config(out: str = ""):
    root = out or study.OUT
    c = study.get_config(root)
    c.output_dir = f"{root}/search"
    c.seeds = (0,)
    c.eval_every = c.anneal_steps  # no curves: one validation at the end of every arm
    c.train.data.packed_dir = f"{root}/packed_reference"
    c.arms = [
        dict(name="general", weights=None, optim={}),
        dict(name="hq_reference_mc", weights=study.MATH_CODE, optim={}),  # recipe (b)
    ]
    c.search = search_demo.search_config()
    c.search.update(dict(arms=14, holdout=4, proof_seeds=(100, 101)))
    c.search.objective = {"math_probes": 1.0, "code_probes": 1.0}
    c.search.constraints = [dict(metric="val_web", tolerance=0.01)]
    return c
