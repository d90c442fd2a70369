"""Tiny Gemma-shaped model on synthetic data: the CPU throughput benchmark (issue 6).

emb 256, 4 layers, 4 query heads, 1 key/value head, head_dim 64, MLP 1024, vocab 32000,
seq 256, batch 8, bf16 activations (fp32 master weights). The same shape is used for
the MaxText comparison in bench/train_throughput.py. `:gemma3` (or `:gemma2`) gives that
family at the same parameter count to 0.3%: Gemma 3 takes 6 layers (its 5 local : 1 global
pattern, window 64 of the 256-token rows) with MLP 608 (3,791,616 block parameters against
Gemma 1's 3,803,136); Gemma 2 keeps the 4 layers.
"""

import ml_collections

from configs.models import tiny
from configs.train import base


def get_config(family: str = "gemma") -> ml_collections.ConfigDict:
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
    c.model.update(tiny.family_fields(family, sliding_window=64, head_dim=64))
    if family == "gemma3":
        c.model.hidden_dim = 608
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
