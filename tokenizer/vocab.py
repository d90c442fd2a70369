"""The one vocabulary wrapper used by SeqIO tasks, the trainer and export.

`GemmaVocabulary` is a `seqio.SentencePieceVocabulary` that checks, at load time, the id
layout every later stage assumes (pad=0, eos=1, bos=2, unk=3), so a wrong model file fails
at start instead of silently shifting every token. It works the same for a model trained
by `tokenizer.train` and for the released Gemma `tokenizer.model`.
"""

from __future__ import annotations

import hashlib

import seqio

from common import fs

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_PIECES = {PAD_ID: "<pad>", EOS_ID: "<eos>", BOS_ID: "<bos>", UNK_ID: "<unk>"}
# Where <bos> goes: "document" puts one before every document (Gemma's training format),
# "none" never. Tasks, held-out evaluation and pretrain.tools.evaluate all ask bos_prefix.
BOS_POLICIES = ("none", "document")


def bos_prefix(policy: str) -> list[int]:
    """The tokens that open every document under the mixture's `bos` policy."""
    if policy not in BOS_POLICIES:
        raise ValueError(f"bos: must be one of {BOS_POLICIES}, got {policy!r}")
    return [BOS_ID] if policy == "document" else []


class GemmaVocabulary(seqio.SentencePieceVocabulary):
    """SentencePiece vocabulary with Gemma's special ids, checked on load."""

    def __init__(self, sentencepiece_model_file: str, extra_ids: int = 0):
        super().__init__(sentencepiece_model_file, extra_ids=extra_ids)
        self._check_special_ids()

    def _check_special_ids(self) -> None:
        sp = self.tokenizer
        found = {"pad": sp.pad_id(), "eos": sp.eos_id(), "bos": sp.bos_id(), "unk": sp.unk_id()}
        expected = {"pad": PAD_ID, "eos": EOS_ID, "bos": BOS_ID, "unk": UNK_ID}
        if found != expected:
            raise ValueError(
                f"{self.sentencepiece_model_file}: special ids {found} differ from the Gemma layout {expected}"
            )


def model_file(path: fs.PathLike) -> str:
    """The `tokenizer.model` at `path` (the file, or a directory holding one), any filesystem."""
    path = fs.join(path, "tokenizer.model") if fs.isdir(path) else fs.resolve(path)
    if not fs.isfile(path):
        raise FileNotFoundError(f"no SentencePiece tokenizer.model at {path}")
    return path


def load_vocabulary(path: fs.PathLike, extra_ids: int = 0) -> GemmaVocabulary:
    """Loads a SentencePiece `tokenizer.model` (trained here or released) as a vocabulary.

    SeqIO reads the file through tf.io.gfile, so `path` may be a gs:// URI.
    """
    return GemmaVocabulary(model_file(path), extra_ids=extra_ids)


def model_sha256(path: fs.PathLike) -> str:
    """SHA-256 of a tokenizer.model: the packed manifest records it, the trainer compares it."""
    return hashlib.sha256(fs.read_bytes(model_file(path))).hexdigest()
