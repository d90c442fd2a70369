"""Tiny Gemma-shaped model on synthetic data: the CPU throughput benchmark (issue 6).

emb 256, 4 layers, 4 query heads, 1 key/value head, head_dim 64, MLP 1024, vocab 32000,
seq 256, batch 8, bf16 activations (fp32 master weights). The same shape is used for
the MaxText comparison in bench/train_throughput.py.
"""

import ml_collections

from configs.models import tiny
from configs.train import base


def get_config() -> ml_collections.ConfigDict:
    c = base.get_config()
    c.model = tiny.get_config()
    c.model.update(
        dict(
            vocab_size=32_000,
            num_layers=4,
            embed_dim=256,
            head_dim=64,
            hidden_dim=1024,
            max_seq_len=256,
            dtype="bfloat16",
        )
    )
    c.model.vocab_chunks = 16  # fused cross-entropy: 2000-entry chunks of logits stay in cache
    c.data.synthetic = True
    c.data.seq_len = 256
    c.data.global_batch_size = 8
    c.train.total_steps = 50
    c.train.log_every = 10
    c.optim.warmup_steps = 10
    c.optim.peak_lr = 1e-3
    c.checkpoint.every_steps = 1000  # the final step is always saved
    return c
