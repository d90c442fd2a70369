"""Export from a checkpoint written by many devices, on one: a pod's checkpoint on a CPU host.

A subprocess with 8 simulated CPU devices trains the tiny model with its parameters
sharded over fsdp=8 and saves a checkpoint (each device writes its slice); it also dumps
the parameters it holds. This process, with one device, restores them with its own
sharding, gets the same values, and exports a Hugging Face directory whose logits match
the model's.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from pretrain.checkpoint import restore_params
from pretrain.convert import export
from pretrain.model.transformer import Transformer, TransformerConfig
from tests.support.devices import run_on_devices

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import jax, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from pretrain import sharding, train, train_setup
    from tests.support.train import tiny_config

    config = tiny_config({workdir!r}, total_steps=4)
    config.mesh.update(dict(data=1, fsdp=8, tensor=1))
    setup = train_setup.build_setup(config, sharding.make_mesh(dict(config.mesh)))
    embedding = setup.sharding["params"]["embedder"]["input_embedding"]
    assert "fsdp" in embedding.spec, embedding.spec  # really sharded over the 8 devices
    train.train(config)
    from pretrain.checkpoint import restore_state
    state, step = restore_state({workdir!r}, setup.abstract)
    leaf = state["params"]["embedder"]["input_embedding"]
    assert step == 4 and len(leaf.addressable_shards) == 8, leaf.sharding
    flat = {{jax.tree_util.keystr(k): np.asarray(v) for k, v in
            jax.tree_util.tree_leaves_with_path(state["params"])}}
    np.savez({dump!r}, **flat)
""")


def test_checkpoint_from_8_fsdp_devices_exports_on_one_with_hf_parity(tmp_path):
    workdir, dump = tmp_path / "run", tmp_path / "params.npz"
    run_on_devices(SCRIPT.format(tests=str(REPO), workdir=str(workdir), dump=str(dump)))

    assert jax.device_count() == 1
    params, config = restore_params(workdir)
    written = np.load(dump)
    restored = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(params)}
    assert set(restored) == set(written.files)
    for name, value in restored.items():
        assert value.sharding.device_set == {jax.local_devices()[0]}
        np.testing.assert_array_equal(np.asarray(value), written[name], err_msg=name)

    model_config = TransformerConfig.from_config_dict(config.model)
    tokens = np.random.default_rng(0).integers(0, model_config.vocab_size, (2, 24)).astype(np.int32)
    positions = np.tile(np.arange(24, dtype=np.int32), (2, 1))
    ours = np.asarray(
        Transformer(model_config).apply({"params": params}, tokens, positions, np.ones_like(tokens))
    )
    export.export_hf(params, model_config, None, tmp_path / "hf", dtype="float32", consume=True)
    hf = transformers.GemmaForCausalLM.from_pretrained(
        tmp_path / "hf", dtype=torch.float32, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        theirs = hf(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
