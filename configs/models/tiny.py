"""Tiny Gemma-shaped models for the CPU demo and tests, one per family (MQA like the 2B).

The one tiny model: tests and the CPU benchmark start from it and override sizes.
`get_config("gemma2")` / `get_config("gemma3")` give the same sizes with the Gemma 2 / 3
architecture (`family_fields`): a sliding window of 64, shorter than the demo's 256-token
rows, so local layers mask for real; Gemma 3 needs 6 layers for its 5 local : 1 global
pattern and takes Gemma 3 4B's RoPE (1M / 10k bases, linear scaling 8 on global layers).
"""

from typing import Any

import ml_collections

from configs.models.gemma3_1b import GEMMA3_PATTERN
from pretrain.model.transformer import config_dict

FAMILIES = ("gemma", "gemma2", "gemma3")


def family_fields(family: str, sliding_window: int = 64, head_dim: int = 32) -> dict[str, Any]:
    """The TransformerConfig fields that make a model of `family` (Gemma 1 needs none)."""
    if family not in FAMILIES:
        raise ValueError(f"config.model family: must be one of {FAMILIES}, got {family!r}")
    if family == "gemma":
        return {}
    shared = dict(sliding_window=sliding_window, post_norms=True, query_pre_attn_scalar=float(head_dim))
    if family == "gemma2":
        return shared | dict(
            attention_pattern="local,global", attn_logit_softcap=50.0, final_logit_softcap=30.0
        )
    return shared | dict(
        num_layers=6,
        attention_pattern=GEMMA3_PATTERN,
        qk_norm=True,
        rope_base=1_000_000.0,
        local_rope_base=10_000.0,
        rope_scale_factor=8.0,
    )


def get_config(family: str = "gemma") -> ml_collections.ConfigDict:
    return config_dict(
        **{
            "vocab_size": 1024,
            "num_layers": 2,
            "embed_dim": 128,
            "num_heads": 4,
            "num_kv_heads": 1,
            "head_dim": 32,
            "hidden_dim": 512,
            "rope_base": 10_000.0,
            "max_seq_len": 512,
            "dtype": "float32",
            "param_dtype": "float32",
            "remat_policy": "none",
            **family_fields(family),
        }
    )
