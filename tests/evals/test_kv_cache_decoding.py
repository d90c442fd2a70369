"""The KV-cache decoder against the recompute reference on tiny random models of every
family: Gemma 1 (MHA, scanned layers), Gemma 2 (MQA, window, soft-caps, post-norms,
query scalar) and Gemma 3 (GQA, qk-norm, two RoPE bases and scaling, scanned with a
cut-short repeat). Prompts of different lengths share a batch, and the generation runs
past the 8-token window: at every step the next-token logits agree within 1e-4 and the
ids are identical, greedy and sampled; each prompt alone gives its batched logits (the
left padding is never attended)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.models import tiny
from evals import generate
from pretrain.model.kv_cache import KVCache
from pretrain.model.transformer import Transformer, TransformerConfig, repeat_pattern

VOCAB, WINDOW, NEW_TOKENS, WIDTH = 320, 8, 24, 48
# Longest first: generate_ids batches prompts by length, so row i of the batch is prompt i.
PROMPTS = [[2] + list(range(100, 113)), [2, 7, 300, 8, 9, 250, 11, 12, 13], [2, 40, 41, 42]]
MODELS = {
    "gemma_mha_scanned": dict(family="gemma", num_kv_heads=4, scan_layers=True, num_layers=2),
    "gemma2_mqa": dict(family="gemma2", num_kv_heads=1),
    "gemma3_gqa_scanned_cut_short": dict(family="gemma3", num_kv_heads=2, scan_layers=True, num_layers=7),
}


def model_config(family: str, **fields) -> TransformerConfig:
    """The family's tiny model (configs/models/tiny.py) at test sizes, window 8."""
    values = tiny.get_config(family).to_dict() | dict(
        vocab_size=VOCAB, embed_dim=64, num_heads=4, head_dim=16, hidden_dim=96, max_seq_len=64
    )
    if family != "gemma":
        values["sliding_window"] = WINDOW
    values |= fields  # a layer count the family's pattern does not divide cuts its last repeat short
    values["attention_pattern"] = repeat_pattern(values["attention_pattern"], values["num_layers"])
    return TransformerConfig.from_config_dict(values)


def random_weights(transformer: Transformer, seed: int = 0) -> dict:
    """Normal weights of deviation 1 / sqrt(last axis) (norm scales 1), the embedding's 0.3 times
    that so that the blocks outweigh it (else a random model mostly repeats its input), made
    from the shapes alone: nothing compiles."""
    tokens = jnp.zeros((1, 8), jnp.int32)
    shapes = nn.unbox(jax.eval_shape(transformer.init, jax.random.key(0), tokens, tokens, tokens)["params"])
    rng = np.random.default_rng(seed)

    def weight(path, x):
        scale = (0.3 if "embedder" in jax.tree_util.keystr(path) else 1.0) / np.sqrt(
            x.shape[-1] if x.ndim > 1 else 1
        )
        return jnp.asarray(rng.normal(size=x.shape) * scale, jnp.float32)

    return jax.tree_util.tree_map_with_path(weight, shapes)


@pytest.fixture(scope="module", params=list(MODELS))
def generator(request):
    """run(decoder kind, prompts, sampling) -> (generated ids, the logits of every forward in
    order), with one decoder of each kind per model (each compiles once)."""
    transformer = Transformer(model_config(**MODELS[request.param]))
    params, log = random_weights(transformer), []

    def recorded(params, tokens, positions, segment_ids, **decoding):
        out = transformer.apply({"params": params}, tokens, positions, segment_ids, **decoding)
        jax.debug.callback(lambda x: log.append(np.asarray(x)), out[0] if decoding else out, ordered=True)
        return out

    decoders = {kind: kind(recorded, VOCAB) for kind in (generate.RecomputeDecoder, generate.KVCacheDecoder)}

    def run(kind, prompts, sampling=generate.Sampling()):
        log.clear()
        ids = generate.generate_ids(
            decoders[kind],
            params,
            prompts,
            NEW_TOKENS,
            max_length=WIDTH,
            batch_size=len(PROMPTS),
            sampling=sampling,
            length_multiple=WIDTH,
        )
        jax.effects_barrier()
        return ids, list(log)

    return run


@pytest.fixture(scope="module")
def greedy(generator):
    """{decoder kind: (ids, logits)} of the batched prompts, greedy."""
    return {kind: generator(kind, PROMPTS) for kind in (generate.RecomputeDecoder, generate.KVCacheDecoder)}


def test_cached_logits_and_ids_equal_the_recompute_reference(generator, greedy):
    (ids, recomputed), (cached_ids, cached) = (
        greedy[generate.RecomputeDecoder],
        greedy[generate.KVCacheDecoder],
    )
    assert cached_ids == ids
    assert len(recomputed) == NEW_TOKENS and len(cached) == 1 + NEW_TOKENS  # the prefill, then steps
    assert all(len(set(g)) > 5 for g in ids)  # varied continuations, not one token repeated
    longest = max(map(len, PROMPTS))
    for step in range(NEW_TOKENS):
        assert cached[1 + step].shape == (len(PROMPTS), 1, VOCAB)  # one column per step
        want = recomputed[step][:, longest - 1 + step]
        np.testing.assert_allclose(cached[1 + step][:, 0], want, atol=1e-4, rtol=0)

    sampling = generate.Sampling(temperature=1.0, top_p=0.9, seed=5)
    sampled, _ = generator(generate.KVCacheDecoder, PROMPTS, sampling)
    assert sampled == generator(generate.RecomputeDecoder, PROMPTS, sampling)[0]
    assert sampled != ids  # it samples


def test_left_padding_is_never_attended(generator, greedy):
    """Each prompt alone starts at column 0 of its buffer; batched, the shorter ones sit after
    padding. Attending the padding (or a window reaching into it) would change their logits."""
    batched_ids, batched = greedy[generate.KVCacheDecoder]
    for row, prompt in enumerate(PROMPTS):
        alone_ids, alone = generator(generate.KVCacheDecoder, [prompt])
        assert alone_ids[0] == batched_ids[row]
        for step in range(1, 1 + NEW_TOKENS):
            np.testing.assert_allclose(alone[step][0, 0], batched[step][row, 0], atol=1e-4, rtol=0)


def test_the_cache_is_in_the_activation_dtype_and_logits_float32():
    config = model_config("gemma2", num_kv_heads=2, scan_layers=True, num_layers=3, dtype="bfloat16")
    transformer, tokens = Transformer(config), jnp.zeros((2, 16), jnp.int32)
    params = jax.eval_shape(transformer.init, jax.random.key(0), tokens, tokens, tokens)
    logits, cache = jax.eval_shape(
        lambda p: transformer.apply(p, tokens, tokens, tokens, cache=KVCache.start(tokens, tokens)), params
    )
    assert logits.dtype == jnp.float32
    shapes = {
        jax.tree_util.keystr(path): (x.shape, x.dtype)
        for path, x in jax.tree_util.tree_leaves_with_path(cache.layers)
    }
    assert len(shapes) == 2 * 3  # keys and values of every layer
    assert shapes["['layers']['block_1'][0]"] == ((1, 2, 16, 2, 16), jnp.bfloat16)  # stacked repeats
    assert shapes["['layer_2'][1]"] == ((2, 16, 2, 16), jnp.bfloat16)  # the cut-short repeat's layer
