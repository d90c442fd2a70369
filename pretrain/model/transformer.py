"""The Gemma decoder: `Transformer(config)(tokens, positions, segment_ids) -> logits`."""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pretrain.model import layers, modules

# Which intermediate values a rematerialised block keeps for the backward pass.
REMAT_POLICIES = {
    "none": None,  # no remat: keep everything
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of a Gemma model (names as in the reference's TransformerConfig)."""

    vocab_size: int
    num_layers: int
    embed_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_dim: int
    rope_base: float = 10_000.0
    max_seq_len: int = 8192  # only recorded in exports (max_position_embeddings)
    dtype: str = "float32"  # activations / matmul inputs
    param_dtype: str = "float32"  # master weights
    remat_policy: str = "none"

    def __post_init__(self):
        _validate(dataclasses.asdict(self), "TransformerConfig")

    @classmethod
    def from_config_dict(cls, cfg: Mapping[str, Any], where: str = "config.model") -> "TransformerConfig":
        """Builds from an ml_collections ConfigDict (or dict); unknown or missing fields are errors.

        `where` is the config path used in error messages, e.g. "config.model.num_heads: ...".
        """
        values = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown model field (known: {sorted(fields)})")
        for name, f in fields.items():
            if name not in values:
                if f.default is dataclasses.MISSING:
                    raise ValueError(f"{where}.{name}: required model field is missing")
                values[name] = f.default
        _validate(values, where)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def activation_dtype(self) -> jnp.dtype:
        return DTYPES[self.dtype]

    @property
    def weight_dtype(self) -> jnp.dtype:
        return DTYPES[self.param_dtype]


def _validate(values: Mapping[str, Any], where: str) -> None:
    """Raises ValueError naming the offending field as `{where}.{field}`."""
    for name in ("vocab_size", "num_layers", "embed_dim", "num_heads", "num_kv_heads",
                 "head_dim", "hidden_dim", "max_seq_len"):
        value = values[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{where}.{name}: must be a positive integer, got {value!r}")
    if values["num_heads"] % values["num_kv_heads"]:
        raise ValueError(f"{where}.num_kv_heads: must divide num_heads={values['num_heads']}, "
                         f"got {values['num_kv_heads']}")
    if values["head_dim"] % 2:
        raise ValueError(f"{where}.head_dim: must be even for RoPE, got {values['head_dim']}")
    if not isinstance(values["rope_base"], (int, float)) or not values["rope_base"] > 1:
        raise ValueError(f"{where}.rope_base: must be a number > 1, got {values['rope_base']!r}")
    for name in ("dtype", "param_dtype"):
        if values[name] not in DTYPES:
            raise ValueError(f"{where}.{name}: must be one of {sorted(DTYPES)}, got {values[name]!r}")
    if values["remat_policy"] not in REMAT_POLICIES:
        raise ValueError(f"{where}.remat_policy: must be one of {sorted(REMAT_POLICIES)}, "
                         f"got {values['remat_policy']!r}")


class Transformer(nn.Module):
    """Gemma v1 decoder-only transformer with tied embeddings; returns float32 logits."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array) -> jax.Array:
        """tokens, positions, segment_ids: int [B, L]. Positions restart at each packed document."""
        cfg = self.config
        dtypes = dict(dtype=cfg.activation_dtype, param_dtype=cfg.weight_dtype)
        embedder = modules.Embedder(cfg.vocab_size, cfg.embed_dim, name="embedder", **dtypes)
        x = nn.with_logical_constraint(
            embedder.encode(tokens), (modules.BATCH, modules.LENGTH, modules.EMBED)
        )
        mask = modules.attention_mask(segment_ids)
        block_cls = modules.Block
        policy = REMAT_POLICIES[cfg.remat_policy]
        if cfg.remat_policy != "none":
            block_cls = nn.remat(modules.Block, policy=policy)
        for i in range(cfg.num_layers):
            x = block_cls(
                cfg.num_heads, cfg.num_kv_heads, cfg.embed_dim, cfg.head_dim, cfg.hidden_dim,
                cfg.rope_base, name=f"layer_{i}", **dtypes,
            )(x, positions, mask)
        x = layers.RMSNorm(name="final_norm", **dtypes)(x)
        logits = embedder.decode(x)
        return nn.with_logical_constraint(logits, (modules.BATCH, modules.LENGTH, modules.VOCAB))


def abstract_variables(config: TransformerConfig, batch: int = 1, seq_len: int = 8) -> Any:
    """Shapes (with logical-axis boxes) of the variables, via jax.eval_shape: nothing allocated."""
    tokens = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32)
    return jax.eval_shape(
        lambda key, t: Transformer(config).init(key, t, t, t), jax.random.key(0), tokens
    )


def count_params(config: TransformerConfig) -> int:
    """Exact number of parameters, from shapes only."""
    shapes = nn.unbox(abstract_variables(config)["params"])
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(shapes))
