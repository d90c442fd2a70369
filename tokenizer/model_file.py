"""The tokenizer.model file itself: where it is and its hash, without loading SentencePiece.

Apart from tokenizer/vocab.py (which needs SeqIO and TensorFlow) so that the commands that
only locate or fingerprint the file (the trainer's config check, export) do not import them.
"""

from __future__ import annotations

import hashlib

from common import fs


def model_file(path: fs.PathLike) -> str:
    """The `tokenizer.model` at `path` (the file, or a directory holding one), any filesystem."""
    path = fs.join(path, "tokenizer.model") if fs.isdir(path) else fs.resolve(path)
    if not fs.isfile(path):
        raise FileNotFoundError(f"no SentencePiece tokenizer.model at {path}")
    return path


def model_sha256(path: fs.PathLike) -> str:
    """SHA-256 of a tokenizer.model: the packed manifest records it, the trainer compares it."""
    return hashlib.sha256(fs.read_bytes(model_file(path))).hexdigest()
