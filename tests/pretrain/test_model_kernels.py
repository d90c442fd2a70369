"""The memory-saving execution paths compute the reference's maths: fused chunked
cross-entropy, the attention cores (splash in Pallas interpret mode, the cuDNN call on
its XLA implementation) and the layer scan, each against the plain path, values and
gradients, on packed rows."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pretrain.model import attention
from pretrain.model.cross_entropy import chunked_token_losses, token_chunked_objective, token_losses
from pretrain.model.transformer import Transformer, TransformerConfig, stack_layers, unstack_layers
from pretrain.train_step import make_loss_fn
from tests.support.devices import run_on_devices

TINY = TransformerConfig(
    vocab_size=256, num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=1, head_dim=16, hidden_dim=128
)


def _packed_segments(rows: int, length: int) -> np.ndarray:
    """Rows of 2-3 documents of uneven lengths, one row ending in padding (segment 0)."""
    seg = np.ones((rows, length), np.int32)
    seg[:, length // 3 :] = 2
    seg[:, 3 * length // 4 :] = 3
    seg[-1, -length // 8 :] = 0
    return seg


def _ce_inputs(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.normal(size=(2, 12, 32)), dtype)
    embedding = jnp.asarray(rng.normal(size=(96, 32)) * 0.3, jnp.float32)
    targets = jnp.asarray(rng.integers(0, 96, (2, 12)), jnp.int32)
    return hidden, embedding, targets


def _reference_ce(hidden, embedding, targets, dtype):
    logits = jnp.einsum(
        "BTD,VD->BTV", hidden.astype(dtype), embedding.astype(dtype), preferred_element_type=jnp.float32
    )
    return token_losses(logits, targets)


@pytest.mark.parametrize("chunks", [1, 4, 96])
def test_chunked_cross_entropy_matches_full_logits_values_and_gradients(chunks):
    hidden, embedding, targets = _ce_inputs()
    weights = jnp.linspace(0.0, 1.0, targets.size).reshape(targets.shape)

    def objective(fn):  # cross-entropy plus a z-loss term: cotangents reach both outputs
        def f(h, e):
            ce, log_z = fn(h, e)
            return jnp.sum(weights * (ce + 0.1 * jnp.square(log_z)))

        return jax.value_and_grad(f, argnums=(0, 1))(hidden, embedding)

    want, want_grads = objective(lambda h, e: _reference_ce(h, e, targets, jnp.float32))
    got, got_grads = objective(lambda h, e: chunked_token_losses(h, e, targets, chunks, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    ce, log_z = chunked_token_losses(hidden, embedding, targets, chunks, jnp.float32)
    want_ce, want_log_z = _reference_ce(hidden, embedding, targets, jnp.float32)
    np.testing.assert_allclose(ce, want_ce, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_z, want_log_z, rtol=1e-6)


def test_chunked_cross_entropy_bf16_matches_the_models_bf16_output_layer():
    hidden, embedding, targets = _ce_inputs(jnp.bfloat16)
    got = chunked_token_losses(hidden, embedding, targets, 8, jnp.bfloat16)
    want = _reference_ce(hidden, embedding, targets, jnp.bfloat16)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_chunked_cross_entropy_rejects_a_chunk_count_that_does_not_divide_the_vocabulary():
    hidden, embedding, targets = _ce_inputs()
    with pytest.raises(ValueError, match="divide the vocabulary"):
        chunked_token_losses(hidden, embedding, targets, 5, jnp.float32)
    with pytest.raises(ValueError, match="config.model.vocab_chunks"):
        TransformerConfig.from_config_dict({**TINY.to_dict(), "vocab_chunks": 7})


@pytest.mark.parametrize("chunks", [1, 3, 12])
@pytest.mark.parametrize("z_loss", [0.0, 0.1])
def test_token_chunked_objective_matches_full_logits_values_and_gradients(chunks, z_loss):
    hidden, embedding, targets = _ce_inputs()
    weights = jnp.linspace(0.0, 1.0, targets.size).reshape(targets.shape)

    def reference(h, e):
        ce, log_z = _reference_ce(h, e, targets, jnp.float32)
        return jnp.sum(weights * (ce + z_loss * jnp.square(log_z))), (ce, log_z)

    def chunked(h, e):
        objective, ce, log_z = token_chunked_objective(h, e, targets, weights, z_loss, chunks, jnp.float32)
        return objective, (ce, log_z)

    for scale in (1.0, 2.5):  # the backward pass scales the gradients built in the forward pass
        grad = lambda f, scale=scale: jax.value_and_grad(lambda h, e: scale * f(h, e)[0], argnums=(0, 1))
        want, want_grads = grad(reference)(hidden, embedding)
        got, got_grads = jax.jit(grad(chunked))(hidden, embedding)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        for g, w in zip(got_grads, want_grads):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    (got, (ce, log_z)), (want, (want_ce, want_log_z)) = (
        chunked(hidden, embedding),
        reference(hidden, embedding),
    )
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(ce, want_ce, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_z, want_log_z, rtol=1e-6)


def test_token_chunked_objective_passes_no_gradient_through_the_per_token_losses():
    """Only the objective is differentiable: a loss built on the returned ce must not
    silently receive the objective's gradient (the forward pass built that one)."""
    hidden, embedding, targets = _ce_inputs()
    weights = jnp.ones(targets.shape)
    grads = jax.grad(
        lambda h: jnp.sum(token_chunked_objective(h, embedding, targets, weights, 0.0, 4, jnp.float32)[1])
    )(hidden)
    np.testing.assert_array_equal(grads, 0.0)


