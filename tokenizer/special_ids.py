"""Gemma's special token ids and the BOS policy: what every stage assumes of a tokenizer.

Apart from `tokenizer.vocab` (which loads SentencePiece through SeqIO, and SeqIO imports
TensorFlow: seconds at start) so that commands needing only these constants start fast.
"""

from __future__ import annotations

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
