"""The Hugging Face tokenizer files of an export: tokenizer.json and a truthful tokenizer_config.json.

`tokenizer.json` is the fast (Rust `tokenizers`) form of the SentencePiece model, written so
that `AutoTokenizer.from_pretrained` never converts `tokenizer.model` on the fly (with
transformers 5 that needs protobuf and otherwise fails with a misleading tiktoken message;
lm-evaluation-harness loads tokenizers exactly that way). It encodes text to the same ids as
SentencePiece: the vocabulary is the model's pieces, and the BPE merges are ranked by the
score of the piece they make, which is the order SentencePiece's BPE encoder merges in.
Literal special-token text ("<bos>" typed in a prompt) is the one exception, as in every
Hugging Face Gemma tokenizer: it becomes the special id rather than its characters.

`add_bos_token` follows the run's bos policy (`mixture.bos`): a model trained without <bos>
is evaluated without it.
"""

import json
from typing import Any

from sentencepiece import sentencepiece_model_pb2
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from tokenizer.special_ids import BOS_ID, EOS_ID, PAD_ID, SPECIAL_PIECES, UNK_ID, bos_prefix

Piece = sentencepiece_model_pb2.ModelProto.SentencePiece
# SentencePiece's BPE encoder merges two adjacent symbols when the result is one of these.
MERGEABLE = (Piece.NORMAL, Piece.USER_DEFINED, Piece.UNUSED)
# The trainer settings under which "spaces become U+2581, nothing else changes" holds
# (tokenizer.train fixes them; the released Gemma tokenizer has them too).
REQUIRED = {
    "model_type": sentencepiece_model_pb2.TrainerSpec.BPE,
    "treat_whitespace_as_suffix": False,
}
REQUIRED_NORMALIZER = {"add_dummy_prefix": False, "remove_extra_whitespaces": False}
SPACE = "\u2581"


def parse(model: bytes) -> sentencepiece_model_pb2.ModelProto:
    """The model proto, checked for the settings this conversion reproduces exactly."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    for field, value in REQUIRED.items():
        if getattr(proto.trainer_spec, field) != value:
            raise ValueError(f"tokenizer: trainer_spec.{field} must be {value} to export tokenizer.json")
    for field, value in REQUIRED_NORMALIZER.items():
        if getattr(proto.normalizer_spec, field) != value:
            raise ValueError(f"tokenizer: normalizer_spec.{field} must be {value} to export tokenizer.json")
    if proto.normalizer_spec.precompiled_charsmap:  # identity normalisation has none
        raise ValueError("tokenizer: normalizer_spec must be identity to export tokenizer.json")
    if not proto.trainer_spec.byte_fallback:
        raise ValueError("tokenizer: trainer_spec.byte_fallback must be true to export tokenizer.json")
    return proto


def merges(proto: sentencepiece_model_pb2.ModelProto) -> list[tuple[str, str]]:
    """Every (left, right) split of a mergeable piece into two pieces, best piece score first."""
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    found = []
    for index, piece in enumerate(proto.pieces):
        if piece.type not in MERGEABLE or len(piece.piece) < 2:
            continue
        text = piece.piece
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in vocab and right in vocab:
                found.append((-piece.score, index, vocab[left], left, right))
    found.sort()
    return [(left, right) for *_, left, right in found]


def build(model: bytes, bos: str) -> Tokenizer:
    """The fast tokenizer of a SentencePiece model; `bos`: the run's policy ("document" | "none")."""
    proto = parse(model)
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges(proto),
            unk_token=SPECIAL_PIECES[UNK_ID],
            fuse_unk=True,
            byte_fallback=True,
            dropout=None,
        )
    )
    # What transformers' GemmaTokenizer builds around the model, so both read the file alike.
    tok.normalizer = normalizers.Replace(" ", SPACE)
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in SPECIAL_PIECES.values()])
    # SentencePiece keeps user-defined symbols whole wherever they occur in the normalised text.
    tok.add_tokens(
        [
            AddedToken(p.piece, special=False, normalized=True)
            for p in proto.pieces
            if p.type == Piece.USER_DEFINED
        ]
    )
    first, second = ("<bos>:0 ", "<bos>:1 ") if bos_prefix(bos) else ("", "")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{first}$A:0",
        pair=f"{first}$A:0 {second}$B:1",
        special_tokens=[(SPECIAL_PIECES[BOS_ID], BOS_ID)],
    )
    return tok


def tokenizer_config(bos: str, model_max_length: int) -> dict[str, Any]:
    """tokenizer_config.json: Gemma's, with add_bos_token as the run trained."""
    return {
        "tokenizer_class": "GemmaTokenizer",
        "bos_token": SPECIAL_PIECES[BOS_ID],
        "eos_token": SPECIAL_PIECES[EOS_ID],
        "pad_token": SPECIAL_PIECES[PAD_ID],
        "unk_token": SPECIAL_PIECES[UNK_ID],
        "mask_token": None,  # GemmaTokenizer would otherwise add a "<mask>" the model never saw
        "add_bos_token": bool(bos_prefix(bos)),
        "add_eos_token": False,
        "padding_side": "left",
        "model_max_length": model_max_length,
    }


def tokenizer_files(model: bytes, bos: str, model_max_length: int) -> dict[str, str]:
    """File name -> text of the Hugging Face tokenizer files beside tokenizer.model."""
    config = tokenizer_config(bos, model_max_length)
    special = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return {
        "tokenizer.json": build(model, bos).to_str(pretty=False),
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
        "special_tokens_map.json": json.dumps(special, indent=2) + "\n",
    }
