"""Gemma 2B (technical report, Table 1): 18 layers, d_model 2048, MQA, 256128-row vocabulary."""

import ml_collections

from pretrain.model.transformer import config_dict


def get_config() -> ml_collections.ConfigDict:
    return config_dict(
        vocab_size=256_128,
        num_layers=18,
        embed_dim=2048,
        num_heads=8,
        num_kv_heads=1,
        head_dim=256,
        hidden_dim=16_384,
        rope_base=10_000.0,
        max_seq_len=8192,
        dtype="bfloat16",
        param_dtype="float32",
        remat_policy="none",
    )
