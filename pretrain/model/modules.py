"""Gemma building blocks: embedder, attention (MHA/MQA/GQA), GeGLU feed-forward, block."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from pretrain.model import attention, layers, positional_embeddings
from pretrain.model.kv_cache import Decoding, LayerKV

# Logical axis names of activations; pretrain.sharding maps them to mesh axes.
BATCH, LENGTH, EMBED = "activation_batch", "activation_length", "activation_embed"
HEADS, KV, MLP, VOCAB = "activation_heads", "activation_kv", "activation_mlp", "activation_vocab"
# Names of the projections' outputs, for remat policies that keep them (transformer.REMAT_POLICIES):
# the attention's, then the MLP's [B, T, hidden_dim] input pair and its output.
ATTENTION_MATMULS = ("attn_qkv", "attn_q", "attn_kv", "attn_out")
MLP_INPUT_MATMULS, MLP_OUTPUT_MATMUL = ("mlp_gate", "mlp_up"), "mlp_out"


def _fan_in(in_axis, out_axis, batch_axis=()) -> nn.initializers.Initializer:
    """LeCun-normal over the contracted axes, so every projection starts variance-preserving."""
    return nn.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis
    )


class Embedder(nn.Module):
    """Token embedding scaled by sqrt(embed_dim); its transpose is the tied output layer."""

    vocab_size: int
    embed_dim: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.input_embedding = self.param(
            "input_embedding",
            nn.with_logical_partitioning(
                nn.initializers.normal(stddev=self.embed_dim**-0.5), ("vocab", "embed")
            ),
            (self.vocab_size, self.embed_dim),
            self.param_dtype,
        )

    def encode(self, tokens: jax.Array) -> jax.Array:
        x = jnp.take(self.input_embedding, tokens, axis=0).astype(self.dtype)
        # The reference casts the normaliser to the activation dtype before multiplying.
        return x * jnp.sqrt(self.embed_dim).astype(self.dtype)

    def decode(self, x: jax.Array) -> jax.Array:
        # float32 logits for the softmax; their gradient flows back in the activation dtype.
        return layers.einsum("BTD,VD->BTV", x, self.input_embedding, self.dtype, jnp.float32)


class Attention(nn.Module):
    """Causal, segment-masked multi-head attention with grouped key/value heads and RoPE.

    The defaults are Gemma 1; Gemma 2 and 3 set a local `window` on some layers, a logit
    `softcap` (2), RMSNorm on queries and keys (`qk_norm`, 3), their query scale
    (`query_pre_attn_scalar`) and per-layer RoPE base and linear scaling (3).
    """

    num_heads: int
    num_kv_heads: int
    features: int
    head_dim: int
    rope_base: float = 10_000.0
    implementation: str = "xla"  # attention core: pretrain.model.attention.IMPLEMENTATIONS
    max_documents: int = 16  # "cudnn": documents per row its packed layout describes
    window: int = 0  # > 0: local layer, a token sees itself and window - 1 tokens back
    softcap: float = 0.0  # > 0: attention logits softcap * tanh(logits / softcap)
    qk_norm: bool = False
    query_pre_attn_scalar: float = 0.0  # queries scaled by this ** -0.5; 0: head_dim
    rope_scale_factor: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @property
    def use_qkv_einsum(self) -> bool:
        return self.num_kv_heads == self.num_heads

    def _einsum(self, name: str, shape, axes, init) -> layers.Einsum:
        return layers.Einsum(shape, axes, init, self.dtype, self.param_dtype, name=name)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array,
        decoding: Decoding | None = None,
        cached: LayerKV | None = None,
    ) -> jax.Array | tuple[jax.Array, LayerKV]:
        """The attention's output; with `decoding` (pretrain.model.kv_cache) also this layer's
        keys and values over the buffer: the inputs' own in the prefill (`cached` None), else
        `cached` with the inputs' written at `decoding.column`, which the queries attend to."""
        n, k, d, h = self.num_heads, self.num_kv_heads, self.features, self.head_dim
        if self.use_qkv_einsum:
            qkv = self._einsum(
                "qkv_einsum", (3, n, d, h), (None, "q_heads", "embed", "head_dim"), _fan_in(2, (1, 3), 0)
            )
            query, key, value = checkpoint_name(qkv("BTD,SNDH->SBTNH", x), "attn_qkv")
        else:
            query = self._einsum("q_einsum", (n, d, h), ("q_heads", "embed", "head_dim"), _fan_in(1, (0, 2)))(
                "BTD,NDH->BTNH", x
            )
            query = checkpoint_name(query, "attn_q")
            kv = self._einsum(
                "kv_einsum", (2, k, d, h), (None, "kv_heads", "embed", "head_dim"), _fan_in(2, (1, 3), 0)
            )
            key, value = checkpoint_name(kv("BSD,CKDH->CBSKH", x), "attn_kv")
        query = nn.with_logical_constraint(query, (BATCH, LENGTH, HEADS, KV))
        if self.qk_norm:
            dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
            query = layers.RMSNorm(name="query_norm", **dtypes)(query)
            key = layers.RMSNorm(name="key_norm", **dtypes)(key)

        rope = dict(max_wavelength=self.rope_base, scale_factor=self.rope_scale_factor)
        query = positional_embeddings.apply_rope(query, positions, **rope) * jnp.asarray(
            (self.query_pre_attn_scalar or h) ** -0.5, self.dtype
        )
        key = positional_embeddings.apply_rope(key, positions, **rope)

        if cached is None:  # training, or the prefill over the whole buffer
            encoded = attention.attend(
                query,
                key,
                value,
                segment_ids,
                self.implementation,
                self.dtype,
                self.max_documents,
                window=self.window,
                softcap=self.softcap,
            )
        else:
            key, value = (
                jax.lax.dynamic_update_slice_in_dim(old, new.astype(old.dtype), decoding.column, axis=1)
                for old, new in zip(cached, (key, value))
            )
            mask = attention.cache_mask(
                segment_ids, positions, decoding.segment_ids, decoding.positions, decoding.column, self.window
            )
            encoded = attention.masked_attention(query, key, value, mask, self.dtype, self.softcap)
        encoded = nn.with_logical_constraint(encoded, (BATCH, LENGTH, HEADS, KV))

        out = self._einsum(
            "attn_vec_einsum", (n, h, d), ("q_heads", "head_dim", "embed"), _fan_in((0, 1), 2)
        )("BTNH,NHD->BTD", encoded)
        out = nn.with_logical_constraint(checkpoint_name(out, "attn_out"), (BATCH, LENGTH, EMBED))
        return out if decoding is None else (out, (key, value))


