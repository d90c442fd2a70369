"""Gemma 3 4B, its language model only: 34 layers, 5 local (window 1024) : 1 global, GQA 8/4.

Numbers: Hugging Face google/gemma-3-4b-pt config.json, `text_config` (transformers'
Gemma3TextConfig fields: hidden_size 2560, intermediate_size 10240, num_attention_heads 8,
num_key_value_heads 4, head_dim 256, query_pre_attn_scalar 256, sliding_window 1024,
sliding_window_pattern 6, rope_theta 1000000 with rope_scaling linear factor 8 on the
global layers, rope_local_base_freq 10000, vocab_size 262208, max_position_embeddings
131072) and the Gemma 3 report (arXiv:2503.19786, Table 1: 3,209M non-embedding
parameters). 3,880,263,168 parameters (the vision tower is not built).
"""

import ml_collections

from configs.models.gemma3_1b import GEMMA3_PATTERN
from pretrain.model.transformer import config_dict, repeat_pattern


def get_config() -> ml_collections.ConfigDict:
    return config_dict(
        vocab_size=262_208,
        num_layers=34,
        embed_dim=2560,
        num_heads=8,
        num_kv_heads=4,
        head_dim=256,
        hidden_dim=10_240,
        rope_base=1_000_000.0,
        local_rope_base=10_000.0,
        rope_scale_factor=8.0,
        max_seq_len=131_072,
        attention_pattern=repeat_pattern(GEMMA3_PATTERN, 34),  # 5 repeats and 4 local layers
        sliding_window=1024,
        qk_norm=True,
        post_norms=True,
        query_pre_attn_scalar=256.0,
        dtype="bfloat16",
        param_dtype="float32",
        remat_policy="full",
    )
