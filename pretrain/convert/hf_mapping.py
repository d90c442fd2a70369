"""One table mapping Flax Gemma parameters to Hugging Face `GemmaForCausalLM` tensors.

Export and import both read this table, so the two directions cannot drift apart.
PyTorch `nn.Linear` stores weights as [out, in]; the Flax einsums keep heads as their own
axis, so each rule is a transpose + reshape (and its exact inverse). Both RMSNorms use
`x * (1 + w)`, so norm scales copy unchanged; the output layer is tied to the embedding.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pretrain.model.transformer import TransformerConfig

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
    for i in range(config.num_layers):
        src, dst = f"layer_{i}", f"model.layers.{i}"
        table.append(_identity((src, "pre_attention_norm", "scale"), f"{dst}.input_layernorm.weight"))
        attn = f"{dst}.self_attn"
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
        table.append(_identity((src, "pre_ffw_norm", "scale"), f"{dst}.post_attention_layernorm.weight"))
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


def hf_config(config: TransformerConfig, hf_vocab_size: int, torch_dtype: str) -> dict[str, Any]:
    """config.json for transformers' GemmaConfig (fields of both transformers 4.x and 5.x)."""
    return {
        "architectures": ["GemmaForCausalLM"],
        "model_type": "gemma",
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


def model_config_from_hf(hf: dict[str, Any], vocab_size: int | None = None, **overrides) -> TransformerConfig:
    """TransformerConfig of an HF Gemma config.json; `vocab_size` may pad the embedding (e.g. 256128)."""
    if hf.get("model_type") != "gemma":
        raise ValueError(f"the HF config.json: model_type must be 'gemma', got {hf.get('model_type')!r}")
    act = hf.get("hidden_activation") or hf.get("hidden_act")
    if act not in ("gelu_pytorch_tanh", "gelu"):  # "gelu" in the released configs means tanh GELU
        raise ValueError(f"the HF config.json: hidden_activation {act!r} is not Gemma's tanh GELU")
    rope = (hf.get("rope_parameters") or {}).get("rope_theta", hf.get("rope_theta", 10_000.0))
    return TransformerConfig(
        vocab_size=vocab_size or hf["vocab_size"],
        num_layers=hf["num_hidden_layers"],
        embed_dim=hf["hidden_size"],
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]),
        head_dim=hf.get("head_dim", hf["hidden_size"] // hf["num_attention_heads"]),
        hidden_dim=hf["intermediate_size"],
        rope_base=float(rope),
        max_seq_len=hf.get("max_position_embeddings", 8192),
        **overrides,
    )
