"""The Gemma decoder: `Transformer(config)(tokens, positions, segment_ids) -> logits`."""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from common.checks import ConfigError
from pretrain.model import attention, layers, modules

# Which intermediate values a rematerialised block keeps for the backward pass.
REMAT_POLICIES = {
    "none": None,  # no remat: keep everything
    "full": jax.checkpoint_policies.nothing_saveable,
    # Keep every projection's output. By name: the projections are custom-VJP einsums
    # (layers.einsum), which jax.checkpoint_policies.checkpoint_dots does not see, so a
    # "dots" policy would keep nothing (measured: the same memory as "full").
    # the backward pass reruns only norms, RoPE, the activation and the attention core.
    "matmul_outputs": jax.checkpoint_policies.save_only_these_names(
        *modules.ATTENTION_MATMULS, *modules.MLP_INPUT_MATMULS, modules.MLP_OUTPUT_MATMUL
    ),
    # The same without the MLP's [B, T, hidden_dim] input pair, whose matmuls are rerun.
    "matmul_outputs_but_mlp_inputs": jax.checkpoint_policies.save_only_these_names(
        *modules.ATTENTION_MATMULS, modules.MLP_OUTPUT_MATMUL
    ),
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
    # How the same maths is executed (no effect on the parameters' values):
    attention: str = "xla"  # "xla" (CPU, reference), "splash" (TPU Pallas), "cudnn" (GPU)
    scan_layers: bool = False  # nn.scan over the blocks: one compiled block, stacked params
    vocab_chunks: int = 0  # >0: fused chunked cross-entropy over this many vocabulary chunks
    token_chunks: int = 0  # >0: loss by this many sequence chunks, gradient in the forward pass
    max_documents: int = 16  # "cudnn": rows with more documents take the dense-mask path

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
            raise ConfigError(f"{where}.{unknown[0]}: unknown model field (known: {sorted(fields)})")
        values = {**defaults(), **values}
        missing = [name for name in fields if name not in values]
        if missing:
            raise ConfigError(f"{where}.{missing[0]}: required model field is missing")
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


def config_dict(**fields: Any) -> ml_collections.ConfigDict:
    """A config's model section holding every TransformerConfig field, defaults for those not
    given: a preset (configs/models) lists the shape, and `--config.model.FIELD=...` can still
    override any execution field (ml_collections refuses fields a ConfigDict lacks)."""
    return ml_collections.ConfigDict({**defaults(), **fields})


def defaults() -> dict[str, Any]:
    """The fields a model section may leave out, with the values they then take."""
    return {
        f.name: f.default
        for f in dataclasses.fields(TransformerConfig)
        if f.default is not dataclasses.MISSING
    }


def _validate(values: Mapping[str, Any], where: str) -> None:
    """Raises ConfigError naming the offending field as `{where}.{field}`."""
    for name in (
        "vocab_size",
        "num_layers",
        "embed_dim",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "hidden_dim",
        "max_seq_len",
        "max_documents",
    ):
        value = values[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}.{name}: must be a positive integer, got {value!r}")
    if values["num_heads"] % values["num_kv_heads"]:
        raise ConfigError(
            f"{where}.num_kv_heads: must divide num_heads={values['num_heads']}, got {values['num_kv_heads']}"
        )
    if values["head_dim"] % 2:
        raise ConfigError(f"{where}.head_dim: must be even for RoPE, got {values['head_dim']}")
    if not isinstance(values["rope_base"], (int, float)) or not values["rope_base"] > 1:
        raise ConfigError(f"{where}.rope_base: must be a number > 1, got {values['rope_base']!r}")
    for name in ("dtype", "param_dtype"):
        if values[name] not in DTYPES:
            raise ConfigError(f"{where}.{name}: must be one of {sorted(DTYPES)}, got {values[name]!r}")
    if values["attention"] not in attention.IMPLEMENTATIONS:
        raise ConfigError(
            f"{where}.attention: must be one of {attention.IMPLEMENTATIONS}, got {values['attention']!r}"
        )
    if not isinstance(values["scan_layers"], bool):
        raise ConfigError(f"{where}.scan_layers: must be a bool, got {values['scan_layers']!r}")
    chunks = values["vocab_chunks"]
    if (
        not isinstance(chunks, int)
        or isinstance(chunks, bool)
        or chunks < 0
        or (chunks and values["vocab_size"] % chunks)
    ):
        raise ConfigError(
            f"{where}.vocab_chunks: must be 0 (full logits) or a positive divisor of "
            f"vocab_size={values['vocab_size']}, got {chunks!r}"
        )
    tokens = values["token_chunks"]
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        raise ConfigError(f"{where}.token_chunks: must be 0 (off) or a positive integer, got {tokens!r}")
    if tokens and chunks:
        raise ConfigError(
            f"{where}.token_chunks: the loss is chunked over tokens or over the vocabulary, not both "
            f"(vocab_chunks={chunks}); set one of them to 0"
        )
    if values["remat_policy"] not in REMAT_POLICIES:
        raise ConfigError(
            f"{where}.remat_policy: must be one of {sorted(REMAT_POLICIES)}, got {values['remat_policy']!r}"
        )


class Transformer(nn.Module):
    """Gemma v1 decoder-only transformer with tied embeddings; returns float32 logits.

    `return_hidden=True` returns the final-normed hidden states [B, T, D] instead, for
    `cross_entropy.chunked_token_losses` with params["embedder"]["input_embedding"].
    With `scan_layers` the blocks' parameters are stacked under "layers" with a leading
    [num_layers] axis (`unstack_layers` / `stack_layers` convert to and from layer_{i}).
    """

    config: TransformerConfig

    @nn.compact
    def __call__(
        self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array, return_hidden: bool = False
    ) -> jax.Array:
        """tokens, positions, segment_ids: int [B, L]. Positions restart at each packed document."""
        cfg = self.config
        dtypes = dict(dtype=cfg.activation_dtype, param_dtype=cfg.weight_dtype)
        embedder = modules.Embedder(cfg.vocab_size, cfg.embed_dim, name="embedder", **dtypes)
        x = nn.with_logical_constraint(
            embedder.encode(tokens), (modules.BATCH, modules.LENGTH, modules.EMBED)
        )
        block_args = (
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.embed_dim,
            cfg.head_dim,
            cfg.hidden_dim,
            cfg.rope_base,
            cfg.attention,
            cfg.max_documents,
        )
        block_cls = modules.Block
        if cfg.remat_policy != "none":
            block_cls = nn.remat(
                block_cls, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers
            )
        if cfg.scan_layers:
            scanned = nn.scan(
                _Carried,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, _ = scanned(block_cls, block_args, dtypes, name="layers")(x, positions, segment_ids)
        else:
            for i in range(cfg.num_layers):
                x = block_cls(*block_args, name=f"layer_{i}", **dtypes)(x, positions, segment_ids)
        x = layers.RMSNorm(name="final_norm", **dtypes)(x)
        if return_hidden:
            return x
        logits = embedder.decode(x)
        return nn.with_logical_constraint(logits, (modules.BATCH, modules.LENGTH, modules.VOCAB))


class _Carried(nn.Module):
    """One block as an nn.scan body: (x, positions, segment_ids) -> (x, None)."""

    block_cls: Any
    block_args: tuple
    dtypes: dict

    @nn.compact
    def __call__(self, x, positions, segment_ids):
        return self.block_cls(*self.block_args, name="block", **self.dtypes)(x, positions, segment_ids), None


def unstack_layers(params: Mapping[str, Any], num_layers: int) -> dict[str, Any]:
    """A scan_layers params tree ("layers": stacked) as the per-layer one ("layer_{i}")."""
    params = dict(params)
    if "layers" not in params:
        return params
    stacked = params.pop("layers")["block"]
    for i in range(num_layers):
        params[f"layer_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return params


def stack_layers(params: Mapping[str, Any], num_layers: int) -> dict[str, Any]:
    """The inverse of `unstack_layers`: per-layer params stacked for scan_layers."""
    params = dict(params)
    per_layer = [params.pop(f"layer_{i}") for i in range(num_layers)]
    params["layers"] = {"block": jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)}
    return params


def abstract_variables(config: TransformerConfig, batch: int = 1, seq_len: int = 8) -> Any:
    """Shapes (with logical-axis boxes) of the variables, via jax.eval_shape: nothing allocated."""
    tokens = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32)
    return jax.eval_shape(lambda key, t: Transformer(config).init(key, t, t, t), jax.random.key(0), tokens)


def count_params(config: TransformerConfig) -> int:
    """Exact number of parameters, from shapes only."""
    shapes = nn.unbox(abstract_variables(config)["params"])
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(shapes))
