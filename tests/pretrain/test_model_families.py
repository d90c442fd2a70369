"""Gemma 2 and 3 in the one model: config checks, the sliding window's reach, scanning over
repeats of the layer pattern (a cut-short last repeat included), the soft-capped fused loss,
and the presets' parameter counts against the published totals and transformers' own."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.checks import ConfigError
from configs.models import gemma2_2b, gemma2_9b, gemma3_1b, gemma3_4b, tiny
from configs.models.gemma3_1b import GEMMA3_PATTERN
from configs.tokenizer import gemma3 as gemma3_tokenizer
from pretrain import flops
from pretrain.convert import hf_mapping
from pretrain.model.cross_entropy import chunked_token_losses, token_losses
from pretrain.model.transformer import (
    Transformer,
    TransformerConfig,
    repeat_pattern,
    stack_layers,
    unstack_layers,
)
from pretrain.tools import model_info
from pretrain.train_step import make_loss_fn
from tokenizer import train as tokenizer_train

SMALL = dict(
    vocab_size=256, embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=16, hidden_dim=64, max_seq_len=64
)

# Published totals (the presets' docstrings cite them): Gemma 2 report / HF model cards,
# Gemma 3 report (1B: 302M embedding + 698M non-embedding; 4B text: 3,209M non-embedding).
PUBLISHED = {
    "gemma2_2b": 2_614_341_888,
    "gemma2_9b": 9_241_705_984,
    "gemma3_1b": 999_885_952,
}
PRESETS = {"gemma2_2b": gemma2_2b, "gemma2_9b": gemma2_9b, "gemma3_1b": gemma3_1b, "gemma3_4b": gemma3_4b}


def _config(family: str, **overrides) -> TransformerConfig:
    fields = tiny.family_fields(family, sliding_window=8, head_dim=16)
    return TransformerConfig(**{**SMALL, "num_layers": 2, **fields, **overrides})


def _params(config: TransformerConfig, seed: int = 0):
    dummy = jnp.zeros((1, 8), jnp.int32)
    return nn.unbox(Transformer(config).init(jax.random.key(seed), dummy, dummy, dummy)["params"])


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("sliding_window", 65, "config.model.sliding_window: must not exceed max_seq_len=64"),
        ("sliding_window", 0, "config.model.sliding_window: must be > 0 with local layers"),
        ("attention_pattern", "local,sliding", "config.model.attention_pattern: must be layer kinds"),
        (
            "attention_pattern",
            "local,local,global",
            "config.model.attention_pattern: 3 layer kinds do not divide num_layers=2",
        ),
        ("num_kv_heads", 3, "config.model.num_kv_heads: must divide num_heads=4"),
        ("rope_scale_factor", 0.5, "config.model.rope_scale_factor: must be a number >= 1"),
        ("attn_logit_softcap", -1.0, "config.model.attn_logit_softcap: must be 0 (off) or a positive"),
        ("qk_norm", 1, "config.model.qk_norm: must be a bool"),
        ("token_chunks", 4, "config.model.token_chunks: the token-chunked loss has no final-logit soft-cap"),
    ],
)
def test_bad_gemma2_3_fields_name_the_field(field, value, message):
    values = {**_config("gemma2").to_dict(), field: value}
    with pytest.raises(ConfigError, match=re.escape(message)):
        TransformerConfig.from_config_dict(values)


def test_a_window_longer_than_max_seq_len_is_one_line_and_exit_2(repo_root):
    result = subprocess.run(
        [sys.executable, "-m", "pretrain.tools.model_info", "--config=configs/models/gemma3_1b.py",
         "--config.sliding_window=40000"],
        cwd=repo_root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "config.sliding_window: must not exceed max_seq_len=32768, got 40000" in last, last


def test_layer_kinds_repeat_the_pattern_and_cut_the_last_repeat_like_hugging_face():
    config = TransformerConfig.from_config_dict(gemma3_1b.get_config())
    kinds = config.layer_kinds
    assert len(kinds) == 26 and [i for i, k in enumerate(kinds) if k == "global"] == [5, 11, 17, 23]
    assert config.pattern == ("local",) * 5 + ("global",)  # scanned by its 6-layer period
    with pytest.raises(ConfigError, match="6 layer kinds do not divide num_layers=26"):
        TransformerConfig.from_config_dict(
            {**gemma3_1b.get_config().to_dict(), "attention_pattern": GEMMA3_PATTERN}
        )
    layer = config.block_fields("local")
    assert (layer["window"], layer["rope_base"], layer["rope_scale_factor"]) == (512, 10_000.0, 1.0)
    layer = TransformerConfig.from_config_dict(gemma3_4b.get_config()).block_fields("global")
    assert (layer["window"], layer["rope_base"], layer["rope_scale_factor"]) == (0, 1_000_000.0, 8.0)


@pytest.mark.parametrize("pattern", ["local", "global,local"])
def test_a_local_layer_sees_exactly_the_last_window_tokens(pattern):
    """One layer of each kind: position t's logits depend on token s only when t - s < window."""
    config = _config(
        "gemma2", num_layers=len(pattern.split(",")), attention_pattern=pattern, sliding_window=4
    )
    params = _params(config)
    tokens = np.arange(1, 17, dtype=np.int32)[None]
    positions, segments = np.arange(16, dtype=np.int32)[None], np.ones((1, 16), np.int32)
    apply = jax.jit(lambda t: Transformer(config).apply({"params": params}, t, positions, segments))
    other = tokens.copy()
    other[0, 2] = 99
    base, changed = apply(tokens), apply(other)
    moved = np.abs(np.asarray(changed - base)).max(axis=-1)[0]
    if pattern == "local":  # token 2 reaches positions 2..5 and no further
        assert (moved[2:6] > 1e-6).all() and (moved[6:] == 0).all() and (moved[:2] == 0).all()
    else:  # a global layer first: every later position sees it
        assert (moved[2:] > 1e-6).all()


