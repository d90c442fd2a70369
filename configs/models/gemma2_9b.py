"""Gemma 2 9B: 42 layers alternating local (window 4096) and global attention, GQA 16/8 heads.

Numbers: Hugging Face google/gemma-2-9b config.json (transformers' Gemma2Config fields:
hidden_size 3584, intermediate_size 14336, num_attention_heads 16, num_key_value_heads 8,
head_dim 256, query_pre_attn_scalar 256, sliding_window 4096, attn_logit_softcapping 50,
final_logit_softcapping 30, rope_theta 10000, vocab_size 256000) and the Gemma 2 report
(arXiv:2408.00118, Table 1). 9,241,705,984 parameters.
"""

import ml_collections

from pretrain.model.transformer import config_dict


def get_config() -> ml_collections.ConfigDict:
    return config_dict(
        vocab_size=256_000,
        num_layers=42,
        embed_dim=3584,
        num_heads=16,
        num_kv_heads=8,
        head_dim=256,
        hidden_dim=14_336,
        rope_base=10_000.0,
        max_seq_len=8192,
        attention_pattern="local,global",
        sliding_window=4096,
        attn_logit_softcap=50.0,
        final_logit_softcap=30.0,
        post_norms=True,
        query_pre_attn_scalar=256.0,
        dtype="bfloat16",
        param_dtype="float32",
        remat_policy="full",
    )
