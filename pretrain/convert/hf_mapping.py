"""One table mapping Flax Gemma parameters to Hugging Face `GemmaForCausalLM`,
`Gemma2ForCausalLM` and `Gemma3ForCausalLM` (text) tensors, and the config.json of each.

The family follows from the model config (`hf_family`): query/key norms make a Gemma 3,
post-norms without them a Gemma 2, neither a Gemma 1.
Export and import both read this table, so the two directions cannot drift apart.
PyTorch `nn.Linear` stores weights as [out, in]; the Flax einsums keep heads as their own
axis, so each rule is a transpose + reshape (and its exact inverse). Both RMSNorms use
`x * (1 + w)`, so norm scales copy unchanged; the output layer is tied to the embedding.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pretrain.model.transformer import TransformerConfig, shortest_period

Array = Any  # numpy or jax array: rules only use methods both have.


@dataclasses.dataclass(frozen=True)
class Rule:
    """One Flax leaf <-> one or more HF tensors."""

    flax_path: tuple[str, ...]
    hf_names: tuple[str, ...]
    to_hf: Callable[[Array], tuple[Array, ...]]
    from_hf: Callable[[Sequence[Array]], Array]


def _identity(path: tuple[str, ...], name: str) -> Rule:
    return Rule(path, (name,), lambda w: (w,), lambda ts: ts[0])


def _heads_in(n: int, d: int, h: int) -> tuple[Callable, Callable]:
    """[N, D, H] einsum weight <-> [N*H, D] Linear weight (q, k, v projections)."""
    return (lambda w: w.transpose(0, 2, 1).reshape(n * h, d), lambda t: t.reshape(n, h, d).transpose(0, 2, 1))


def rules(config: TransformerConfig, hf_vocab_size: int) -> list[Rule]:
    """Every parameter of `config`'s model, in file order (embedding, layers, final norm).

    The embedding keeps its first `hf_vocab_size` rows on export (the tokenizer's size);
    import pads back to `config.vocab_size` rows with zeros.
    """
    if hf_vocab_size > config.vocab_size:
        raise ValueError(
            f"tokenizer has {hf_vocab_size} pieces but the model only {config.vocab_size} embedding rows"
        )
    n, k, d, h = config.num_heads, config.num_kv_heads, config.embed_dim, config.head_dim
    pad = config.vocab_size - hf_vocab_size

    def embed_from_hf(ts):
        return np.pad(np.asarray(ts[0]), ((0, pad), (0, 0))) if pad else ts[0]

    table = [
        Rule(
            ("embedder", "input_embedding"),
            ("model.embed_tokens.weight",),
            lambda w: (w[:hf_vocab_size],),
            embed_from_hf,
        )
    ]
    q_to, q_from = _heads_in(n, d, h)
    kv_to, kv_from = _heads_in(k, d, h)
    # Gemma 1 names its second norm post_attention_layernorm; Gemma 2/3 have four per layer.
    pre_ffw = "pre_feedforward_layernorm" if config.post_norms else "post_attention_layernorm"
    for i in range(config.num_layers):
        src, dst = f"layer_{i}", f"model.layers.{i}"
        table.append(_identity((src, "pre_attention_norm", "scale"), f"{dst}.input_layernorm.weight"))
        attn = f"{dst}.self_attn"
        if config.qk_norm:
            table.append(_identity((src, "attn", "query_norm", "scale"), f"{attn}.q_norm.weight"))
            table.append(_identity((src, "attn", "key_norm", "scale"), f"{attn}.k_norm.weight"))
        qkv_names = (f"{attn}.q_proj.weight", f"{attn}.k_proj.weight", f"{attn}.v_proj.weight")
        if k == n:  # the reference fuses q, k, v into one weight when there are as many kv heads
            table.append(
                Rule(
                    (src, "attn", "qkv_einsum", "w"),
                    qkv_names,
                    lambda w: tuple(q_to(w[j]) for j in range(3)),
                    lambda ts: _stack([q_from(t) for t in ts]),
                )
            )
        else:
            table.append(
                Rule(
                    (src, "attn", "q_einsum", "w"),
                    qkv_names[:1],
                    lambda w: (q_to(w),),
                    lambda ts: q_from(ts[0]),
                )
            )
            table.append(
                Rule(
                    (src, "attn", "kv_einsum", "w"),
                    qkv_names[1:],
                    lambda w: (kv_to(w[0]), kv_to(w[1])),
                    lambda ts: _stack([kv_from(t) for t in ts]),
                )
            )
        table.append(
            Rule(
                (src, "attn", "attn_vec_einsum", "w"),
                (f"{attn}.o_proj.weight",),
                lambda w: (w.reshape(n * h, d).T,),
                lambda ts: ts[0].T.reshape(n, h, d),
            )
        )
        if config.post_norms:
            table.append(
                _identity((src, "post_attention_norm", "scale"), f"{dst}.post_attention_layernorm.weight")
            )
        table.append(_identity((src, "pre_ffw_norm", "scale"), f"{dst}.{pre_ffw}.weight"))
        if config.post_norms:
            table.append(
                _identity((src, "post_ffw_norm", "scale"), f"{dst}.post_feedforward_layernorm.weight")
            )
        mlp = f"{dst}.mlp"
        table.append(
            Rule(
                (src, "mlp", "gating_einsum"),
                (f"{mlp}.gate_proj.weight", f"{mlp}.up_proj.weight"),
                lambda w: (w[0].T, w[1].T),
                lambda ts: _stack([t.T for t in ts]),
            )
        )
        table.append(
            Rule((src, "mlp", "linear"), (f"{mlp}.down_proj.weight",), lambda w: (w.T,), lambda ts: ts[0].T)
        )
    table.append(_identity(("final_norm", "scale"), "model.norm.weight"))
    return table


def _stack(arrays: Sequence[Array]) -> Array:
    return np.stack([np.asarray(a) for a in arrays])


# model_type -> the CausalLM class transformers loads it as.
ARCHITECTURES = {
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
}
HF_LAYER_TYPES = {"local": "sliding_attention", "global": "full_attention"}


def hf_family(config: TransformerConfig) -> str:
    """The HF model_type that computes what `config` does; ValueError naming the field if none does."""
    family = "gemma3_text" if config.qk_norm else "gemma2" if config.post_norms else "gemma"

    def require(ok: bool, field: str, why: str) -> None:
        if not ok:
            raise ValueError(
                f"config.model.{field}: {getattr(config, field)!r} has no Hugging Face {family} equivalent ({why})"
            )

    if family == "gemma3_text":
        require(config.post_norms, "post_norms", "Gemma 3 has post-norms")
        return family
    require(config.local_rope_base in (0, config.rope_base), "local_rope_base", "one RoPE base")
    require(config.rope_scale_factor == 1, "rope_scale_factor", "no RoPE scaling")
    if family == "gemma":
        require(set(config.pattern) == {"global"}, "attention_pattern", "global attention only")
        for field in ("attn_logit_softcap", "final_logit_softcap"):
            require(not getattr(config, field), field, "no soft-capping")
        require(
            config.query_pre_attn_scalar in (0, config.head_dim), "query_pre_attn_scalar", "1/sqrt(head_dim)"
        )
    return family


def hf_config(config: TransformerConfig, hf_vocab_size: int, torch_dtype: str) -> dict[str, Any]:
    """config.json for transformers' GemmaConfig, Gemma2Config or Gemma3TextConfig (fields of
    both transformers 4.x and 5.x)."""
    family = hf_family(config)
    out = {
        "architectures": [ARCHITECTURES[family]],
        "model_type": family,
        "vocab_size": hf_vocab_size,
        "hidden_size": config.embed_dim,
        "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": 1e-6,
        "rope_theta": float(config.rope_base),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(config.rope_base)},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
        "torch_dtype": torch_dtype,
        "dtype": torch_dtype,
    }
    if family == "gemma":
        return out
    out.update(
        layer_types=[HF_LAYER_TYPES[kind] for kind in config.layer_kinds],
        sliding_window=config.sliding_window or config.max_seq_len,  # transformers needs one
        query_pre_attn_scalar=_int_if_whole(config.query_pre_attn_scalar or config.head_dim),
        attn_logit_softcapping=config.attn_logit_softcap or None,
        final_logit_softcapping=config.final_logit_softcap or None,
        use_bidirectional_attention=False,
    )
    if family == "gemma3_text":
        local_base = float(config.local_rope_base or config.rope_base)
        full = {"rope_type": "default", "rope_theta": float(config.rope_base)}
        scaling = None
        if config.rope_scale_factor != 1:
            scaling = {"rope_type": "linear", "factor": float(config.rope_scale_factor)}
            full.update(scaling)
        out.update(
            rope_parameters={
                "full_attention": full,
                "sliding_attention": {"rope_type": "default", "rope_theta": local_base},
            },
            rope_local_base_freq=local_base,  # transformers 4.x names
            rope_scaling=scaling,
            sliding_window_pattern=len(config.pattern),
        )
    return out


def _int_if_whole(value: float) -> int | float:
    """transformers types query_pre_attn_scalar as an int (its strict configs refuse 256.0)."""
    return int(value) if float(value).is_integer() else value


def _pattern(layer_types: Sequence[str]) -> str:
    """HF layer_types as an attention_pattern: their shortest period when it divides the
    layer count, else every layer's kind (Gemma 3 1B's cut-short last repeat)."""
    kinds = {value: key for key, value in HF_LAYER_TYPES.items()}
    unknown = sorted(set(layer_types) - set(kinds))
    if unknown:
        raise ValueError(f"the HF config.json: layer_types holds {unknown[0]!r}, not one of {sorted(kinds)}")
    ours = [kinds[t] for t in layer_types]
    period = shortest_period(ours)
    return ",".join(period if len(ours) % len(period) == 0 else ours)


def _family_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """The TransformerConfig fields a Gemma 2 / 3 config.json sets beyond Gemma 1's."""
    family = hf["model_type"]
    layers = hf["num_hidden_layers"]
    if family == "gemma":
        rope = (hf.get("rope_parameters") or {}).get("rope_theta", hf.get("rope_theta", 10_000.0))
        return {"rope_base": float(rope)}
    every = 2 if family == "gemma2" else hf.get("sliding_window_pattern", 6)  # HF's defaults
    layer_types = hf.get("layer_types") or [
        "sliding_attention" if (i + 1) % every else "full_attention" for i in range(layers)
    ]
    fields = {
        "attention_pattern": _pattern(layer_types),
        "sliding_window": int(hf.get("sliding_window") or 0) if "sliding_attention" in layer_types else 0,
        "query_pre_attn_scalar": float(hf.get("query_pre_attn_scalar", 256)),
        "attn_logit_softcap": float(hf.get("attn_logit_softcapping") or 0.0),
        "final_logit_softcap": float(hf.get("final_logit_softcapping") or 0.0),
        "post_norms": True,
        "qk_norm": family == "gemma3_text",
    }
    rope = hf.get("rope_parameters") or {}
    if family == "gemma2":
        fields["rope_base"] = float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))
        return fields
    full, local = rope.get("full_attention") or {}, rope.get("sliding_attention") or {}
    scaling = full if full.get("rope_type", "default") != "default" else hf.get("rope_scaling") or {}
    if scaling and scaling.get("rope_type", scaling.get("type")) != "linear":
        raise ValueError(
            f"the HF config.json: RoPE scaling {scaling!r} is not linear (the only kind supported)"
        )
    fields["rope_base"] = float(full.get("rope_theta", hf.get("rope_theta", 1_000_000.0)))
    fields["local_rope_base"] = float(local.get("rope_theta", hf.get("rope_local_base_freq", 10_000.0)))
    fields["rope_scale_factor"] = float(scaling.get("factor", 1.0)) if scaling else 1.0
    return fields


def model_config_from_hf(hf: dict[str, Any], vocab_size: int | None = None, **overrides) -> TransformerConfig:
    """TransformerConfig of an HF Gemma, Gemma 2 or Gemma 3 (text) config.json; `vocab_size`
    may pad the embedding (e.g. 256128)."""
    if hf.get("model_type") not in ARCHITECTURES:
        raise ValueError(
            f"the HF config.json: model_type must be one of {sorted(ARCHITECTURES)}, got {hf.get('model_type')!r}"
        )
    act = hf.get("hidden_activation") or hf.get("hidden_act")
    if act not in ("gelu_pytorch_tanh", "gelu"):  # "gelu" in the released configs means tanh GELU
        raise ValueError(f"the HF config.json: hidden_activation {act!r} is not Gemma's tanh GELU")
    return TransformerConfig(
        vocab_size=vocab_size or hf["vocab_size"],
        num_layers=hf["num_hidden_layers"],
        embed_dim=hf["hidden_size"],
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]),
        head_dim=hf.get("head_dim", hf["hidden_size"] // hf["num_attention_heads"]),
        hidden_dim=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 8192),
        **_family_fields(hf),
        **overrides,
    )
