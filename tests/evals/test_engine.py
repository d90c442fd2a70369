"""The packed engine against an unpacked, one-request-at-a-time reference, and its packing."""

from __future__ import annotations

import random

import jax
import numpy as np
import pytest

from evals.engine import Engine, Request, pack, window
from tests.support.devices import run_on_devices

VOCAB = 256
REF_LEN = 48


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


def test_packed_scores_equal_one_request_at_a_time(tiny_model):
    model, params = tiny_model
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


def test_one_compile_per_row_shape(tiny_model):
    model, params = tiny_model
    engine = Engine(forward_of(model), params, row_len=32, batch_rows=2)
    engine.score(random_requests(30, seed=2))  # several batches
    engine.score(random_requests(5, seed=3))
    assert engine._step._cache_size() == 1


def test_long_request_is_cut_on_the_left_like_lm_eval(tiny_model):
    model, params = tiny_model
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


SHARDED = """
import random
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from evals.engine import Engine, Request
from pretrain import sharding
from pretrain.model.transformer import Transformer, TransformerConfig
from tests.support.train import tiny_config

model = Transformer(TransformerConfig.from_config_dict(tiny_config("").model))
dummy = jnp.zeros((1, 8), jnp.int32)
params = jax.jit(model.init)(jax.random.PRNGKey(0), dummy, dummy, dummy + 1)["params"]
mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
rules = sharding.logical_rules(None)
boxed = jax.eval_shape(lambda r: model.init(r, dummy, dummy, dummy + 1)["params"], jax.random.PRNGKey(0))
placed = jax.device_put(nn.unbox(params), sharding.mesh_shardings(boxed, mesh, rules))
rng = random.Random(6)
requests = [Request(tuple(rng.randrange(4, 256) for _ in range(rng.randint(1, 20))),
                    tuple(rng.randrange(4, 256) for _ in range(rng.randint(1, 6)))) for _ in range(12)]

def forward(p, *args):
    with nn.logical_axis_rules(rules):
        return model.apply({"params": p}, *args)

alone = Engine(forward, nn.unbox(params), row_len=32, batch_rows=4).score(requests)
with jax.set_mesh(mesh):
    spread = Engine(forward, placed, row_len=32, batch_rows=4,
                    batch_sharding=NamedSharding(mesh, P(("data", "fsdp"), None))).score(requests)
print(max(abs(a.loglikelihood - b.loglikelihood) for a, b in zip(alone, spread)))
print(all(a.is_greedy == b.is_greedy for a, b in zip(alone, spread)))
"""


def test_sharded_on_an_8_device_mesh_equals_one_device():
    """Batch over data x fsdp, weights over fsdp and tensor: the same scores as one device."""
    diff, greedy = run_on_devices(SHARDED).split()
    assert float(diff) < 1e-5 and greedy == "True"


def test_softmax_over_the_tokenizers_pieces_only(tiny_model):
    """vocab_size=V: the scores of a model whose logits stop at V (the export's embedding)."""
    model, params = tiny_model
    requests = random_requests(6, seed=7)
    requests = [
        Request(tuple(t % 200 for t in r.context), tuple(t % 200 for t in r.continuation)) for r in requests
    ]
    cut = Engine(forward_of(model), params, row_len=32, batch_rows=2, vocab_size=200).score(requests)
    full = Engine(lambda p, *a: forward_of(model)(p, *a)[..., :200], params, row_len=32, batch_rows=2).score(
        requests
    )
    whole = Engine(forward_of(model), params, row_len=32, batch_rows=2).score(requests)
    assert [s.loglikelihood for s in cut] == pytest.approx([s.loglikelihood for s in full], abs=1e-6)
    assert all(c.loglikelihood > w.loglikelihood for c, w in zip(cut, whole))  # fewer tokens share the mass
