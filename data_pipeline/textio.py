"""The data job's one way to name inputs (``NAME=PATH``) and tell compressed files.

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


def parse_assignment(value: str, flag: str, left: str = "NAME", right: str = "PATH") -> tuple[str, str]:
    """``"NAME=PATH"`` -> ``(NAME, PATH)``, both stripped; the error names the flag."""
    name, sep, path = value.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ValueError(f"--{flag}: expected {left}={right}, got {value!r}")
    return name, path


def strip_compression(path: str) -> str:
    """The name without a compression suffix: ``a.jsonl.gz`` -> ``a.jsonl``."""
    lower = path.lower()
    for suffix in (".gz", ".zst", ".zstd"):
        if lower.endswith(suffix):
            return path[: -len(suffix)]
    return path
