"""Mixture search of the CPU demo: sampled annealing mixtures over the demo's six packed tasks.

`python -m studies.mixture_search --config=configs/anneal/search_demo.py --from_workdir=W
--output=S` branches every arm from W's checkpoint (`--config.from_step`), like
configs/anneal/demo.py, whose arms (the general mixture: the reference; the heuristic
high-quality recipe) are the hand-written recipes the search also runs and must beat.
"""

from __future__ import annotations

import ml_collections

from configs.anneal import demo


def search_config() -> ml_collections.ConfigDict:
    """The `search` section (shared with configs/anneal/search_study.py)."""
    return ml_collections.ConfigDict(
        dict(
            tasks=["web", "math", "code", "web_hq", "math_hq", "code_hq"],  # packed tasks the weights span
            center={},  # the Dirichlet's centre; empty: the prefix's general mixture
            concentration=6.0,  # Dirichlet concentration: higher keeps samples nearer the centre
            uniform_share=0.4,  # centre blended with uniform, so tasks the general mixture lacks are explored
            bounds={},  # task -> (low, high), e.g. {"web": (0.1, 0.8)}
            arms=12,  # sampled arms
            seed=0,  # the sampling (and the proposal's random search)
            holdout=4,  # the last N sampled arms are left out of the fit: the held-out rank correlation
            models=("gbt", "dml", "linear"),  # candidates, chosen per metric by cross-validated Spearman
            folds=10,  # k-fold cross-validation (leave-one-out when there are fewer arms)
            objective={"code": 1.0, "val_math": 1.0, "val_code": 1.0},  # minimise their weighted sum
            # metric <= reference arm's (the first of config.arms) x (1 + tolerance); an entry with
            # better="higher" (accuracies): metric >= reference arm's x (1 - tolerance)
            constraints=[dict(metric="val_web", tolerance=0.01)],
            trust_region=True,  # propose only within the range of weights the fitted arms span
            use_tolerance=0.75,  # the proposal may use this share of each constraint's tolerance
            margin=1.0,  # and stays this many of the constraint model's cross-validated RMSEs inside it
            proof_seeds=(100, 101),  # fresh seeds (>= 2): the proposal, the recipes and the best sampled arm
            # Refuse to fit an objective whose signal-to-noise ratio over the search arms
            # (studies.noise: arm range / pooled seed std) is below this: at 2 proof seeds the
            # minimum detectable difference is 2.8 seed stds, so below ~3 even the best and worst
            # arms searched could not be told apart on fresh seeds. The search then reports
            # "no decision" with what it measured. allow_low_snr=True fits anyway.
            snr_floor=3.0,
            allow_low_snr=False,
            bootstrap=1000,  # resamples of seeds and probe items
            confidence=0.95,
            anneal_start=0.8,  # where the written schedule's annealing stage starts (fraction of training)
            arms_slice="",  # "i/n" (--arms): run only this slice of the arms, then stop
            merge=False,  # (--merge=true) train no search arm; fit the scored ones, prove, report
        )
    )


def get_config() -> ml_collections.ConfigDict:
    c = demo.get_config()
    c.output_dir = "runs/demo/search"
    c.seeds = (0, 1)  # the fit needs the seed noise: at least two seeds per arm
    c.search = search_config()
    return c
