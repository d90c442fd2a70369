"""Logit parity with transformers' GemmaForCausalLM (PyTorch CPU, fp32) after export."""

import json

import jax
import numpy as np
import pytest
import sentencepiece as spm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pretrain.convert import export  # noqa: E402
from pretrain.model.transformer import Transformer  # noqa: E402
from tests.support import export as fx  # noqa: E402

ATOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return fx.train_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module", params=[1, 4], ids=["mqa", "mha"])
def exported(request, tokenizer_path, tmp_path_factory):
    config = fx.tiny_config(num_kv_heads=request.param)
    params = fx.random_params(config, seed=request.param)
    out = tmp_path_factory.mktemp(f"hf_kv{request.param}")
    summary = export.export_hf(params, config, tokenizer_path, out, dtype="float32")
    hf = transformers.GemmaForCausalLM.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    return config, params, out, summary, hf


def _hf_logits(hf, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return hf(torch.tensor(tokens, dtype=torch.long)).logits.numpy()


def _ours(config, params, tokens, positions, segments) -> np.ndarray:
    logits = Transformer(config).apply({"params": params}, tokens, positions, segments)
    return np.asarray(logits)[..., : fx.TOKENIZER_PIECES]


def test_directory_layout(exported):
    config, _, out, summary, hf = exported
    assert summary["files"] == ["model.safetensors"]
    assert summary["vocab_size"] == fx.TOKENIZER_PIECES
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["hidden_activation"] == "gelu_pytorch_tanh"
    assert hf_config["tie_word_embeddings"] is True
    assert hf.config.hidden_act == "gelu_pytorch_tanh"
    assert hf.model.embed_tokens.weight.shape == (fx.TOKENIZER_PIECES, config.embed_dim)
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()  # tied
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", framework="np") as f:
        keys = set(f.keys())
        assert "lm_head.weight" not in keys
        assert f.get_tensor("model.layers.0.self_attn.q_proj.weight").shape == (4 * 16, 64)
        assert f.get_tensor("model.layers.0.self_attn.k_proj.weight").shape == (config.num_kv_heads * 16, 64)
        assert f.get_tensor("model.layers.0.self_attn.o_proj.weight").shape == (64, 4 * 16)
        assert f.get_tensor("model.layers.1.mlp.down_proj.weight").shape == (64, 96)
    assert len(keys) == 1 + 2 * 9 + 1


def test_unpacked_logits_match_transformers(exported):
    config, params, _, _, hf = exported
    tokens = np.random.default_rng(0).integers(0, fx.TOKENIZER_PIECES, (3, 24)).astype(np.int32)
    positions = np.tile(np.arange(24, dtype=np.int32), (3, 1))
    ours = _ours(config, params, tokens, positions, np.ones_like(tokens))
    np.testing.assert_allclose(ours, _hf_logits(hf, tokens), atol=ATOL, rtol=0)


def test_packed_documents_match_transformers_on_each_document(exported):
    config, params, _, _, hf = exported
    rng = np.random.default_rng(1)
    lengths = [9, 4, 11]  # + 6 padding positions
    docs = [rng.integers(4, fx.TOKENIZER_PIECES, n).astype(np.int32) for n in lengths]
    tokens = np.zeros((1, 30), np.int32)
    positions = np.zeros_like(tokens)
    segments = np.zeros_like(tokens)
    start = 0
    for seg, doc in enumerate(docs, start=1):
        tokens[0, start : start + len(doc)] = doc
        positions[0, start : start + len(doc)] = np.arange(len(doc))
        segments[0, start : start + len(doc)] = seg
        start += len(doc)
    ours = _ours(config, params, tokens, positions, segments)
    start = 0
    for doc in docs:
        reference = _hf_logits(hf, doc[None])[0]
        np.testing.assert_allclose(ours[0, start : start + len(doc)], reference, atol=ATOL, rtol=0)
        start += len(doc)


def test_tokenizer_loads_and_encodes_like_sentencepiece(exported, tokenizer_path):
    _, _, out, _, _ = exported
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    for text in ["gemma model export 12", "packed  segment\nrotary norm", "unseen wörds ∑"]:
        assert hf_tok(text, add_special_tokens=False).input_ids == sp.encode(text)
    assert hf_tok("flax").input_ids[0] == 2  # <bos> prepended like Gemma


def test_sharded_export_with_index_loads_identically(exported, tmp_path):
    config, params, _, _, hf = exported
    summary = export.export_hf(params, config, None, tmp_path, dtype="float32", max_shard_bytes=40_000)
    assert len(summary["files"]) > 2 and summary["vocab_size"] == config.vocab_size
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(summary["files"])
    assert index["metadata"]["total_size"] == summary["bytes"]
    sharded = transformers.GemmaForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    tokens = np.arange(4, 20, dtype=np.int64)[None]
    np.testing.assert_allclose(
        _hf_logits(sharded, tokens)[..., : fx.TOKENIZER_PIECES], _hf_logits(hf, tokens), atol=1e-6
    )


def test_bfloat16_export_stays_close(exported, tmp_path):
    config, params, _, _, hf = exported
    export.export_hf(params, config, None, tmp_path, dtype="bfloat16")
    hf_bf16 = transformers.GemmaForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    tokens = np.arange(4, 20, dtype=np.int64)[None]
    got = _hf_logits(hf_bf16, tokens)[..., : fx.TOKENIZER_PIECES]
    np.testing.assert_allclose(got, _hf_logits(hf, tokens), atol=0.1)


def test_consume_frees_parameters(exported, tmp_path):
    config, params, _, _, _ = exported
    copy = jax.tree_util.tree_map(lambda x: jax.numpy.array(x, copy=True), params)
    export.export_hf(copy, config, None, tmp_path, dtype="float32", consume=True)
    assert all(leaf is None for leaf in jax.tree_util.tree_leaves(copy, is_leaf=lambda x: x is None))


def test_bad_arguments_name_the_flag(exported, tmp_path):
    config, params, _, _, _ = exported
    with pytest.raises(ValueError, match="--dtype"):
        export.export_hf(params, config, None, tmp_path, dtype="int8")
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        export.export_hf(params, config, tmp_path / "missing", tmp_path, dtype="float32")
