"""configs/train/gpu_2b.py on synthetic rows, as bench/gpu_throughput.py runs it.

Only what a benchmark needs differs: synthetic rows packed with ~1.2k-token documents
(about what mixtures.pack makes of web pages), no mixture stages (their step boundaries
need a long run), a 1-step warm-up, no checkpoints and no TensorBoard (the GPU machines
it ran on have no TensorFlow).
"""

import ml_collections

from configs.train import gpu_2b


def get_config(gpus: str = "1") -> ml_collections.ConfigDict:
    c = gpu_2b.get_config(gpus)
    c.mixture = ml_collections.ConfigDict()
    c.data.synthetic = True
    c.data.synthetic_document_tokens = 1200
    c.train.total_steps = 10
    c.train.log_every = 2
    c.optim.warmup_steps = 1
    c.optim.decay_start = "0.8"
    c.checkpoint.every_steps = 0
    c.metrics.tensorboard = False
    return c
