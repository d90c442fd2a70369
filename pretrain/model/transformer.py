"""The Gemma decoder: `Transformer(config)(tokens, positions, segment_ids) -> logits`.

One module for Gemma 1, 2 and 3 (text): the fields after `max_seq_len` that say what
Gemma 2 and 3 changed default to Gemma 1, whose computation they leave op for op as it was.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from common.checks import ConfigError
from pretrain.model import attention, layers, modules
from pretrain.model.kv_cache import Decoding, KVCache

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
LAYER_KINDS = ("local", "global")  # sliding-window or full (causal) attention


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
    rope_base: float = 10_000.0  # global layers' RoPE base (Gemma 3: 1M)
    max_seq_len: int = 8192  # only recorded in exports (max_position_embeddings)
    # Gemma 2 / 3 (the defaults are Gemma 1's):
    # Layer kinds, comma-separated, repeated over the layers in order: "local,global" (Gemma 2),
    # 5 x "local" then "global" (Gemma 3). Their number divides num_layers; a model whose last
    # repeat is cut short (Gemma 3 1B: 26 layers) lists every layer (`repeat_pattern`), as
    # Hugging Face's layer_types do, and is still scanned by its shortest period.
    attention_pattern: str = "global"
    sliding_window: int = 0  # local layers: a token sees itself and sliding_window - 1 tokens back
    attn_logit_softcap: float = 0.0  # > 0: attention logits cap * tanh(logits / cap) (Gemma 2: 50)
    final_logit_softcap: float = 0.0  # > 0: the same on the output logits (Gemma 2: 30)
    qk_norm: bool = False  # RMSNorm on queries and keys per head (Gemma 3)
    post_norms: bool = False  # RMSNorm on the attention's and the MLP's outputs (Gemma 2, 3)
    query_pre_attn_scalar: float = 0.0  # queries scaled by this ** -0.5; 0: head_dim
    local_rope_base: float = 0.0  # local layers' RoPE base; 0: rope_base (Gemma 3: 10k)
    rope_scale_factor: float = 1.0  # global layers' linear position scaling (Gemma 3 4B: 8)
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

    @property
    def pattern(self) -> tuple[str, ...]:
        """The shortest period of the layer kinds, e.g. ("local", "global"): what a scan repeats
        (the last repeat may be cut short) and how stacked parameters are grouped."""
        return shortest_period(self.layer_kinds)

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        """Every layer's kind, attention_pattern repeated to num_layers."""
        return parse_pattern(repeat_pattern(self.attention_pattern, self.num_layers))

    def block_fields(self, kind: str) -> dict[str, Any]:
        """modules.Block's fields (but the dtypes) for a layer of this kind."""
        local = kind == "local"
        return dict(
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            embed_dim=self.embed_dim,
            head_dim=self.head_dim,
            hidden_dim=self.hidden_dim,
            rope_base=(self.local_rope_base or self.rope_base) if local else self.rope_base,
            attention=self.attention,
            max_documents=self.max_documents,
            window=self.sliding_window if local else 0,
            softcap=self.attn_logit_softcap,
            qk_norm=self.qk_norm,
            query_pre_attn_scalar=self.query_pre_attn_scalar,
            rope_scale_factor=1.0 if local else self.rope_scale_factor,
            post_norms=self.post_norms,
        )


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
    _validate_gemma2_3(values, where)
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


def parse_pattern(attention_pattern: str) -> tuple[str, ...]:
    """The kinds of an attention_pattern string: "local, global" -> ("local", "global")."""
    return tuple(kind.strip() for kind in attention_pattern.split(","))


def repeat_pattern(period: str, num_layers: int) -> str:
    """``period`` repeated over ``num_layers`` layers, the last repeat cut short if it must be,
    as an attention_pattern string (Gemma 3 1B: ``repeat_pattern(GEMMA3_PATTERN, 26)``)."""
    kinds = parse_pattern(period)
    return ",".join(kinds[i % len(kinds)] for i in range(num_layers))


def shortest_period(kinds: Sequence[str]) -> tuple[str, ...]:
    """The shortest prefix of ``kinds`` whose repetition, the last repeat possibly cut, is ``kinds``."""
    for period in range(1, len(kinds) + 1):
        if all(kinds[i] == kinds[i % period] for i in range(len(kinds))):
            return tuple(kinds[:period])
    raise AssertionError("unreachable: the whole list is a period")


