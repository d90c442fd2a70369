"""The one vocabulary wrapper used by SeqIO tasks, the trainer and export.

`GemmaVocabulary` is a `seqio.SentencePieceVocabulary` that checks, at load time, the id
layout every later stage assumes (pad=0, eos=1, bos=2, unk=3), so a wrong model file fails
at start instead of silently shifting every token. It works the same for a model trained
by `tokenizer.train` and for the released Gemma `tokenizer.model`.
"""

from __future__ import annotations

from typing import Any

import seqio

from common import fs
from common.checks import ConfigError
from tokenizer.model_file import model_file
from tokenizer.special_ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID


class GemmaVocabulary(seqio.SentencePieceVocabulary):
    """SentencePiece vocabulary with Gemma's special ids, checked on load."""

    def __init__(self, sentencepiece_model_file: str, extra_ids: int = 0):
        super().__init__(sentencepiece_model_file, extra_ids=extra_ids)
        try:
            sp = self.tokenizer  # SeqIO parses the file on first use: here, so a bad one fails at load
        except Exception as e:  # protobuf's DecodeError, SentencePiece's RuntimeError
            raise UnreadableTokenizer(
                f"{sentencepiece_model_file}: not a SentencePiece model (truncated or damaged: "
                f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}); restore it, or "
                "train one (python -m tokenizer.train)"
            ) from None
        self._check_special_ids(sp)

    def _check_special_ids(self, sp: Any) -> None:
        found = {"pad": sp.pad_id(), "eos": sp.eos_id(), "bos": sp.bos_id(), "unk": sp.unk_id()}
        expected = {"pad": PAD_ID, "eos": EOS_ID, "bos": BOS_ID, "unk": UNK_ID}
        if found != expected:
            raise ValueError(
                f"{self.sentencepiece_model_file}: special ids {found} differ from the Gemma layout {expected}"
            )


class UnreadableTokenizer(ConfigError):
    """A tokenizer.model that does not parse: one line naming it (exit 2)."""


def load_vocabulary(path: fs.PathLike, extra_ids: int = 0) -> GemmaVocabulary:
    """Loads a SentencePiece `tokenizer.model` (trained here or released) as a vocabulary.

    SeqIO reads the file through tf.io.gfile, so `path` may be a gs:// URI.
    """
    return GemmaVocabulary(model_file(path), extra_ids=extra_ids)