def test_token_chunked_objective_bf16_matches_the_models_bf16_output_layer():
    hidden, embedding, targets = _ce_inputs(jnp.bfloat16)
    weights = jnp.ones(targets.shape)
    _, ce, log_z = token_chunked_objective(hidden, embedding, targets, weights, 0.0, 4, jnp.bfloat16)
    for g, w in zip((ce, log_z), _reference_ce(hidden, embedding, targets, jnp.bfloat16)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_token_chunks_is_checked_against_the_sequence_and_the_vocabulary_chunks():
    hidden, embedding, targets = _ce_inputs()
    with pytest.raises(ValueError, match="divide the sequence length"):
        token_chunked_objective(hidden, embedding, targets, jnp.ones(targets.shape), 0.0, 5, jnp.float32)
    with pytest.raises(ValueError, match="config.model.token_chunks: .*not both"):
        TransformerConfig.from_config_dict({**TINY.to_dict(), "vocab_chunks": 8, "token_chunks": 4})
    with pytest.raises(ValueError, match="config.model.token_chunks"):
        TransformerConfig.from_config_dict({**TINY.to_dict(), "token_chunks": -1})


def _batch(rows=4, length=32, seed=0):
    rng = np.random.default_rng(seed)
    seg = _packed_segments(rows, length)
    positions = np.zeros_like(seg)
    for r in range(rows):
        for s in np.unique(seg[r]):
            idx = np.flatnonzero(seg[r] == s)
            positions[r, idx] = np.arange(len(idx))
    tokens = rng.integers(0, 256, (rows, length + 1)).astype(np.int32)
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "segment_ids": seg,
        "positions": positions,
        "loss_weights": (seg > 0).astype(np.float32),
        "task_ids": np.arange(rows, dtype=np.int32) % 2,
    }


def _params(config):
    dummy = jnp.zeros((1, 8), jnp.int32)
    return nn.unbox(Transformer(config).init(jax.random.key(1), dummy, dummy, dummy)["params"])


def test_train_loss_with_fused_cross_entropy_equals_the_full_logits_loss():
    """Both fused forms: objective, per-task sums and every parameter gradient, z-loss on."""
    batch, params = _batch(), _params(TINY)
    total = jnp.float32(batch["loss_weights"].sum())

    def run(config):
        loss_fn = make_loss_fn(Transformer(config), 1e-3, num_tasks=2)
        return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, batch, total)

    (want, want_sums), want_grads = run(TINY)
    for fused in (dict(vocab_chunks=8), dict(token_chunks=4)):
        (got, got_sums), got_grads = run(dataclasses.replace(TINY, **fused))
        np.testing.assert_allclose(got, want, rtol=1e-6)
        for key in want_sums:
            np.testing.assert_allclose(got_sums[key], want_sums[key], rtol=1e-6, atol=1e-7)
        jax.tree.map(
            lambda g, w: np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-7), got_grads, want_grads
        )


