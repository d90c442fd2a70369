"""The exported tokenizer.json encodes like SentencePiece; tokenizer_config states the bos policy."""

import json
import random

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
from tokenizers import Tokenizer

from pretrain.convert import hf_tokenizer
from tests.support import export as fx

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> bytes:
    return fx.train_varied_tokenizer(tmp_path_factory.mktemp("tok")).read_bytes()


def _texts(model: bytes) -> list[str]:
    """Slices of the training corpus plus hand-made and random strings that stress the edges."""
    sp = spm.SentencePieceProcessor(model_proto=model)
    corpus = sp.decode(sp.encode("\n".join(fx.VARIED_TEXT)))
    rng = random.Random(0)
    atoms = ["  ", " ", "\n", "\t", "a", "é", "9", "😀", "ẞ", "def ", "==", "\u00a0", "\x00", "𝔘"]
    texts = [
        "",
        " ",
        " " * 37,
        "\n\n\n",
        "a  b   c    d     e",
        "\t\t\tx = 1",
        "12345 678.9 -0",
        "unseen ᚠᚢᚦ ꙮ 𓀀 characters",  # not in the vocabulary: byte fallback
        "<start_of_turn>user\nhi<end_of_turn>",
        "Question: What is 2 + 2?\nAnswer: 4",
        corpus,
    ]
    texts += ["".join(rng.choice(atoms) for _ in range(rng.randint(1, 40))) for _ in range(300)]
    return texts


def test_tokenizer_json_ids_equal_sentencepiece(model):
    sp = spm.SentencePieceProcessor(model_proto=model)
    fast = hf_tokenizer.build(model, "none")
    texts = _texts(model)
    assert any(sp.id_to_piece(i).startswith("<0x") for t in texts for i in sp.encode(t))  # byte fallback hit
    assert any(
        sp.id_to_piece(i).strip("\u2581") == "" and len(sp.id_to_piece(i)) > 1 for i in sp.encode(" " * 37)
    )
    for text in texts:
        assert fast.encode(text).ids == sp.encode(text), repr(text)
        assert fast.decode(sp.encode(text)) == text, repr(text)


@pytest.mark.parametrize("bos", ["document", "none"])
def test_auto_tokenizer_reads_tokenizer_json_with_the_bos_policy(model, bos, tmp_path):
    sp = spm.SentencePieceProcessor(model_proto=model)
    for name, text in hf_tokenizer.tokenizer_files(model, bos, 128).items():
        (tmp_path / name).write_text(text)
    # No tokenizer.model beside it: nothing is converted on the fly.
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is (bos == "document")
    assert len(tok) == sp.get_piece_size()  # no token added beyond the model's pieces
    prefix = [2] if bos == "document" else []
    for text in _texts(model)[:60]:
        assert tok(text, add_special_tokens=False).input_ids == sp.encode(text), repr(text)
        assert tok(text).input_ids == prefix + sp.encode(text), repr(text)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (2, 1, 0)
    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("a 1").ids == prefix + sp.encode(
        "a 1"
    )


def test_unsupported_sentencepiece_settings_are_refused(model):
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    proto.normalizer_spec.add_dummy_prefix = True
    with pytest.raises(ValueError, match="normalizer_spec.add_dummy_prefix"):
        hf_tokenizer.build(proto.SerializeToString(), "document")
