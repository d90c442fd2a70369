"""The GPU launch configs and the remat choice, on CPU.

The 8-GPU configs (configs/train/gpu_2b.py:8, configs/train/gpu_7b.py) run their sharded
step on 8 simulated CPU devices with their own mesh, batch, remat policy, scanned layers
and chunked loss; only the model is shrunk and the attention core is XLA's (cuDNN needs a
GPU; its packed layout is tested against the reference in test_model_kernels.py).
`remat_policy="auto"` picks the least recomputation whose compiled step fits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from common import checks
from pretrain.tools import aot
from tests.support.devices import REPO, run_on_devices
from tests.support.train import config_file, tiny_config

_SHARDED = textwrap.dedent("""
    import json, sys, tempfile
    import jax
    from configs.train import gpu_2b, gpu_7b
    from pretrain import train

    assert jax.device_count() == 8
    results = {}
    for name, config in (("gpu_2b:8", gpu_2b.get_config("8")), ("gpu_7b", gpu_7b.get_config())):
        c = config
        kv_heads = c.model.num_kv_heads  # MQA for 2B, MHA for 7B
        c.model.update(dict(vocab_size=512, num_layers=2, embed_dim=64, num_heads=4,
                            num_kv_heads=min(kv_heads, 4), head_dim=16, hidden_dim=128,
                            attention="xla"))
        c.mixture = type(c.mixture)()
        c.data.update(dict(synthetic=True, synthetic_document_tokens=20, seq_len=64))
        c.train.update(dict(total_steps=2, log_every=1))
        c.optim.update(dict(warmup_steps=1, decay_start="0.5"))
        c.checkpoint.every_steps = 0
        c.metrics.tensorboard = False
        c.workdir = tempfile.mkdtemp()
        summary = train.train(c, say=lambda line: None)
        results[name] = dict(batch=c.data.global_batch_size, remat=c.model.remat_policy,
                             loss=summary["final_loss"], mesh=json.load(open(c.workdir + "/config.json"))["mesh"])
    print(json.dumps(results))
""")


def test_the_eight_gpu_configs_run_their_sharded_step_on_eight_devices():
    results = json.loads(run_on_devices(_SHARDED).strip().splitlines()[-1])
    assert results["gpu_2b:8"]["batch"] == 32 and results["gpu_7b"]["batch"] == 16
    assert results["gpu_2b:8"]["remat"] == "matmul_outputs"
    assert results["gpu_7b"]["remat"] == "matmul_outputs_but_mlp_inputs"
    for r in results.values():
        assert r["mesh"] == {"data": 1, "fsdp": -1, "tensor": 1}
        assert 0 < r["loss"] < 10


def _config():
    c = tiny_config("unused")
    c.model.update(dict(scan_layers=True, hidden_dim=512, dtype="bfloat16"))
    c.data.seq_len = 256
    return c


def test_auto_remat_takes_the_least_recomputation_that_fits():
    needs = {}
    for policy in aot.FASTEST_FIRST:
        c = _config()
        c.model.remat_policy = policy
        needs[policy] = aot.step_memory(c, None)
    # Each policy keeps less than the one before it (the names really select tensors).
    assert needs["none"] > needs["matmul_outputs"] > needs["matmul_outputs_but_mlp_inputs"] > needs["full"]
    said = []
    budget = (needs["matmul_outputs"] + needs["none"]) / 2
    assert aot.choose_remat_policy(_config(), None, budget, said.append) == "matmul_outputs"
    assert [line.split(":")[0] for line in said] == ["remat_policy none", "remat_policy matmul_outputs"]
    assert said[-1].endswith("-> chosen")
    assert aot.choose_remat_policy(_config(), None, float("inf"), said.append) == "none"
    with pytest.raises(checks.ConfigError, match="config.model.remat_policy: 'auto' found no policy"):
        aot.choose_remat_policy(_config(), None, needs["full"] / 2, said.append)


def test_synthetic_rows_can_be_packed_with_documents():
    from pretrain.data import SyntheticBatches

    one = next(SyntheticBatches(0, 4, 512, 100))
    packed = next(SyntheticBatches(0, 4, 512, 100, document_tokens=64))
    np.testing.assert_array_equal(one["inputs"], packed["inputs"])  # the same tokens either way
    assert (one["segment_ids"] == 1).all()
    for seg, pos in zip(packed["segment_ids"], packed["positions"]):
        starts = np.flatnonzero(np.diff(seg)) + 1
        assert (np.diff(seg) >= 0).all() and 3 <= len(starts) <= 20  # ~8 documents of mean 64
        np.testing.assert_array_equal(pos[np.r_[0, starts]], 0)  # positions restart per document
        np.testing.assert_array_equal(np.diff(pos)[np.diff(seg) == 0], 1)
    again = next(SyntheticBatches(0, 4, 512, 100, process_index=1, process_count=2, document_tokens=64))
    np.testing.assert_array_equal(again["segment_ids"], packed["segment_ids"][2:])  # hosts agree


_HIDE = textwrap.dedent("""
    import sys
    from importlib.machinery import PathFinder

    HIDDEN = {"tensorflow", "grain", "array_record", "seqio", "tensorflow_datasets", "apache_beam"}

    class _Hide(PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            return None if name.split(".")[0] in HIDDEN else PathFinder.find_spec(name, path, target)

    sys.meta_path[:] = [_Hide if f is PathFinder else f for f in sys.meta_path]
""")


def test_synthetic_training_needs_no_tensorflow_grain_or_beam(tmp_path):
    """What bench/gpu_throughput.py relies on: GPU machines with JAX but none of the data stack."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_HIDE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO)])}
    result = subprocess.run(
        [sys.executable, "-m", "pretrain.train", f"--config={config_file(tmp_path, total_steps=2)}",
         f"--workdir={tmp_path / 'run'}", "--config.data.synthetic_document_tokens=8"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training done: 2 steps" in result.stdout


def test_gpu_bench_times_every_loss_form_and_compares_them(tmp_path):
    """bench/gpu_throughput.py's loss part, at a CPU-sized shape: each form timed and its
    value and gradients within float32 rounding of the first form's (full logits)."""
    forms = ["logits", "vocab:4", "token:4"]
    result = subprocess.run(
        [sys.executable, "bench/gpu_throughput.py", "--parts=loss", "--loss_shape=2,32,16,48",
         f"--loss_forms={','.join(forms)}", f"--out={tmp_path / 'bench'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (loss,) = [json.loads(line) for line in (tmp_path / "bench" / "results.jsonl").read_text().splitlines()]
    for form in forms:
        assert loss[f"ms_{form}"] > 0, loss
        assert loss[f"rel_error_{form}"] < 2e-2, loss  # bf16 matmul operands in every form