def _qkv(kv_heads, length=256, heads=4, dim=32):
    rng = np.random.default_rng(kv_heads)
    shape = (2, length)
    q = jnp.asarray(rng.normal(size=(*shape, heads, dim)) / np.sqrt(dim), jnp.float32)
    k = jnp.asarray(rng.normal(size=(*shape, kv_heads, dim)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(*shape, kv_heads, dim)), jnp.float32)
    return q, k, v, jnp.asarray(_packed_segments(2, length))


CORES = {  # (q, k, v, segment_ids, window) -> out
    "xla": lambda q, k, v, s, w: attention.xla_attention(q, k, v, s, jnp.float32, w),
    "splash": lambda q, k, v, s, w: attention.splash_attention(
        q, k, v, s, interpret=True, block=128, window=w
    ),
    "cudnn_dense_mask": lambda q, k, v, s, w: attention.dense_mask_attention(
        q, k, v, s, implementation=None, window=w
    ),
    # The packed (ragged) layout as cuDNN defines it, on the layout our rows produce...
    "cudnn_packed": lambda q, k, v, s, w: attention.cudnn_attention(
        q, k, v, s, 4, attention.ragged_reference, dense_implementation=None, window=w
    ),
    # ...and a row with more documents than the layout describes takes the dense-mask branch.
    "cudnn_too_many_documents": lambda q, k, v, s, w: attention.cudnn_attention(
        q, k, v, s, 2, attention.ragged_reference, dense_implementation=None, window=w
    ),
}


def _dense_reference(q, k, v, seg, window=0, softcap=0.0):
    """Attention written out plainly: repeated kv heads, a mask built from index loops."""
    seg = np.asarray(seg)
    rows, length = seg.shape
    t, s = np.arange(length)[:, None], np.arange(length)[None, :]
    visible = (s <= t) & ((t - s < window) if window else True)
    mask = np.stack([visible & (seg[r][:, None] == seg[r][None, :]) for r in range(rows)])
    group = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    logits = jnp.einsum("btnh,bsnh->bnts", q, k)
    if softcap:
        logits = softcap * jnp.tanh(logits / softcap)
    logits = jnp.where(mask[:, None], logits, -1e30)
    return jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(logits, axis=-1), v)


def test_document_layout_describes_each_run_of_segment_ids():
    seg = jnp.asarray([[1, 1, 1, 2, 2, 3, 0, 0], [5, 5, 5, 5, 5, 5, 5, 5], [1, 2, 1, 2, 1, 2, 1, 2]])
    offsets, lengths, counts = attention.document_layout(seg, 4)
    np.testing.assert_array_equal(counts, [4, 1, 8])
    np.testing.assert_array_equal(offsets[:2], [[0, 3, 5, 6, -1], [0, -1, -1, -1, -1]])
    np.testing.assert_array_equal(lengths[:2], [[3, 2, 1, 2], [8, -1, -1, -1]])
    # Every position of a described row lies in exactly one run.
    for r in range(2):
        covered = np.zeros(8, int)
        for o, n in zip(np.asarray(offsets[r, :-1]), np.asarray(lengths[r])):
            if o >= 0:
                covered[o : o + n] += 1
        assert (covered == 1).all()


def test_the_packed_branch_is_taken_only_when_every_row_fits():
    q, k, v, seg = _qkv(1)  # rows of 3 documents (one with padding: 4 runs)

    def poisoned(q, k, v, offsets, lengths, window):
        return jnp.full_like(q, jnp.nan)

    fits = attention.cudnn_attention(q, k, v, seg, 4, poisoned, dense_implementation=None)
    overflows = attention.cudnn_attention(q, k, v, seg, 3, poisoned, dense_implementation=None)
    assert np.isnan(np.asarray(fits)).all() and np.isfinite(np.asarray(overflows)).all()


