"""Gemma 2 and Gemma 3 checkpoints, trained a few steps on the tiny configs' architecture
(sliding window 8 < 32-token rows), export to directories transformers loads as
Gemma2ForCausalLM / Gemma3ForCausalLM, score the same per-token losses as
`pretrain.tools.evaluate --dump` (float32, <= 1e-4) on documents and packed rows longer than the
window, and come back through hf_import into a run that resumes training."""

from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from configs.models import tiny  # noqa: E402
from pretrain import checkpoint  # noqa: E402
from pretrain import train as train_lib  # noqa: E402
from pretrain.convert import export, hf_import, hf_mapping  # noqa: E402
from pretrain.model.transformer import Transformer, TransformerConfig, unstack_layers  # noqa: E402
from pretrain.tools import evaluate  # noqa: E402
from tests.support import export as fx  # noqa: E402
from tests.support.train import tiny_config  # noqa: E402

ATOL = 1e-4
WINDOW = 8
ARCHITECTURES = {"gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM"}


def _train_config(workdir, tokenizer, family: str, **train) -> ml_collections.ConfigDict:
    c = tiny_config(workdir, **train)
    # One embedding row per tokenizer piece: the exported model then normalises over the same
    # vocabulary as the checkpoint, so the per-token losses (not only the logits) can agree.
    c.model.update(
        dict(vocab_size=fx.TOKENIZER_PIECES, **tiny.family_fields(family, sliding_window=WINDOW, head_dim=16))
    )
    c.data.tokenizer = str(tokenizer)
    c.checkpoint.async_save = False
    return c


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return fx.train_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def exported(request, tokenizer_path, tmp_path_factory):
    """(family, workdir, HF dir, HF model): 2 training steps, then `pretrain.convert.export`'s main."""
    family = request.param
    root = tmp_path_factory.mktemp(family)
    train_lib.train(_train_config(root / "run", tokenizer_path, family, total_steps=2))
    cfg = export.default_config()
    cfg.update(dict(workdir=str(root / "run"), output=str(root / "hf"), dtype="float32"))
    export.main(cfg, [])
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        root / "hf", dtype=torch.float32, attn_implementation="eager"
    ).eval()
    return family, root / "run", root / "hf", hf


def _hf_losses(hf, tokens) -> np.ndarray:
    """-log p(tokens[i+1] | tokens[:i+1]) under the HF model."""
    with torch.no_grad():
        logits = hf(torch.tensor([tokens[:-1]], dtype=torch.long)).logits[0].double()
    targets = torch.tensor(tokens[1:], dtype=torch.long)
    return (torch.logsumexp(logits, -1) - logits[torch.arange(len(targets)), targets]).numpy()


def test_loads_as_its_family_with_the_window_pattern_and_caps(exported):
    family, workdir, out, hf = exported
    assert type(hf).__name__ == ARCHITECTURES[family]
    saved = json.loads((out / "config.json").read_text())
    assert saved["sliding_window"] == WINDOW and hf.config.sliding_window == WINDOW
    kinds = {
        "gemma2": ["sliding_attention", "full_attention"],
        "gemma3": ["sliding_attention"] * 5 + ["full_attention"],
    }
    assert hf.config.layer_types == kinds[family]
    assert hf.config.query_pre_attn_scalar == 16
    if family == "gemma2":
        assert (hf.config.attn_logit_softcapping, hf.config.final_logit_softcapping) == (50.0, 30.0)
    else:
        assert hf.config.final_logit_softcapping is None and saved["rope_scaling"]["factor"] == 8.0
        assert hf.config.rope_parameters["full_attention"] == {
            "rope_type": "linear",
            "factor": 8.0,
            "rope_theta": 1e6,
        }
        assert hf.config.rope_parameters["sliding_attention"]["rope_theta"] == 1e4
    # Every tensor came from the checkpoint, none was left at transformers' initialisation.
    params, config = checkpoint.restore_params(workdir)
    model = TransformerConfig.from_config_dict(config.model)
    rules = hf_mapping.rules(model, fx.TOKENIZER_PIECES)
    assert len(hf.state_dict()) - 1 == sum(len(r.hf_names) for r in rules)  # - the tied lm_head


def test_per_token_losses_match_evaluate_dump(exported, tmp_path):
    """Documents of 12-33 tokens (longer than the window) scored by `pretrain.tools.evaluate --dump`."""
    _, workdir, _, hf = exported
    words = ["gemma", "model", "token", "export", "packed", "segment", "rotary", "norm", "flax"]
    rng = np.random.default_rng(0)
    docs = [{"text": " ".join(rng.choice(words, n)), "source": "s"} for n in (6, 12, 20, 40)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    evaluate.evaluate(workdir, tmp_path / "docs.jsonl", dump=tmp_path / "dump.jsonl")
    dumped = [json.loads(line) for line in (tmp_path / "dump.jsonl").read_text().splitlines()]
    assert max(len(d["tokens"]) for d in dumped) > 33  # one document spans two 32-token windows
    for doc in dumped:
        want = np.concatenate([_hf_losses(hf, w) for w in evaluate.windows(doc["tokens"], 32)])
        np.testing.assert_allclose(doc["losses"], want, atol=ATOL, rtol=0)


def test_packed_rows_match_transformers_on_each_document(exported):
    _, workdir, _, hf = exported
    params, config = checkpoint.restore_params(workdir)
    model = TransformerConfig.from_config_dict(config.model)
    rng = np.random.default_rng(1)
    lengths = [21, 5, 30]  # + 8 padding positions; two documents longer than the window
    docs = [rng.integers(4, fx.TOKENIZER_PIECES, n).astype(np.int32) for n in lengths]
    tokens, positions, segments = (np.zeros((1, 64), np.int32) for _ in range(3))
    start = 0
    for seg, doc in enumerate(docs, start=1):
        span = slice(start, start + len(doc))
        tokens[0, span], positions[0, span], segments[0, span] = doc, np.arange(len(doc)), seg
        start += len(doc)
    ours = np.asarray(Transformer(model).apply({"params": params}, tokens, positions, segments))
    start = 0
    for doc in docs:
        with torch.no_grad():
            want = hf(torch.tensor(doc[None], dtype=torch.long)).logits[0].numpy()
        np.testing.assert_allclose(ours[0, start : start + len(doc)], want, atol=ATOL, rtol=0)
        start += len(doc)


def test_hf_import_is_exact_and_the_imported_run_resumes_training(exported, tokenizer_path, tmp_path):
    family, workdir, out, _ = exported
    params, config = checkpoint.restore_params(workdir)
    model = TransformerConfig.from_config_dict(config.model)
    imported, imported_config = hf_import.import_hf(out)
    assert imported_config == model
    flat = unstack_layers(params, model.num_layers, len(model.pattern))
    assert sorted(imported) == sorted(flat)
    jax.tree.map(np.testing.assert_array_equal, imported, jax.device_get(flat))
    # Into a run with scanned layers: hf_import's checkpoint, then two more training steps.
    run = _train_config(tmp_path / "imported", tokenizer_path, family, total_steps=2)
    run.model.scan_layers = True
    hf_import.check_matches(
        TransformerConfig.from_config_dict(run.model), imported_config, fx.TOKENIZER_PIECES
    )
    hf_import.write_training_checkpoint(imported, run)
    summary = train_lib.train(run)
    assert sorted(p.name for p in (tmp_path / "imported" / "checkpoints").iterdir() if p.name.isdigit()) == [
        "0",
        "2",
    ]
    assert summary["resumed_from"] == 0 and np.isfinite(summary["final_loss"]), summary
