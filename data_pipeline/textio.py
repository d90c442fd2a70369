"""The data job's one way to name inputs (``NAME=PATH``) and open files, through common/fs.py.

Every file the job reads (corpora, eval sets, the quality model) is opened here, so a path
that common/fs.py understands (local, ``gs://``, a test filesystem) works for all of them.
Decompression is decided by the file's own name, never by the glob that matched it.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import BinaryIO

from common import fs

# Errors that mean "these bytes are not what their name says" (corrupt or truncated
# compressed stream), as opposed to an I/O failure that a retry may fix.
CORRUPT_STREAM_ERRORS: tuple[type[BaseException], ...] = (gzip.BadGzipFile, EOFError, zlib.error)
try:
    import zstandard

    CORRUPT_STREAM_ERRORS += (zstandard.ZstdError,)
except ImportError:  # zstandard is a runtime dependency; without it .zst files fail in open_decompressed
    pass


def parse_assignment(value: str, flag: str, left: str = "NAME", right: str = "PATH") -> tuple[str, str]:
    """``"NAME=PATH"`` -> ``(NAME, PATH)``, both stripped; the error names the flag."""
    name, sep, path = value.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ValueError(f"--{flag}: expected {left}={right}, got {value!r}")
    return name, path


def compression_of(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".gz"):
        return "gz"
    if lower.endswith((".zst", ".zstd")):
        return "zst"
    return ""


def strip_compression(path: str) -> str:
    """The name without a compression suffix: ``a.jsonl.gz`` -> ``a.jsonl``."""
    lower = path.lower()
    for suffix in (".gz", ".zst", ".zstd"):
        if lower.endswith(suffix):
            return path[: -len(suffix)]
    return path


def open_decompressed(path: str) -> BinaryIO:
    """``path`` opened for binary reading, .gz / .zst undone by the file's own extension."""
    raw = fs.open(path, "rb")
    kind = compression_of(path)
    if kind == "gz":
        return gzip.GzipFile(fileobj=raw)
    if kind == "zst":
        import zstandard

        return io.BufferedReader(
            zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        )
    return raw
