"""Sharded forward passes on 8 simulated CPU devices equal the 1-device result.

Runs in a subprocess so XLA_FLAGS only affects that process; the rest of the suite keeps 1 device.
"""

import json
import textwrap

import pytest

from pretrain import sharding
from tests.support.devices import run_on_devices

_SCRIPT = textwrap.dedent("""
    import dataclasses, json
    import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
    from pretrain import sharding
    from pretrain.model.transformer import Transformer, TransformerConfig, abstract_variables

    assert jax.device_count() == 8, jax.devices()
    results = {}
    for kv in (1, 4):
      config = TransformerConfig(vocab_size=256, num_layers=2, embed_dim=32, num_heads=8,
                                 num_kv_heads=kv, head_dim=8, hidden_dim=64)
      model = Transformer(config)
      tokens = np.random.default_rng(0).integers(1, 256, (8, 16)).astype(np.int32)
      positions = np.tile(np.arange(16, dtype=np.int32), (8, 1))
      segments = np.ones_like(tokens)
      segments[:, 9:] = 2
      positions[:, 9:] -= 9
      params = nn.unbox(model.init(jax.random.key(0), tokens, positions, segments)["params"])
      expected = np.asarray(jax.jit(model.apply)({"params": params}, tokens, positions, segments))
      boxed = abstract_variables(config)["params"]
      rules = sharding.logical_rules(None)
      for shape in ((8, 1, 1), (2, 2, 2), (1, 8, 1), (1, 2, 4)) if kv == 1 else ((1, 2, 4),):
        mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, shape)))
        shardings = sharding.mesh_shardings(boxed, mesh, rules)
        placed = jax.device_put(params, shardings)
        batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))

        def forward(p, t, pos, seg):
          with nn.logical_axis_rules(rules):
            return model.apply({"params": p}, t, pos, seg)

        with jax.sharding.set_mesh(mesh):
          fn = jax.jit(forward, in_shardings=(shardings,) + (batch_sharding,) * 3)
          got = np.asarray(fn(placed, tokens, positions, segments))
          text = fn.lower(placed, tokens, positions, segments).as_text()
        attn = placed["layer_0"]["attn"]
        kv_w = attn["kv_einsum"]["w"] if "kv_einsum" in attn else attn["qkv_einsum"]["w"]
        results[f"kv{kv}-{shape}"] = dict(
            err=float(np.abs(got - expected).max()), kv_spec=list(kv_w.sharding.spec),
            emb_spec=list(placed["embedder"]["input_embedding"].sharding.spec),
            constrained="sharding_constraint" in text,
            notes=sharding.replication_notes(boxed, mesh, rules))
    print(json.dumps(results))
""")


def test_make_mesh_validates_fields():
    with pytest.raises(ValueError, match="config.mesh.pipeline: unknown mesh axis"):
        sharding.make_mesh({"pipeline": 1})
    with pytest.raises(ValueError, match="config.mesh: shape"):
        sharding.make_mesh({"data": 2})
    mesh = sharding.make_mesh({"data": -1})
    assert mesh.axis_names == sharding.MESH_AXES


def test_logical_rules_overrides_name_the_field():
    import ml_collections

    cfg = ml_collections.ConfigDict(
        {"sharding": {"logical_axis_rules": [["embed", None], ["mlp", ["tensor", "fsdp"]]]}}
    )
    rules = dict(sharding.logical_rules(cfg))
    assert rules["embed"] is None and rules["mlp"] == ("tensor", "fsdp")
    assert rules["vocab"] == "tensor"  # defaults kept
    cfg.sharding.logical_axis_rules = [["embed", "model"]]
    with pytest.raises(ValueError, match=r"config.sharding.logical_axis_rules\[0\]: unknown mesh axis"):
        sharding.logical_rules(cfg)


@pytest.mark.slow
def test_sharded_forward_matches_single_device():
    results = json.loads(run_on_devices(_SCRIPT, timeout=300).strip().splitlines()[-1])
    assert len(results) == 5
    for name, r in results.items():
        assert r["err"] < 1e-4, (name, r)
        assert r["constrained"], name  # activation constraints reached the compiled program
    assert results["kv1-(1, 2, 4)"]["emb_spec"] == ["tensor", "fsdp"]
    # One key/value head cannot be split over tensor=4: that axis is dropped, fsdp kept.
    assert results["kv1-(1, 2, 4)"]["kv_spec"] == [None, None, "fsdp", None]
    assert results["kv4-(1, 2, 4)"]["kv_spec"] == [None, "tensor", "fsdp", None]
    # ... and the trainer says so; nothing is dropped where every axis divides.
    (note,) = results["kv1-(1, 2, 4)"]["notes"]
    assert note.startswith("mesh axis tensor=4 does not divide a dimension of size 1: 2 parameter(s)"), note
    assert results["kv4-(1, 2, 4)"]["notes"] == results["kv1-(8, 1, 1)"]["notes"] == []