def _validate_gemma2_3(values: Mapping[str, Any], where: str) -> None:
    """The Gemma 2 / 3 fields: layer pattern, window, soft-caps, norms, query and RoPE scales."""
    pattern = values["attention_pattern"]
    kinds = parse_pattern(pattern) if isinstance(pattern, str) else ()
    if not kinds or any(kind not in LAYER_KINDS for kind in kinds):
        raise ConfigError(
            f"{where}.attention_pattern: must be layer kinds {LAYER_KINDS} separated by commas "
            f"(e.g. 'local,global'), got {pattern!r}"
        )
    if values["num_layers"] % len(kinds):
        raise ConfigError(
            f"{where}.attention_pattern: {len(kinds)} layer kinds do not divide "
            f"num_layers={values['num_layers']} (a cut-short last repeat is written out layer by layer: "
            f"pretrain.model.transformer.repeat_pattern), got {pattern!r}"
        )
    window = values["sliding_window"]
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise ConfigError(f"{where}.sliding_window: must be a non-negative integer, got {window!r}")
    if "local" in kinds and not window:
        raise ConfigError(
            f"{where}.sliding_window: must be > 0 with local layers in attention_pattern, got 0"
        )
    if window > values["max_seq_len"]:
        raise ConfigError(
            f"{where}.sliding_window: must not exceed max_seq_len={values['max_seq_len']}, got {window}"
        )
    for name in ("attn_logit_softcap", "final_logit_softcap", "query_pre_attn_scalar", "local_rope_base"):
        value = values[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}.{name}: must be 0 (off) or a positive number, got {value!r}")
    if values["local_rope_base"] and not values["local_rope_base"] > 1:
        raise ConfigError(
            f"{where}.local_rope_base: must be 0 (rope_base) or > 1, got {values['local_rope_base']!r}"
        )
    factor = values["rope_scale_factor"]
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor >= 1:
        raise ConfigError(f"{where}.rope_scale_factor: must be a number >= 1, got {factor!r}")
    for name in ("qk_norm", "post_norms"):
        if not isinstance(values[name], bool):
            raise ConfigError(f"{where}.{name}: must be a bool, got {values[name]!r}")
    if values["final_logit_softcap"] and values["token_chunks"]:
        raise ConfigError(
            f"{where}.token_chunks: the token-chunked loss has no final-logit soft-cap "
            f"(final_logit_softcap={values['final_logit_softcap']}); use vocab_chunks or full logits"
        )


class Transformer(nn.Module):
    """Gemma 1/2/3 decoder-only transformer with tied embeddings; returns float32 logits.

    `return_hidden=True` returns the final-normed hidden states [B, T, D] instead, for
    `cross_entropy.chunked_token_losses` with params["embedder"]["input_embedding"].
    With `scan_layers` one repeat of the attention pattern is scanned: the blocks'
    parameters are stacked under "layers" ("block", or "block_{j}" per pattern entry)
    with a leading [num_layers // len(pattern)] axis; the layers of a cut-short last repeat
    stay "layer_{i}" (`unstack_layers` / `stack_layers` convert to and from layer_{i}).
    """

    config: TransformerConfig

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array,
        return_hidden: bool = False,
        cache: KVCache | None = None,
        column: jax.Array | int = 0,
    ) -> jax.Array | tuple[jax.Array, KVCache]:
        """tokens, positions, segment_ids: int [B, L]. Positions restart at each packed document.

        With `cache` (decoding, pretrain.model.kv_cache) returns (logits or hidden, the cache
        holding this call's keys and values): the prefill when the cache is empty, else a
        step over the buffer's columns [column, column + L).
        """
        cfg = self.config
        decoding = None
        if cache is not None:
            decoding = Decoding(cache.positions, cache.segment_ids, jnp.asarray(column, jnp.int32))
        cached = {} if cache is None or cache.layers is None else cache.layers
        kvs = {}
        dtypes = dict(dtype=cfg.activation_dtype, param_dtype=cfg.weight_dtype)
        embedder = modules.Embedder(cfg.vocab_size, cfg.embed_dim, name="embedder", **dtypes)
        x = nn.with_logical_constraint(
            embedder.encode(tokens), (modules.BATCH, modules.LENGTH, modules.EMBED)
        )
        kinds = cfg.layer_kinds
        scanned_layers = 0
        if cfg.scan_layers:
            period = [cfg.block_fields(kind) for kind in cfg.pattern]
            repeats = cfg.num_layers // len(period)
            scanned = nn.scan(
                _Period,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0),
                length=repeats,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, kvs["layers"] = scanned(
                _block_class(cfg.remat_policy, True), tuple(period), dtypes, name="layers"
            )(x, positions, segment_ids, decoding, cached.get("layers"))
            scanned_layers = repeats * len(period)
        block_cls = _block_class(cfg.remat_policy, False)
        for i in range(scanned_layers, cfg.num_layers):  # all, or the cut-short last repeat
            block = block_cls(**cfg.block_fields(kinds[i]), name=f"layer_{i}", **dtypes)
            x, kvs[f"layer_{i}"] = _apply_block(
                block, x, positions, segment_ids, decoding, cached.get(f"layer_{i}")
            )
        x = layers.RMSNorm(name="final_norm", **dtypes)(x)
        if not return_hidden:
            x = softcap_logits(embedder.decode(x), cfg.final_logit_softcap)
            x = nn.with_logical_constraint(x, (modules.BATCH, modules.LENGTH, modules.VOCAB))
        return x if cache is None else (x, KVCache(kvs, cache.positions, cache.segment_ids))


