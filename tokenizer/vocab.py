"""The one vocabulary wrapper used by SeqIO tasks, the trainer and export.

`GemmaVocabulary` is a `seqio.SentencePieceVocabulary` that checks, at load time, the id
layout every later stage assumes (pad=0, eos=1, bos=2, unk=3), so a wrong model file fails
at start instead of silently shifting every token. It works the same for a model trained
by `tokenizer.train` and for the released Gemma `tokenizer.model`.
"""

from __future__ import annotations

from pathlib import Path

import seqio

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_PIECES = {PAD_ID: "<pad>", EOS_ID: "<eos>", BOS_ID: "<bos>", UNK_ID: "<unk>"}


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


def load_vocabulary(path: str | Path, extra_ids: int = 0) -> GemmaVocabulary:
    """Loads a SentencePiece `tokenizer.model` (trained here or released) as a vocabulary."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.model"
    if not path.is_file():
        raise FileNotFoundError(f"no SentencePiece model at {path}")
    return GemmaVocabulary(str(path), extra_ids=extra_ids)
