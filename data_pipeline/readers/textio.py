"""The data job's one way to tell compressed files (``NAME=PATH`` values: common/parsers.py).

Every file the job reads (corpora, eval sets, the quality model) is opened through
common/fs.py (``fs.open_decompressed``, ``fs.read_jsonl``), so a path it understands (local,
``gs://``, a test filesystem) works for all of them. Decompression is decided by the
file's own name, never by the glob that matched it.
"""

from __future__ import annotations

import gzip
import zlib

# Errors that mean "these bytes are not what their name says" (corrupt or truncated
# compressed stream), as opposed to an I/O failure that a retry may fix.
CORRUPT_STREAM_ERRORS: tuple[type[BaseException], ...] = (gzip.BadGzipFile, EOFError, zlib.error)
try:
    import zstandard

    CORRUPT_STREAM_ERRORS += (zstandard.ZstdError,)
except ImportError:  # zstandard is a runtime dependency; without it .zst files fail in fs.open_decompressed
    pass


def strip_compression(path: str) -> str:
    """The name without a compression suffix: ``a.jsonl.gz`` -> ``a.jsonl``."""
    lower = path.lower()
    for suffix in (".gz", ".zst", ".zstd"):
        if lower.endswith(suffix):
            return path[: -len(suffix)]
    return path