def _assert_matches_reference(fn, q, k, v, seg, window=0, softcap=0.0):
    probe = jnp.asarray(np.random.default_rng(9).normal(size=q.shape), jnp.float32)

    def loss(f):
        return jax.value_and_grad(lambda q, k, v: jnp.sum(f(q, k, v) * probe), argnums=(0, 1, 2))(q, k, v)

    want, want_grads = loss(lambda q, k, v: _dense_reference(q, k, v, seg, window, softcap))
    got, got_grads = loss(fn)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(w))))


# Window 48: every document of the packed rows (85, 107 and 64 tokens) is longer than it.
@pytest.mark.parametrize("core", sorted(CORES))
@pytest.mark.parametrize(  # MQA (Gemma 2B, 3 1B), MHA (7B); GQA (Gemma 2, 3 4B) with the window
    "kv_heads,window", [(1, 0), (4, 0), (1, 48), (2, 48)], ids=["mqa", "mha", "mqa-window48", "gqa-window48"]
)
def test_attention_cores_match_the_dense_reference_on_packed_rows(core, kv_heads, window):
    q, k, v, seg = _qkv(kv_heads)
    _assert_matches_reference(lambda q, k, v: CORES[core](q, k, v, seg, window), q, k, v, seg, window)


@pytest.mark.parametrize("window", [0, 48], ids=["causal", "window48"])
@pytest.mark.parametrize("core", ["xla", "splash", "cudnn"])
def test_attention_logit_softcap_in_every_core(core, window):
    """Gemma 2's soft-cap: splash applies it in the kernel; "cudnn" routes to the XLA core."""
    q, k, v, seg = _qkv(2)
    q = q * 8.0  # logits of tens, where tanh capping at 20 changes them
    if core == "splash":
        fn = lambda q, k, v: attention.splash_attention(  # noqa: E731
            q, k, v, seg, interpret=True, block=128, window=window, softcap=20.0
        )
    else:
        fn = lambda q, k, v: attention.attend(q, k, v, seg, core, jnp.float32, window=window, softcap=20.0)  # noqa: E731
    _assert_matches_reference(fn, q, k, v, seg, window, 20.0)
    assert not np.allclose(fn(q, k, v), _dense_reference(q, k, v, seg, window), atol=1e-3)


