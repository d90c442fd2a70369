"""Gemma 7B (technical report, Table 1): 28 layers, d_model 3072, 16 heads (MHA), 256128-row vocabulary."""

import ml_collections

from pretrain.model.transformer import config_dict


def get_config() -> ml_collections.ConfigDict:
    return config_dict(
        vocab_size=256_128,
        num_layers=28,
        embed_dim=3072,
        num_heads=16,
        num_kv_heads=16,
        head_dim=256,
        hidden_dim=24_576,
        rope_base=10_000.0,
        max_seq_len=8192,
        dtype="bfloat16",
        param_dtype="float32",
        remat_policy="full",
    )
