"""Word n-grams of normalised text as 64-bit hashes: the package's one n-gram hashing, used by
near dedup (shingles), exact dedup (``words`` normalisation) and Gopher's repetition rules.

Normalisation folds case, punctuation and whitespace: a word is a run of Unicode word
characters, lower-cased, except that a run of digits alone is one word per digit, so a
number's shingles do not depend on how it is grouped (``1,000``, ``1 , 000`` and ``1000``
are all ``1 0 0 0``); mixed runs (``mp3``, ``x86``) stay whole. Word hashes are CRC-32
(stable across processes and machines, unlike Python's salted ``hash``), and an n-gram
hash is a polynomial of its word hashes, computed for all positions at once with numpy so
that long documents stay cheap.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

WORD_RE = re.compile(r"\w+")
# Odd 64-bit multiplier for the polynomial n-gram hash (arithmetic wraps mod 2**64).
_POLY = np.uint64(0x9E3779B97F4A7C15)


def normalized_words(text: str) -> list[str]:
    """Lower-cased words of ``text``; punctuation and whitespace only separate words."""
    return [part for word in WORD_RE.findall(text.lower()) for part in (word if word.isdigit() else (word,))]


def word_hashes(words: list[str]) -> np.ndarray:
    """Stable uint64 hash of each word."""
    return np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of the n-gram starting at every position (empty when fewer than ``n`` words)."""
    count = len(hashes) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    out = hashes[:count].copy()
    for k in range(1, n):
        out *= _POLY
        out += hashes[k : k + count]
    return out


def shingle_set(text: str, n: int) -> np.ndarray:
    """Sorted unique word n-gram hashes; a text shorter than ``n`` words is one shingle."""
    hashes = word_hashes(normalized_words(text))
    if len(hashes) == 0:
        return hashes
    return np.unique(ngram_hashes(hashes, min(n, len(hashes))))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique hash arrays."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)