def test_splash_local_mask_skips_the_blocks_outside_the_window():
    """The kernel's block mask visits, per 128-row query block, only the key blocks the window reaches."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    def visited(mask):
        sizes = splash.BlockSizes(**{f: 128 for f in ("block_q", "block_kv", "block_kv_compute", "block_q_dkv",
                                                     "block_kv_dkv", "block_kv_dkv_compute", "block_q_dq",
                                                     "block_kv_dq")})  # fmt: skip
        kernel = splash.make_splash_mqa(
            splash.MultiHeadMask([mask]), block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=True
        )
        return int((np.asarray(kernel.fwd_mask_info.block_mask) > 0).sum())

    assert visited(attention.splash_mask(1024)) == 8 * 9 // 2  # causal: the lower triangle
    assert visited(attention.splash_mask(1024, 256)) == 1 + 2 + 6 * 3  # window 256: 3 blocks at most


def test_documents_do_not_see_each_other_in_any_core():
    """Changing document 1's values leaves document 2's outputs unchanged (and vice versa is causal)."""
    q, k, v, seg = _qkv(1)
    later = np.asarray(seg[0]) == 2
    v2 = v.at[:, np.flatnonzero(np.asarray(seg[0]) == 1)].add(5.0)
    for core in CORES.values():
        a, b = core(q, k, v, seg, 0), core(q, k, v2, seg, 0)
        np.testing.assert_allclose(a[0, later], b[0, later], atol=1e-6)
        assert not np.allclose(a[0, ~later], b[0, ~later])


def test_scanned_layers_compute_the_same_loss_and_map_to_per_layer_params():
    batch, params = _batch(), _params(TINY)
    scanned = dataclasses.replace(TINY, scan_layers=True, remat_policy="full")
    stacked = stack_layers(params, TINY.num_layers)
    assert jax.tree.structure(stacked) == jax.tree.structure(_params(scanned))
    assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, _params(scanned))
    jax.tree.map(np.testing.assert_array_equal, unstack_layers(stacked, TINY.num_layers), params)
    total = jnp.float32(batch["loss_weights"].sum())

    def run(config, p):
        loss_fn = make_loss_fn(Transformer(config), 0.0, num_tasks=2)
        return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(p, batch, total)

    (want, _), want_grads = run(TINY, params)
    (got, _), got_grads = run(scanned, stacked)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    jax.tree.map(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7),
        unstack_layers(got_grads, TINY.num_layers),
        want_grads,
    )


def test_a_scanned_checkpoint_exports_the_same_hugging_face_tensors(tmp_path):
    from safetensors.numpy import load_file

    from pretrain.convert import export

    params = _params(TINY)
    scanned = dataclasses.replace(TINY, scan_layers=True)
    export.export_hf(params, TINY, None, tmp_path / "layers", dtype="float32")
    export.export_hf(stack_layers(params, TINY.num_layers), scanned, None, tmp_path / "scan", dtype="float32")
    want, got = (load_file(tmp_path / d / "model.safetensors") for d in ("layers", "scan"))
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


_SHARDED = textwrap.dedent("""
    import dataclasses, json, sys
    import flax.linen as nn, jax, jax.numpy as jnp, numpy as np, optax
    sys.path.insert(0, "tests/pretrain")
    from pretrain import sharding
    from pretrain.model.transformer import Transformer, TransformerConfig, abstract_variables, stack_layers
    from pretrain.train_step import make_loss_fn
    from test_model_kernels import _batch

    assert jax.device_count() == 8
    errors = {}
    for kv, shape in ((1, (2, 4, 1)), (4, (1, 4, 2))):
        ref = TransformerConfig(vocab_size=256, num_layers=2, embed_dim=32, num_heads=4,
                                num_kv_heads=kv, head_dim=16, hidden_dim=64)
        batch = _batch(rows=8, length=128, seed=kv)
        total = jnp.float32(batch["loss_weights"].sum())
        dummy = jnp.zeros((1, 8), jnp.int32)
        params = nn.unbox(Transformer(ref).init(jax.random.key(0), dummy, dummy, dummy)["params"])
        grad_fn = lambda cfg, rules=(): jax.jit(jax.value_and_grad(make_loss_fn(Transformer(cfg), 1e-3, 2, rules),
                                                                   has_aux=True))
        (want, _), want_grads = grad_fn(ref)(params, batch, total)
        want_grads = stack_layers(want_grads, 2)
        mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, shape)))
        rules = sharding.logical_rules(None)
        rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
        for loss, fields in (("vocab", dict(vocab_chunks=4)), ("token", dict(token_chunks=4))):
            fast = dataclasses.replace(ref, attention="splash", scan_layers=True, remat_policy="full", **fields)
            shardings = sharding.mesh_shardings(abstract_variables(fast)["params"], mesh, rules)
            placed = jax.device_put(stack_layers(params, 2), shardings)
            with jax.sharding.set_mesh(mesh):
                (got, _), got_grads = grad_fn(fast, rules)(placed, jax.device_put(batch, rows), total)
            errors[f"kv{kv}-{shape}-{loss}"] = abs(float(got) - float(want)) / abs(float(want))
            diff = jax.tree.map(lambda g, w: g - w, got_grads, want_grads)
            errors[f"kv{kv}-{shape}-{loss}-grads"] = float(optax.global_norm(diff) / optax.global_norm(want_grads))
    print(json.dumps(errors))
""")


def test_sharded_splash_scan_and_fused_loss_equal_the_one_device_reference():
    """8 simulated devices, batch over (data, fsdp), heads over tensor: splash runs in shard_map;
    both fused loss forms, the loss and every gradient."""
    errors = json.loads(run_on_devices(_SHARDED).strip().splitlines()[-1])
    assert len(errors) == 8, errors
    assert max(v for k, v in errors.items() if not k.endswith("grads")) < 1e-5, errors
    assert max(v for k, v in errors.items() if k.endswith("grads")) < 1e-4, errors
