"""Unit tests of the Flax Gemma model: shapes, names, masking, config validation, counts."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.models import gemma_2b, gemma_7b, tiny
from pretrain.model import layers, positional_embeddings
from pretrain.model.transformer import REMAT_POLICIES, Transformer, TransformerConfig, count_params

SMALL = TransformerConfig(
    vocab_size=256, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=1, head_dim=8, hidden_dim=64
)


def _init(config: TransformerConfig, length: int = 12, seed: int = 0):
    tokens = jnp.zeros((1, length), jnp.int32)
    return Transformer(config).init(jax.random.key(seed), tokens, tokens, tokens)


def _packed_row(rng: np.random.Generator, lengths, vocab: int, total: int):
    """One row holding documents of `lengths`, zero padding after them."""
    tokens, positions, segments = (np.zeros(total, np.int32) for _ in range(3))
    start = 0
    for seg, n in enumerate(lengths, start=1):
        tokens[start : start + n] = rng.integers(1, vocab, n)
        positions[start : start + n] = np.arange(n)
        segments[start : start + n] = seg
        start += n
    return tokens[None], positions[None], segments[None]


def test_tiny_config_forward_shape_and_dtype():
    config = TransformerConfig.from_config_dict(tiny.get_config())
    variables = _init(config)
    tokens = jnp.arange(24, dtype=jnp.int32).reshape(2, 12)
    positions = jnp.tile(jnp.arange(12, dtype=jnp.int32), (2, 1))
    logits = Transformer(config).apply(variables, tokens, positions, jnp.ones_like(tokens))
    assert logits.shape == (2, 12, config.vocab_size)
    assert logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize(
    "num_kv_heads, attn_names",
    [
        (1, {"q_einsum", "kv_einsum", "attn_vec_einsum"}),
        (2, {"q_einsum", "kv_einsum", "attn_vec_einsum"}),
        (4, {"qkv_einsum", "attn_vec_einsum"}),
    ],
)
def test_parameter_names_follow_reference(num_kv_heads, attn_names):
    config = dataclasses.replace(SMALL, num_kv_heads=num_kv_heads)
    params = _init(config)["params"]
    assert set(params) == {"embedder", "final_norm", "layer_0", "layer_1"}
    assert set(params["layer_0"]) == {"pre_attention_norm", "attn", "pre_ffw_norm", "mlp"}
    assert set(params["layer_0"]["attn"]) == attn_names
    assert set(params["layer_0"]["mlp"]) == {"gating_einsum", "linear"}
    assert params["embedder"]["input_embedding"].value.shape == (256, 32)


def test_every_parameter_has_logical_axes():
    params = _init(SMALL)["params"]
    leaves = jax.tree_util.tree_leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    for leaf in leaves:
        assert len(leaf.names) == leaf.value.ndim
    assert params["embedder"]["input_embedding"].names == ("vocab", "embed")
    assert params["layer_0"]["mlp"]["linear"].names == ("mlp", "embed")


@pytest.mark.parametrize("num_kv_heads", [1, 4])
def test_changing_one_document_never_changes_another(num_kv_heads):
    config = dataclasses.replace(SMALL, num_kv_heads=num_kv_heads)
    variables = _init(config, length=20)
    rng = np.random.default_rng(0)
    tokens, positions, segments = _packed_row(rng, [7, 5, 6], config.vocab_size, 20)
    apply = jax.jit(Transformer(config).apply)
    base = np.asarray(apply(variables, tokens, positions, segments))
    changed = tokens.copy()
    changed[0, 7:12] = rng.integers(1, config.vocab_size, 5)  # rewrite document 2 only
    assert (changed != tokens).any()
    out = np.asarray(apply(variables, changed, positions, segments))
    np.testing.assert_array_equal(out[0, :7], base[0, :7])
    np.testing.assert_array_equal(out[0, 12:], base[0, 12:])
    assert not np.allclose(out[0, 7:12], base[0, 7:12])


def test_packed_document_equals_document_alone():
    variables = _init(SMALL, length=16)
    rng = np.random.default_rng(1)
    tokens, positions, segments = _packed_row(rng, [6, 10], SMALL.vocab_size, 16)
    apply = jax.jit(Transformer(SMALL).apply)
    packed = np.asarray(apply(variables, tokens, positions, segments))
    second = tokens[:, 6:16]
    alone = np.asarray(apply(variables, second, positions[:, 6:16], np.ones_like(second)))
    np.testing.assert_allclose(packed[0, 6:16], alone[0], atol=1e-5, rtol=1e-5)


def test_logits_are_causal():
    variables = _init(SMALL, length=10)
    rng = np.random.default_rng(2)
    tokens = rng.integers(1, SMALL.vocab_size, (1, 10)).astype(np.int32)
    positions = np.arange(10, dtype=np.int32)[None]
    apply = jax.jit(Transformer(SMALL).apply)
    base = np.asarray(apply(variables, tokens, positions, np.ones_like(tokens)))
    changed = tokens.copy()
    changed[0, 6] = (changed[0, 6] % (SMALL.vocab_size - 1)) + 1
    out = np.asarray(apply(variables, changed, positions, np.ones_like(tokens)))
    np.testing.assert_array_equal(out[0, :6], base[0, :6])
    assert not np.allclose(out[0, 6:], base[0, 6:])


def test_rope_is_a_rotation_of_split_halves():
    x = jax.random.normal(jax.random.key(0), (1, 3, 2, 8))
    positions = jnp.array([[0, 1, 5]])
    out = positional_embeddings.apply_rope(x, positions)
    np.testing.assert_allclose(out[0, 0], x[0, 0], rtol=1e-6)  # position 0 is the identity
    np.testing.assert_allclose(  # rotations keep the norm of each (i, i + H/2) pair
        jnp.hypot(out[..., :4], out[..., 4:]), jnp.hypot(x[..., :4], x[..., 4:]), rtol=1e-5
    )
    # Channel 0 pairs with channel 4 at the highest frequency (1 radian per position).
    np.testing.assert_allclose(
        out[0, 1, :, 0], x[0, 1, :, 0] * np.cos(1.0) - x[0, 1, :, 4] * np.sin(1.0), rtol=1e-5
    )


def test_remat_policies_do_not_change_loss_or_grads():
    variables = _init(SMALL, length=8)
    tokens = jnp.arange(1, 9, dtype=jnp.int32)[None]
    positions = jnp.arange(8, dtype=jnp.int32)[None]

    def loss(params, config):
        logits = Transformer(config).apply({"params": params}, tokens, positions, jnp.ones_like(tokens))
        return jnp.mean(
            jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, tokens[..., None], -1)[..., 0]
        )

    params = nn.unbox(variables["params"])
    grad_fn = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    ref_loss, ref_grads = grad_fn(params, SMALL)
    for policy in sorted(set(REMAT_POLICIES) - {"none"}):
        got_loss, got_grads = grad_fn(params, dataclasses.replace(SMALL, remat_policy=policy))
        np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-6)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got_grads, ref_grads
        )


def test_bfloat16_activations_keep_float32_master_weights():
    config = dataclasses.replace(SMALL, dtype="bfloat16")
    variables = _init(config, length=8)
    for leaf in jax.tree_util.tree_leaves(nn.unbox(variables["params"])):
        assert leaf.dtype == jnp.float32
    tokens = jnp.arange(1, 9, dtype=jnp.int32)[None]
    positions = jnp.arange(8, dtype=jnp.int32)[None]
    bf16 = Transformer(config).apply(variables, tokens, positions, jnp.ones_like(tokens))
    f32 = Transformer(SMALL).apply(variables, tokens, positions, jnp.ones_like(tokens))
    assert bf16.dtype == jnp.float32
    np.testing.assert_allclose(bf16, f32, atol=0.1)


@pytest.mark.parametrize(
    "eqn, x_shape, w_shape",
    [
        ("BTD,NDH->BTNH", (2, 5, 6), (3, 6, 4)),
        ("BTNH,NHD->BTD", (2, 5, 3, 4), (3, 4, 6)),
        ("BTKGS,BSKH->BTKGH", (2, 5, 1, 3, 5), (2, 5, 1, 4)),
    ],
)
def test_mixed_precision_einsum_gradients(eqn, x_shape, w_shape):
    """layers.einsum's hand-written gradients equal autodiff's of jnp.einsum."""
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)
    probe = jax.random.normal(kg, jnp.einsum(eqn, x, w).shape)

    def loss(f, dtype):
        return lambda x, w: jnp.sum(f(x, w, dtype).astype(jnp.float32) * probe)

    ours = jax.grad(loss(lambda x, w, d: layers.einsum(eqn, x, w, d), jnp.float32), (0, 1))(x, w)
    want = jax.grad(loss(lambda x, w, d: jnp.einsum(eqn, x, w), jnp.float32), (0, 1))(x, w)
    for a, b in zip(ours, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # bf16 compute: gradients come back in each operand's dtype (float32 master weights).
    grads = jax.grad(loss(lambda x, w, d: layers.einsum(eqn, x, w, d), jnp.bfloat16), (0, 1))(
        x.astype(jnp.bfloat16), w
    )
    assert grads[0].dtype == jnp.bfloat16 and grads[1].dtype == jnp.float32
    np.testing.assert_allclose(grads[1], want[1], rtol=0.05, atol=0.05)
    # float32 output (logits) of bf16 operands: the forward is the float32 product of the
    # bf16-rounded operands, not rounded again.
    x16, w16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    out = layers.einsum(eqn, x16, w16, jnp.bfloat16, jnp.float32)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(
        out, jnp.einsum(eqn, x16.astype(jnp.float32), w16.astype(jnp.float32)), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="every index"):
        layers.einsum("BTD,DF->BT", x, w, jnp.float32)


def test_reference_parameter_counts():
    assert count_params(TransformerConfig.from_config_dict(gemma_2b.get_config())) == 2_506_434_560
    assert count_params(TransformerConfig.from_config_dict(gemma_7b.get_config())) == 8_538_074_112


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_kv_heads", 3, "config.model.num_kv_heads: must divide"),
        ("head_dim", 7, "config.model.head_dim: must be even"),
        ("num_layers", 0, "config.model.num_layers: must be a positive integer"),
        ("dtype", "int8", "config.model.dtype: must be one of"),
        ("remat_policy", "some", "config.model.remat_policy: must be one of"),
        ("num_experts", 4, "config.model.num_experts: unknown model field"),
    ],
)
def test_bad_config_values_name_the_field(field, value, message):
    cfg = tiny.get_config()
    cfg[field] = value
    with pytest.raises(ValueError, match=message):
        TransformerConfig.from_config_dict(cfg)


def test_model_info_cli_prints_exact_count():
    import os
    import subprocess
    import sys

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-m", "pretrain.tools.model_info", "--config=configs/models/gemma_2b.py"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),  # the repo root
    )
    assert "parameters: 2,506,434,560" in out.stdout


def test_model_info_accepts_a_training_config():
    import ml_collections

    from pretrain.tools.model_info import model_config_from, parameter_table

    train_cfg = ml_collections.ConfigDict({"model": gemma_7b.get_config(), "workdir": ""})
    config = model_config_from(train_cfg)
    table = parameter_table(config)
    assert sum(table.values()) == 8_538_074_112
    assert table["embedding"] == 256_128 * 3072
    train_cfg.model.num_heads = 5
    with pytest.raises(ValueError, match="config.model.num_kv_heads"):
        model_config_from(train_cfg)
