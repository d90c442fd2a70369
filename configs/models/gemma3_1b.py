"""Gemma 3 1B (text): 26 layers, 5 local (window 512) : 1 global, MQA, 262144-row vocabulary.

Numbers: Hugging Face google/gemma-3-1b-pt config.json (transformers' Gemma3TextConfig
fields: hidden_size 1152, intermediate_size 6912, num_attention_heads 4,
num_key_value_heads 1, head_dim 256, query_pre_attn_scalar 256, sliding_window 512,
sliding_window_pattern 6, rope_theta 1000000, rope_local_base_freq 10000, no rope_scaling,
vocab_size 262144, max_position_embeddings 32768) and the Gemma 3 report
(arXiv:2503.19786, Table 1: 302M embedding + 698M non-embedding). 999,885,952 parameters.
26 layers are 4 repeats of the 6-layer pattern and 2 local layers (HF's layer_types), so
its attention_pattern lists every layer; the trainer scans the 6-layer period 4 times.
"""

import ml_collections

from pretrain.model.transformer import config_dict, repeat_pattern

GEMMA3_PATTERN = ",".join(["local"] * 5 + ["global"])


def get_config() -> ml_collections.ConfigDict:
    return config_dict(
        vocab_size=262_144,
        num_layers=26,
        embed_dim=1152,
        num_heads=4,
        num_kv_heads=1,
        head_dim=256,
        hidden_dim=6912,
        rope_base=1_000_000.0,
        local_rope_base=10_000.0,
        max_seq_len=32_768,
        attention_pattern=repeat_pattern(GEMMA3_PATTERN, 26),
        sliding_window=512,
        qk_norm=True,
        post_norms=True,
        query_pre_attn_scalar=256.0,
        dtype="bfloat16",
        param_dtype="float32",
        remat_policy="none",
    )
