"""Round trips: Flax -> HF -> Flax and Flax -> params-only Orbax -> Flax are exact, and the
CLIs go HF -> training checkpoint -> HF without changing a bit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors import safe_open

from pretrain.convert import export, hf_import
from tests.support import export as fx

REPO = Path(__file__).resolve().parents[3]


def _assert_trees_equal(got, want):
    got_flat = dict(jax.tree_util.tree_leaves_with_path(got))
    want_flat = dict(jax.tree_util.tree_leaves_with_path(want))
    assert got_flat.keys() == want_flat.keys()
    for path, value in want_flat.items():
        np.testing.assert_array_equal(np.asarray(got_flat[path]), np.asarray(value), err_msg=str(path))


@pytest.mark.parametrize("num_kv_heads", [1, 2, 4])
def test_hf_round_trip_is_exact(num_kv_heads, tmp_path):
    config = fx.tiny_config(num_kv_heads)
    params = fx.random_params(config)
    export.export_hf(params, config, None, tmp_path, dtype="float32", max_shard_bytes=100_000)
    imported, imported_config = hf_import.import_hf(tmp_path)
    assert imported_config == config
    _assert_trees_equal(imported, params)


def test_sliced_vocabulary_is_padded_back_with_zeros(tmp_path):
    config = fx.tiny_config(1)
    params = fx.random_params(config)
    tokenizer = fx.train_tokenizer(tmp_path)
    export.export_hf(params, config, tokenizer, tmp_path / "hf", dtype="float32")
    imported, imported_config = hf_import.import_hf(tmp_path / "hf", vocab_size=config.vocab_size)
    assert imported_config.vocab_size == config.vocab_size
    embedding = imported["embedder"]["input_embedding"]
    np.testing.assert_array_equal(
        embedding[: fx.TOKENIZER_PIECES], params["embedder"]["input_embedding"][: fx.TOKENIZER_PIECES]
    )
    assert not embedding[fx.TOKENIZER_PIECES :].any()
    imported["embedder"]["input_embedding"] = params["embedder"]["input_embedding"]
    _assert_trees_equal(imported, params)


def test_bfloat16_export_rounds_each_weight_once(tmp_path):
    config = fx.tiny_config(4)
    params = fx.random_params(config)
    export.export_hf(params, config, None, tmp_path, dtype="bfloat16")
    imported, _ = hf_import.import_hf(tmp_path)
    rounded = jax.tree_util.tree_map(lambda x: np.asarray(x.astype("bfloat16").astype("float32")), params)
    _assert_trees_equal(imported, rounded)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_orbax_params_round_trip(dtype, tmp_path):
    config = fx.tiny_config(1)
    params = fx.random_params(config)
    expected = jax.tree_util.tree_map(lambda x: np.asarray(x.astype(dtype)), params)
    export.export_orbax_params(
        jax.tree_util.tree_map(lambda x: x.copy(), params), config, tmp_path / "out", dtype=dtype
    )
    restored, restored_config = export.load_orbax_params(tmp_path / "out")
    assert restored_config == config
    assert all(x.dtype == np.dtype(dtype) for x in jax.tree_util.tree_leaves(restored))
    _assert_trees_equal(restored, expected)


def test_import_rejects_a_mismatched_training_config():
    config = fx.tiny_config(1)
    with pytest.raises(ValueError, match="config.model.num_kv_heads: 4 in the training config but 1"):
        hf_import.check_matches(fx.tiny_config(4), config, 300)
    with pytest.raises(ValueError, match="config.model.vocab_size: 320 is below"):
        hf_import.check_matches(config, config, 400)


@pytest.mark.slow
def test_cli_hf_to_training_checkpoint_and_back_is_exact(tmp_path):
    """hf_import CLI writes a workdir the trainer can restore; export CLI gives the same tensors."""
    config = fx.tiny_config(1, vocab_size=256, hidden_dim=128, max_seq_len=64)  # = train_fixtures' model
    params = fx.random_params(config)
    export.export_hf(params, config, None, tmp_path / "hf_in", dtype="float32")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    workdir = tmp_path / "work"
    config_file = tmp_path / "train_config.py"
    config_file.write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom tests.support.train import tiny_config\n"
        "def get_config():\n  return tiny_config(%r)\n" % (str(REPO), str(workdir))
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pretrain.convert.hf_import",
            f"--hf_dir={tmp_path / 'hf_in'}",
            f"--config={config_file}",
        ],
        check=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert (workdir / "config.json").exists() and (workdir / "checkpoints" / "0").is_dir()
    recorded = (workdir / "config.json").read_bytes()
    again = subprocess.run(  # importing again into the run it made: refused, nothing rewritten
        [sys.executable, "-m", "pretrain.convert.hf_import", f"--hf_dir={tmp_path / 'hf_in'}", f"--config={config_file}"],
        env=env, cwd=REPO, timeout=300, capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode == 2, again.stderr[-2000:]
    assert (
        again.stderr.strip()
        .splitlines()[-1]
        .startswith("hf_import.py: config.workdir: exists and is not empty")
    )
    assert (workdir / "config.json").read_bytes() == recorded
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pretrain.convert.export",
            f"--workdir={workdir}",
            "--format=hf",
            f"--output={tmp_path / 'hf_out'}",
            "--dtype=float32",
        ],
        check=True,
        env=env,
        cwd=REPO,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert "exported 20 tensors" in out.stdout
    with (
        safe_open(tmp_path / "hf_in" / "model.safetensors", framework="numpy") as a,
        safe_open(tmp_path / "hf_out" / "model.safetensors", framework="numpy") as b,
    ):
        assert set(a.keys()) == set(b.keys())
        for name in a.keys():
            np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name), err_msg=name)
    assert json.loads((tmp_path / "hf_out" / "config.json").read_text())["num_key_value_heads"] == 1
    # The trainer picks the imported checkpoint up and continues from it.
    out = subprocess.run(
        [sys.executable, "-m", "pretrain.train", f"--config={config_file}"],
        check=True,
        env=env,
        cwd=REPO,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert "resumed from" in out.stdout and "(step 0 of" in out.stdout, out.stdout[-2000:]
