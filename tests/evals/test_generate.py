"""evals.generate on a tiny random Gemma: batched, padded generation equals the plain
step-by-step argmax of each prompt alone; stop strings cut; sampling is per request."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evals import generate
from pretrain.model.transformer import Transformer
from tests.support.export import TOKENIZER_PIECES, lively, tiny_config, train_tokenizer
from tokenizer.special_ids import EOS_ID
from tokenizer.vocab import load_vocabulary

MAX_LENGTH = 64
PROMPTS = [[2, 17, 45, 99, 4], [2, 250], [2, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], [2, 60, 61]]


@pytest.fixture(scope="module")
def model():
    transformer = Transformer(tiny_config(num_kv_heads=1))
    tokens = jnp.zeros((1, 8), jnp.int32)
    params = lively(nn.unbox(jax.jit(transformer.init)(jax.random.key(0), tokens, tokens, tokens)["params"]))

    def forward(params, tokens, positions, segment_ids, **decoding):
        return transformer.apply({"params": params}, tokens, positions, segment_ids, **decoding)

    return forward, params


@pytest.fixture(scope="module")
def decoder(model):
    return generate.RecomputeDecoder(model[0], vocab_size=TOKENIZER_PIECES)


def reference_greedy(forward, params, prompt: list[int], max_new: int) -> list[int]:
    """The prompt alone at the start of a row (positions from 0, no left padding), grown one
    argmax token at a time; the rest of the row is later positions, which causal attention
    never reads."""
    apply = jax.jit(forward)
    tokens, generated = list(prompt), []
    for _ in range(max_new):
        n = len(tokens)
        row = np.zeros((1, MAX_LENGTH), np.int32)
        row[0, :n] = tokens
        logits = apply(params, row, np.arange(MAX_LENGTH)[None], np.ones((1, MAX_LENGTH), np.int32))[0, n - 1]
        token = int(jnp.argmax(logits[:TOKENIZER_PIECES]))
        if token == EOS_ID:
            break
        generated.append(token)
        tokens.append(token)
    return generated


def test_greedy_equals_stepwise_argmax_of_each_prompt_alone(model, decoder):
    forward, params = model
    got = generate.generate_ids(
        decoder, params, PROMPTS, 6, max_length=MAX_LENGTH, batch_size=3, length_multiple=32
    )
    want = [reference_greedy(forward, params, p, 6) for p in PROMPTS]
    assert got == want
    assert all(len(set(g)) > 2 for g in got)  # a varied continuation, not one token repeated


def test_batching_and_padding_do_not_change_results(model, decoder):
    _, params = model
    run = dict(max_length=MAX_LENGTH, batch_size=4, length_multiple=32)  # one shape: one compile
    one_by_one = [generate.generate_ids(decoder, params, [p], 6, **run)[0] for p in PROMPTS]
    batched = generate.generate_ids(decoder, params, PROMPTS, 6, **run)
    assert batched == one_by_one
    sampled = generate.Sampling(temperature=1.0, seed=3)
    alone = [generate.generate_ids(decoder, params, [p], 6, sampling=sampled, **run)[0] for p in PROMPTS]
    assert alone != one_by_one  # it samples
    # Request i's draws are fixed by (seed, i, step), not by what shares its batch: each
    # prompt alone is request 0 of its call, as it is in front of another prompt.
    for p, a in zip(PROMPTS, alone):
        assert generate.generate_ids(decoder, params, [p, PROMPTS[0]], 6, sampling=sampled, **run)[0] == a


def test_long_prompts_keep_their_last_tokens(model, decoder):
    _, params = model
    long = list(range(5, 5 + 70))
    run = dict(max_length=MAX_LENGTH, batch_size=4, length_multiple=32)
    got = generate.generate_ids(decoder, params, [long], 4, **run)
    tail = generate.generate_ids(decoder, params, [long[-(MAX_LENGTH - 4) :]], 4, **run)
    assert got == tail
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate.generate_ids(decoder, params, [long], MAX_LENGTH, max_length=MAX_LENGTH)


def test_choose_greedy_nucleus_and_distribution():
    choose = jax.jit(generate.choose, static_argnames="vocab_size")
    n = 3000
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * n))
    keys = jax.random.split(jax.random.key(0), n)
    assert set(np.asarray(choose(logits, keys, 0.0, 1.0)).tolist()) == {0}
    assert set(np.asarray(choose(logits, keys, 1.0, 0.7)).tolist()) == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3
    counts = np.bincount(np.asarray(choose(logits, keys, 1.0, 1.0)), minlength=4)
    np.testing.assert_allclose(counts / n, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    masked = choose(logits[:, ::-1], keys, 0.0, 1.0, vocab_size=3)
    assert set(np.asarray(masked).tolist()) == {2}  # id 3 is past the tokenizer's pieces


def test_cut_at_stop_earliest_of_all():
    # Cases from lm-evaluation-harness tests/test_bbh_stop_sequences.py (its until list).
    until = ["</s>", "Q:", "\n\n"]
    assert generate.cut_at_stop("The color of the mug is purple. So the answer is (Q).", until).endswith(
        "(Q)."
    )
    stopped = generate.cut_at_stop("So the answer is (B).\nQ: Today is Christmas Eve of 1937.", until)
    assert stopped == "So the answer is (B).\n"
    assert generate.cut_at_stop("a\n\nb Q: c", ["Q:", "\n\n"]) == "a"
    assert generate.cut_at_stop("abc", ["", "z"]) == "abc"


class CountingDecoder:
    def __init__(self, inner):
        self.inner, self.steps = inner, 0

    def start(self, *args):
        return self.inner.start(*args)

    def step(self, *args):
        self.steps += 1
        return self.inner.step(*args)


@pytest.mark.parametrize("kind", [generate.RecomputeDecoder, generate.KVCacheDecoder])
def test_stop_strings_cut_text_and_end_generation(model, kind, tmp_path):
    """The same for both decoders (tests/evals/test_kv_cache_decoding.py compares them further)."""
    forward, params = model
    vocab = load_vocabulary(train_tokenizer(tmp_path))
    counting = CountingDecoder(kind(forward, vocab_size=TOKENIZER_PIECES))
    fn = generate.make_generate_fn(
        forward, params, vocab, max_length=MAX_LENGTH, batch_size=4, length_multiple=32, decoder=counting
    )
    prompt = "gemma model token"
    (full,) = fn([prompt], 24, ())
    assert counting.steps == 24 and len(full) > 6
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    counting.steps = 0
    (cut,) = fn([prompt], 24, (stop,))
    assert cut == full[: full.find(stop)]
    assert counting.steps < 24  # stopped once the stop string appeared, not at the budget
    ids = [2] + list(vocab.encode(prompt))
    reference = reference_greedy(forward, params, ids, 24)
    assert full == vocab.decode(reference)
