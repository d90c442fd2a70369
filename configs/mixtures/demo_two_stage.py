"""Demo mixture: a general mix of the three domains, then their high-quality subsets for the last 20%."""

import ml_collections

from configs.mixtures import base


def get_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.tasks = ["web", "math", "code", "web_hq", "math_hq", "code_hq"]
    cfg.stages = [
        dict(name="general", start=0.0, weights={"web": 0.6, "code": 0.25, "math": 0.15}, interpolate=False),
        dict(
            name="anneal",
            start=0.8,
            weights={"web_hq": 0.4, "math_hq": 0.3, "code_hq": 0.3},
            interpolate=False,
        ),
    ]
    cfg.seq_len = 256  # rows are packed at this length; the trainer's data.seq_len must equal it
    cfg.bos = "document"  # "document": <bos> before every document; "none": no <bos>
    cfg.seed = 0  # document shuffle (mixtures.pack) and row assignment (mixtures.stream)
    cfg.pack = base.pack_config()
    return cfg