def _apply_block(block, x, positions, segment_ids, decoding, kv):
    """(output, the block's keys and values): those are None outside decoding."""
    if decoding is None:
        return block(x, positions, segment_ids), None
    return block(x, positions, segment_ids, decoding, kv)


def _block_class(remat_policy: str, in_scan: bool) -> Any:
    """modules.Block, rematerialised by the policy (CSE prevention is only needed outside a scan)."""
    if remat_policy == "none":
        return modules.Block
    return nn.remat(modules.Block, policy=REMAT_POLICIES[remat_policy], prevent_cse=not in_scan)


def softcap_logits(logits: jax.Array, cap: float) -> jax.Array:
    """cap * tanh(logits / cap) (Gemma 2's final-logit soft-cap); unchanged when cap is 0."""
    return cap * jnp.tanh(logits / cap) if cap else logits


class _Period(nn.Module):
    """One repeat of the layer pattern as an nn.scan body: (x, positions, segment_ids) -> (x, None);
    decoding (modules.Block), (x, ..., decoding, cached keys and values) -> (x, keys and values).

    Its blocks are "block" for a one-kind pattern (Gemma 1: every layer alike), else
    "block_{j}" for the pattern's j-th kind: layer r * len(pattern) + j is repeat r of block_j.
    """

    block_cls: Any
    period: tuple  # modules.Block fields of each block of the pattern
    dtypes: dict

    @nn.compact
    def __call__(self, x, positions, segment_ids, decoding=None, cached=None):
        kvs = {}
        for j, fields in enumerate(self.period):
            name = _block_name(j, len(self.period))
            block = self.block_cls(**fields, name=name, **self.dtypes)
            x, kvs[name] = _apply_block(block, x, positions, segment_ids, decoding, (cached or {}).get(name))
        return x, (None if decoding is None else kvs)


def _block_name(j: int, period: int) -> str:
    return "block" if period == 1 else f"block_{j}"


def unstack_layers(params: Mapping[str, Any], num_layers: int, period: int = 1) -> dict[str, Any]:
    """A scan_layers params tree ("layers": stacked) as the per-layer one ("layer_{i}").

    `period` is the length of the model's attention pattern (`TransformerConfig.pattern`).
    """
    params = dict(params)
    if "layers" not in params:
        return params
    stacked = params.pop("layers")
    for i in range(num_layers // period * period):
        block = stacked[_block_name(i % period, period)]
        params[f"layer_{i}"] = jax.tree.map(lambda x, r=i // period: x[r], block)
    return params


def stack_layers(params: Mapping[str, Any], num_layers: int, period: int = 1) -> dict[str, Any]:
    """The inverse of `unstack_layers`: per-layer params stacked for scan_layers (the layers
    of a cut-short last repeat of the pattern stay "layer_{i}")."""
    params = dict(params)
    repeats = num_layers // period
    params["layers"] = {
        _block_name(j, period): jax.tree.map(
            lambda *xs: jnp.stack(xs), *[params.pop(f"layer_{r * period + j}") for r in range(repeats)]
        )
        for j in range(period)
    }
    return params


def abstract_variables(config: TransformerConfig, batch: int = 1, seq_len: int = 8) -> Any:
    """Shapes (with logical-axis boxes) of the variables, via jax.eval_shape: nothing allocated."""
    tokens = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32)
    return jax.eval_shape(lambda key, t: Transformer(config).init(key, t, t, t), jax.random.key(0), tokens)


def count_params(config: TransformerConfig) -> int:
    """Exact number of parameters, from shapes only."""
    shapes = nn.unbox(abstract_variables(config)["params"])
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(shapes))
