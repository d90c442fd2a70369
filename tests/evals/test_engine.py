"""The packed engine against an unpacked, one-request-at-a-time reference, and its packing."""

from __future__ import annotations

import random

import jax
import numpy as np
import pytest

from evals.engine import Engine, Request, pack, window
from pretrain.model.transformer import Transformer, TransformerConfig
from tests.support.train import tiny_config

VOCAB = 256
REF_LEN = 48


@pytest.fixture(scope="module")
def model_and_params():
    cfg = TransformerConfig.from_config_dict(tiny_config("").model)
    model = Transformer(cfg)
    tokens = np.zeros((1, 8), np.int32)
    params = model.init(jax.random.PRNGKey(0), tokens, tokens, tokens + 1)["params"]
    return model, params


def forward_of(model):
    return lambda params, inputs, positions, segments: model.apply(
        {"params": params}, inputs, positions, segments
    )


def reference(model, params, request: Request) -> tuple[float, bool]:
    """The request alone in its own row (right-padded to one shape: the causal mask keeps the
    padding out of every real position), log-softmax in float64."""
    tokens = np.array(request.context + request.continuation)
    n = len(tokens) - 1
    inputs, segments = np.zeros((1, REF_LEN), np.int32), np.zeros((1, REF_LEN), np.int32)
    inputs[0, :n], segments[0, :n] = tokens[:-1], 1
    logits = np.asarray(
        _apply(model)({"params": params}, inputs, np.arange(REF_LEN)[None], segments), np.float64
    )
    logits = logits[0, :n]
    m = logits.max(-1, keepdims=True)
    log_probs = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    k = len(request.continuation)
    rows = np.arange(n - k, n)
    targets = tokens[1:][rows]
    return float(log_probs[rows, targets].sum()), bool((logits[rows].argmax(-1) == targets).all())


_JITTED = {}


def _apply(model):
    if model not in _JITTED:
        _JITTED[model] = jax.jit(model.apply)
    return _JITTED[model]


def random_requests(n: int, seed: int) -> list[Request]:
    rng = random.Random(seed)
    return [
        Request(
            tuple(rng.randrange(4, VOCAB) for _ in range(rng.randint(1, 20))),
            tuple(rng.randrange(4, VOCAB) for _ in range(rng.randint(1, 6))),
        )
        for _ in range(n)
    ]


def test_packed_scores_equal_one_request_at_a_time(model_and_params):
    model, params = model_and_params
    requests = random_requests(23, seed=1)
    # a continuation the model predicts greedily: its own argmax after the context
    ctx = requests[0].context
    logits = model.apply(
        {"params": params}, np.array([ctx]), np.arange(len(ctx))[None], np.ones((1, len(ctx)), np.int32)
    )
    requests.append(Request(ctx, (int(np.argmax(logits[0, -1])),)))  # greedy by construction
    engine = Engine(forward_of(model), params, row_len=32, batch_rows=2)
    scores = engine.score(requests)
    assert len(scores) == len(requests)
    for request, score in zip(requests, scores):
        expected, greedy = reference(model, params, request)
        assert score.loglikelihood == pytest.approx(expected, abs=1e-5)
        assert score.is_greedy == greedy
    assert scores[-1].is_greedy
    assert not all(s.is_greedy for s in scores)


def test_one_compile_per_row_shape(model_and_params):
    model, params = model_and_params
    engine = Engine(forward_of(model), params, row_len=32, batch_rows=2)
    engine.score(random_requests(30, seed=2))  # several batches
    engine.score(random_requests(5, seed=3))
    assert engine._step._cache_size() == 1


def test_long_request_is_cut_on_the_left_like_lm_eval(model_and_params):
    model, params = model_and_params
    rng = random.Random(4)
    long = Request(
        tuple(rng.randrange(4, VOCAB) for _ in range(40)), tuple(rng.randrange(4, VOCAB) for _ in range(3))
    )
    tokens, scored = window(long, 16)
    assert tokens == list(long.context + long.continuation)[-17:] and scored == 3
    (score,) = Engine(forward_of(model), params, row_len=16, batch_rows=1).score([long])
    cut = Request(tuple(tokens[:-3]), long.continuation)
    assert score.loglikelihood == pytest.approx(reference(model, params, cut)[0], abs=1e-5)


def test_pack_fills_rows_without_overflow():
    rng = random.Random(5)
    lengths = [rng.randint(1, 32) for _ in range(200)]
    rows = pack(lengths, 32)
    assert sorted(i for row in rows for i in row) == list(range(200))
    assert all(sum(lengths[i] for i in row) <= 32 for row in rows)
    assert len(rows) <= -(-sum(lengths) // 32) * 1.2  # near the lower bound
    with pytest.raises(ValueError, match="more than a row"):
        pack([33], 32)
