"""The CPU demo run of `make demo`: the tiny model on the demo prep output, two-stage mixture.

~3-4 minutes on 2 CPU cores; the loss falls from ~8.3 (uniform over 4096 tokens) and the
log shows the mixture switching to its high-quality stage. Paths are those `make demo`'s
earlier stages write (runs/demo/...). `--config.data.synthetic=True` trains on random
tokens instead, with no prepared data needed.

The model family is the config's argument: `--config=configs/train/demo_tiny_cpu.py:gemma3`
trains the tiny Gemma 3 (`gemma2`: Gemma 2; default `gemma`: Gemma 1; configs/models/tiny.py),
and so does `make demo DEMO_FAMILY=gemma3` for the whole demo, anneal study included.
"""

import ml_collections

from configs.mixtures import demo_two_stage
from configs.models import tiny
from configs.tokenizer import demo as demo_tokenizer
from configs.train import base


def get_config(family: str = "gemma") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.model = tiny.get_config(family)
    c.model.vocab_size = demo_tokenizer.get_config().spm.vocab_size  # one row per token id
    c.mixture = demo_two_stage.get_config()
    c.data.packed_dir = "runs/demo/packed"
    c.data.prep_dir = "runs/demo/prep"
    c.data.tokenizer = "runs/demo/tokenizer/tokenizer.model"
    c.data.seq_len = 256
    c.data.global_batch_size = 8
    c.train.total_steps = 450
    c.train.log_every = 10
    c.train.z_loss = 1e-4
    c.optim.schedule = "wsd"  # decay over the mixture's annealing stage
    c.optim.decay_start = "anneal"
    c.optim.peak_lr = 3e-3
    c.optim.warmup_steps = 20
    c.eval.every_steps = 100  # held-out loss on each domain's validation split
    c.eval.batches = 2
    c.downstream.every_steps = 150  # downstream.tasks: set by make demo (its docstring set)
    c.downstream.limit = 100
    c.checkpoint.every_steps = 25
    c.checkpoint.keep_last = 3
    c.checkpoint.keep_every = 100
    return c
