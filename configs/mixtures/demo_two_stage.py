"""Demo mixture: a general mix of the three domains, then their high-quality subsets for the last 20%."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.tasks = ["web", "math", "code", "web_hq", "math_hq", "code_hq"]
    cfg.stages = [
        dict(name="general", start=0.0, weights={"web": 0.6, "code": 0.25, "math": 0.15}, interpolate=False),
        dict(name="anneal", start=0.8, weights={"web_hq": 0.4, "math_hq": 0.3, "code_hq": 0.3}, interpolate=False),
    ]
    cfg.seq_len = 256  # the tiny CPU model's context; the trainer may override it
    cfg.bos = "document"  # "document": <bos> before every document; "none": no <bos>
    cfg.seed = 0
    return cfg
