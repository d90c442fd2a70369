"""Full-size schedule: web/code/math pretraining mix, annealed to high-quality data over the last 10%.

The last 2% before the switch ramps linearly (interpolate=True) so the loss sees no jump.
"""

import ml_collections

from configs.mixtures import base


def get_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.tasks = ["web", "math", "code", "web_hq", "math_hq", "code_hq"]
    general = {"web": 0.6, "code": 0.25, "math": 0.15}
    cfg.stages = [
        dict(name="general", start=0.0, weights=general, interpolate=False),
        dict(name="ramp", start=0.88, weights=general, interpolate=True),
        dict(
            name="anneal",
            start=0.9,
            weights={"web_hq": 0.4, "math_hq": 0.3, "code_hq": 0.3},
            interpolate=False,
        ),
    ]
    cfg.seq_len = 8192
    cfg.bos = "document"
    cfg.seed = 0  # document shuffle (mixtures.pack) and row assignment (mixtures.stream)
    cfg.pack = base.pack_config()
    return cfg
