"""pretrain.tools.aot compiles the real sharded train step for a TPU slice on this CPU machine.

A small v5e slice (2x2) and a tiny model with the launch configs' execution choices
(splash attention, scanned layers, chunked loss, full remat) catch TPU lowering
regressions, and the per-chip temporaries are held below what one full-vocabulary logits
array would need, so a change that materialises it again fails here, not on a pod.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from pretrain.tools import aot
from tests.support.train import tiny_config

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason=f"needs libtpu to describe a TPU slice: {aot.INSTALL_HINT}",
)

ROWS, LENGTH, VOCAB = 8, 2048, 32768


def _config(**model):
    c = tiny_config("unused")
    c.model.update(
        {
            **dict(
                vocab_size=VOCAB,
                max_seq_len=LENGTH,
                dtype="bfloat16",
                attention="splash",
                scan_layers=True,
                vocab_chunks=16,
                remat_policy="full",
            ),
            **model,
        }
    )
    c.data.seq_len, c.data.global_batch_size = LENGTH, ROWS
    c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
    return c


@pytest.fixture(scope="module")
def report() -> aot.Report:
    return aot.analyse(_config(), "v5e:2x2")


def test_tiny_model_compiles_for_a_v5e_slice_and_fits(report):
    assert report.chips == 4 and report.device_kind == "TPU v5 lite"
    assert report.mesh == {"data": 1, "fsdp": 4, "tensor": 1}
    assert report.fits
    assert 0 < report.alias_bytes <= report.output_bytes  # the donated state is reused
    # Neither the [rows/chip, L, V] float32 logits (512 MiB here; 787 MiB of temporaries
    # with vocab_chunks=0) nor a layer's [rows/chip, L, heads, L] float32 scores (128 MiB;
    # 208 MiB with attention="xla") may exist: the fused paths need ~20 MiB.
    rows_per_chip = ROWS // report.chips
    full_logits = rows_per_chip * LENGTH * VOCAB * 4
    dense_scores = rows_per_chip * LENGTH * 4 * LENGTH * 4
    assert report.temp_bytes < min(full_logits, dense_scores) / 2
    assert report.compiler_flops > 0 and report.executed_flops > report.model_flops > 0


def test_a_step_over_the_hbm_limit_is_reported_as_not_fitting(report):
    tight = dataclasses.replace(report, max_fraction=report.peak_bytes / report.hbm_bytes / 2)
    assert not tight.fits
    assert report.mfu == pytest.approx(report.model_flops / (report.step_seconds * report.peak_flops))


def test_without_libtpu_the_command_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match="libtpu"):
        aot.topology_devices("v5e:2x2")


def test_fsdp_traffic_estimate():
    # 8 chips ring: each moves 7/8 of (2 bf16 gathers + 1 float32 reduce-scatter) per parameter.
    assert aot.fsdp_ici_bytes(1000, 2, 4, 8, gathers=2, micro_steps=1) == pytest.approx(7 / 8 * 8000)
    assert aot.fsdp_ici_bytes(1000, 2, 4, 1, gathers=2, micro_steps=1) == 0


def test_a_step_the_tpu_compiler_cannot_fit_exits_non_zero(capsys):
    """Full float32 logits of a 256k vocabulary at 8192 tokens, 2 rows per chip: 17 GB."""
    config = _config(vocab_size=256_128, max_seq_len=8192, vocab_chunks=0, attention="xla", scan_layers=False)
    config.data.seq_len = 8192
    config.aot.topology = "v5e:2x2"
    with pytest.raises(SystemExit) as exit_info:
        aot.main(config, [])
    assert exit_info.value.code == 1
    assert "RESOURCE_EXHAUSTED" in capsys.readouterr().err


def test_the_token_chunked_loss_compiles_for_tpu_without_full_logits_or_recompute(report):
    """model.token_chunks on the v5e compiler: a [rows/chip, L/16, V] chunk of logits at a
    time (no full-logits array), and no output-layer recomputation in the executed FLOPs."""
    tokens = aot.analyse(_config(vocab_chunks=0, token_chunks=16), "v5e:2x2")
    assert tokens.fits
    full_logits = ROWS // tokens.chips * LENGTH * VOCAB * 4
    assert tokens.temp_bytes < full_logits / 2
    width = _config().model.embed_dim
    output_layer = 2 * report.tokens_per_step * width * VOCAB / report.chips  # one [T, D] x [D, V] matmul
    assert report.executed_flops - tokens.executed_flops == pytest.approx(output_layer)