def test_scanning_repeats_of_the_pattern_equals_the_layer_loop_with_a_cut_short_repeat():
    """5 layers of a 2-layer pattern: 2 scanned repeats and 1 layer after them; loss,
    gradients and the stacked <-> per-layer parameter layout agree."""
    config = _config("gemma3", num_layers=5, attention_pattern=repeat_pattern("local,global", 5))
    assert config.pattern == ("local", "global")
    scanned = dataclasses.replace(config, scan_layers=True)
    params = _params(config)
    stacked = stack_layers(params, 5, 2)
    assert sorted(stacked["layers"]) == ["block_0", "block_1"] and "layer_4" in stacked
    assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, _params(scanned))
    jax.tree.map(np.testing.assert_array_equal, unstack_layers(stacked, 5, 2), params)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (2, 33)).astype(np.int32)
    seg = np.ones((2, 32), np.int32)
    seg[:, 13:] = 2
    positions = np.where(seg == 1, np.arange(32), np.arange(32) - 13).astype(np.int32)
    batch = dict(inputs=tokens[:, :-1], targets=tokens[:, 1:], segment_ids=seg, positions=positions,
                 loss_weights=np.ones((2, 32), np.float32), task_ids=np.zeros(2, np.int32))  # fmt: skip

    def run(cfg, p):
        loss_fn = make_loss_fn(Transformer(cfg), 0.0, num_tasks=1)
        return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(p, batch, jnp.float32(64))

    (want, _), want_grads = run(config, params)
    (got, _), got_grads = run(scanned, stacked)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    jax.tree.map(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6),
        unstack_layers(got_grads, 5, 2),
        want_grads,
    )


def test_chunked_loss_applies_the_final_logit_softcap_values_and_gradients():
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.normal(size=(2, 6, 16)) * 3, jnp.float32)
    embedding = jnp.asarray(rng.normal(size=(64, 16)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 64, (2, 6)), jnp.int32)

    def objective(fn):
        def f(h, e):
            ce, log_z = fn(h, e)
            return jnp.sum(ce + 0.1 * jnp.square(log_z))

        return jax.value_and_grad(f, argnums=(0, 1))(hidden, embedding)

    def capped(h, e):
        logits = jnp.einsum("BTD,VD->BTV", h, e)
        return token_losses(5.0 * jnp.tanh(logits / 5.0), targets)

    want, want_grads = objective(capped)
    got, got_grads = objective(lambda h, e: chunked_token_losses(h, e, targets, 4, jnp.float32, 5.0))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    uncapped, _ = objective(lambda h, e: chunked_token_losses(h, e, targets, 4, jnp.float32))
    assert abs(float(uncapped) - float(want)) > 1.0  # the cap does change these logits


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts_match_the_published_totals_and_transformers(name, capsys):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    cfg = PRESETS[name].get_config()
    model_info.main(cfg, [])
    printed = capsys.readouterr().out
    total = int(printed.split("parameters: ")[1].split(" ")[0].replace(",", ""))
    if name in PUBLISHED:
        assert total == PUBLISHED[name]
    config = TransformerConfig.from_config_dict(cfg)
    hf = hf_mapping.hf_config(config, config.vocab_size, "float32")
    hf_cfg = transformers.AutoConfig.for_model(**hf)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_cfg)
    assert type(model).__name__ == hf["architectures"][0]
    assert sum(p.numel() for p in model.parameters()) == total
    back = hf_mapping.model_config_from_hf(hf)  # the layer kinds survive the trip through HF
    assert back.layer_kinds == config.layer_kinds and back.pattern == config.pattern


def test_mfu_counts_only_the_keys_a_local_layer_attends_to():
    config = TransformerConfig.from_config_dict(gemma3_1b.get_config())
    shape = flops.shape_of(config)
    assert (shape.local_layers, shape.sliding_window) == (22, 512)
    length = 8192
    visible = np.minimum(np.arange(1, length + 1), 512).mean()  # keys each token of a row sees
    assert flops.attended_keys(shape, length) == pytest.approx(4 * (length + 1) / 2 + 22 * visible, rel=1e-3)
    dense = flops.shape_of(dataclasses.replace(config, attention_pattern="global", sliding_window=0))
    saved = flops.train_flops_per_token(dense, length) - flops.train_flops_per_token(shape, length)
    assert saved == pytest.approx(12 * 4 * 256 * 22 * (length / 2 - (512 - 512**2 / (2 * length))))


def test_gemma3_tokenizer_config_fills_the_gemma3_embedding():
    config = gemma3_tokenizer.get_config()
    tokenizer_train.validate(config)
    assert config.spm.vocab_size == gemma3_1b.get_config().vocab_size == 262_144
    assert gemma3_4b.get_config().vocab_size >= config.spm.vocab_size
