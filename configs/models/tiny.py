"""Tiny Gemma-shaped model for the CPU demo and tests (MQA like the 2B).

The one tiny model: tests and the CPU benchmark start from it and override sizes.
"""

import ml_collections

from pretrain.model.transformer import config_dict


def get_config() -> ml_collections.ConfigDict:
    return config_dict(
        vocab_size=1024,
        num_layers=2,
        embed_dim=128,
        num_heads=4,
        num_kv_heads=1,
        head_dim=32,
        hidden_dim=512,
        rope_base=10_000.0,
        max_seq_len=512,
        dtype="float32",
        param_dtype="float32",
        remat_policy="none",
    )