class FeedForward(nn.Module):
    """GeGLU: gelu_tanh(x W_gate) * (x W_up), then W_down; no biases."""

    features: int
    hidden_dim: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gating = self.param(
            "gating_einsum",
            nn.with_logical_partitioning(_fan_in(1, 2, 0), (None, "embed", "mlp")),
            (2, self.features, self.hidden_dim),
            self.param_dtype,
        )
        linear = self.param(
            "linear",
            nn.with_logical_partitioning(_fan_in(0, 1), ("mlp", "embed")),
            (self.hidden_dim, self.features),
            self.param_dtype,
        )
        gate = checkpoint_name(layers.einsum("BTD,DF->BTF", x, gating[0], self.dtype), "mlp_gate")
        up = checkpoint_name(layers.einsum("BTD,DF->BTF", x, gating[1], self.dtype), "mlp_up")
        hidden = nn.gelu(gate, approximate=True) * up
        hidden = nn.with_logical_constraint(hidden, (BATCH, LENGTH, MLP))
        out = checkpoint_name(layers.einsum("BTF,FD->BTD", hidden, linear, self.dtype), "mlp_out")
        return nn.with_logical_constraint(out, (BATCH, LENGTH, EMBED))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(.)); with `post_norms`
    (Gemma 2 and 3) each branch's output is normed again before the residual add."""

    num_heads: int
    num_kv_heads: int
    embed_dim: int
    head_dim: int
    hidden_dim: int
    rope_base: float = 10_000.0
    attention: str = "xla"
    max_documents: int = 16
    window: int = 0
    softcap: float = 0.0
    qk_norm: bool = False
    query_pre_attn_scalar: float = 0.0
    rope_scale_factor: float = 1.0
    post_norms: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array,
        decoding: Decoding | None = None,
        cached: LayerKV | None = None,
    ) -> jax.Array | tuple[jax.Array, LayerKV]:
        """The block's output; with `decoding` also its attention's keys and values (Attention)."""
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = Attention(
            self.num_heads,
            self.num_kv_heads,
            self.embed_dim,
            self.head_dim,
            self.rope_base,
            self.attention,
            self.max_documents,
            self.window,
            self.softcap,
            self.qk_norm,
            self.query_pre_attn_scalar,
            self.rope_scale_factor,
            name="attn",
            **dtypes,
        )
        out = attn(
            layers.RMSNorm(name="pre_attention_norm", **dtypes)(x), positions, segment_ids, decoding, cached
        )
        if decoding is not None:
            out, cached = out
        if self.post_norms:
            out = layers.RMSNorm(name="post_attention_norm", **dtypes)(out)
        x = x + out
        mlp = FeedForward(self.embed_dim, self.hidden_dim, name="mlp", **dtypes)
        out = mlp(layers.RMSNorm(name="pre_ffw_norm", **dtypes)(x))
        if self.post_norms:
            out = layers.RMSNorm(name="post_ffw_norm", **dtypes)(out)
        x = nn.with_logical_constraint(x + out, (BATCH, LENGTH, EMBED))
        return x if decoding is None else (x, cached)
