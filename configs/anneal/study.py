"""The anneal study of bench/RESULTS.md: does annealing to high-quality data help, at CPU scale?

Run by `bench/anneal_study.py`, which builds the data this config points at (OUT, or DIR
in `--config=configs/anneal/study.py:DIR`): the demo corpus prepared twice, decontaminated against every probe set, with
two ways of choosing the high-quality subsets:

- OUT/prep_heuristic (packed: OUT/packed_heuristic): `high_quality` = top 30% of each domain
  by the heuristic score (data_pipeline/quality/heuristic.py), the project's default and the
  demo's recipe;
- OUT/prep_reference (packed: OUT/packed_reference): top 30% of each domain by a classifier
  (data_pipeline.quality.classifier) trained to tell reference text (GSM8K *train* question+answer, MBPP *train* problems+solutions,
  Wikipedia articles) from the corpus: the DCLM / OpenWebMath way of choosing data that
  looks like what the model should be good at. The probes use the *test* splits.

Arms (all from the same prefix, same decay), as issue 15 names them:
(a) `general`: the general mixture (the reference);
    `hq_heuristic`: the demo's anneal to the heuristic subsets (today's default recipe);
(b) `hq_reference_mc`: the classifier-chosen subsets with math and code upweighted
    (Llama 3 anneals on code and math);
(c) `candidate_gsm8k_train`: (b) at 70% plus a candidate dataset at 30%, GSM8K *train*
    word problems prepared like any math corpus (OUT/prep_candidate, packed as the extra
    task `gsm8k_train`): Llama 3's "is this dataset worth it" probe, judged against (b).
"""

from __future__ import annotations

from configs.anneal import demo

OUT = "runs/anneal_study"
HQ = {"web_hq": 0.4, "math_hq": 0.3, "code_hq": 0.3}
MATH_CODE = {"web_hq": 0.3, "math_hq": 0.35, "code_hq": 0.35}
CANDIDATE_SHARE = 0.3


def get_config(out: str = ""):
    """`--config=configs/anneal/study.py:DIR` puts everything under DIR instead of OUT."""
    root = out or OUT
    c = demo.get_config()
    c.output_dir = f"{root}/study"
    c.seeds = (0, 1, 2)
    c.prefix_steps = 240
    c.anneal_steps = 60
    c.eval_every = 20
    c.prep_dir = f"{root}/prep_heuristic"  # held-out documents; the same in both preps
    c.train.data.packed_dir = f"{root}/packed_heuristic"
    c.train.data.tokenizer = f"{root}/tokenizer/tokenizer.model"
    c.train.metrics.peak_flops = 1e12  # skip the CPU matmul probe in every run
    c.train.train.compilation_cache_dir = f"{root}/xla_cache"  # arms reuse the prefix's programs
    c.arms = [
        dict(name="general", weights=None, optim={}),
        dict(name="hq_heuristic", weights=HQ, optim={}),
        dict(name="hq_reference_mc", weights=MATH_CODE, optim={}, packed_dir=f"{root}/packed_reference"),
        dict(
            name="candidate_gsm8k_train",
            weights={
                **{k: round(v * (1 - CANDIDATE_SHARE), 6) for k, v in MATH_CODE.items()},
                "gsm8k_train": CANDIDATE_SHARE,
            },
            optim={},
            packed_dir=f"{root}/packed_reference",
            versus="hq_reference_mc",
        ),
    ]
    c.probes.sets = {
        "gsm8k": f"{root}/probes/gsm8k_test.jsonl",
        "math": f"{root}/probes/math_test.jsonl",
        "humaneval": "builtin",
        "mbpp": f"{root}/probes/mbpp_test.jsonl",
        "mmlu": f"{root}/probes/mmlu_test.jsonl",
        "web": f"{root}/probes/web_pages.jsonl",
    }
    c.probes.max_items = 150
    c.probes.validation_docs = 0  # all of them
    c.probes.groups = {"math_probes": ["gsm8k", "math"], "code_probes": ["humaneval", "mbpp"]}
    c.verdict.lower = ["math_probes", "code_probes"]
    c.verdict.level = ["web", "val_web"]
    return c
