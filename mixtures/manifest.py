"""The packed dataset's layout on disk and its index, `PACKED/manifest.json`.

    PACKED/manifest.json                                  index + stats + fingerprint
    PACKED/<split>/<task>/rows-00000-of-00004.array_record one ArrayRecord file per packing shard

Row k of a task (in a split) is row k - offset of the file whose cumulative row range
holds k, files in name order; the manifest lists them with their row counts, so a reader
builds the index without opening a file. Paths in the manifest are relative to PACKED,
so the directory can be copied between a bucket and local disk. The fingerprint hashes
the whole manifest, including each file's SHA-256, so any change of the packed data or of
the settings it was packed with changes it (the trainer refuses to resume across one).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from common import fs

FILE_NAME = "manifest.json"
FORMAT = "gemma-pretrain packed rows v1"
RECORD_SUFFIX = ".array_record"
# One record per chunk: a random row read decodes that row alone (ArrayRecord's default
# groups 65536 records per chunk, for sequential reading).
WRITER_OPTIONS = "group_size:1,uncompressed"


def shard_path(split: str, task: str, shard: int, num_shards: int) -> str:
    """A shard file's path relative to the packed directory."""
    return f"{split}/{task}/rows-{shard:05d}-of-{num_shards:05d}{RECORD_SUFFIX}"


# A row file's identity, checked by every reader at open (mixtures.stream): its size and the
# SHA-256 of SAMPLE_BLOCKS blocks spread over it, first and last included (the whole file
# when it is at most SAMPLE_BLOCKS blocks long). The per-file `sha256` (of its records)
# would need the whole file read; the sample costs 16 reads of 64 KiB per file.
SAMPLE_BLOCKS, SAMPLE_BLOCK_BYTES = 16, 1 << 16


def file_identity(path: str) -> dict[str, Any]:
    """{"bytes": size, "sample_sha256": hex} of a row file, as the manifest records it."""
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        size = f.seek(0, 2)
        digest.update(str(size).encode() + b"\0")
        if size <= SAMPLE_BLOCKS * SAMPLE_BLOCK_BYTES:
            f.seek(0)
            digest.update(f.read())
        else:
            stride = (size - SAMPLE_BLOCK_BYTES) // (SAMPLE_BLOCKS - 1)
            for i in range(SAMPLE_BLOCKS):
                f.seek(i * stride)
                digest.update(f.read(SAMPLE_BLOCK_BYTES))
    return {"bytes": size, "sample_sha256": digest.hexdigest()}


def canonical_hash(value: Any) -> str:
    """SHA-256 of a JSON-serialisable value, independent of key order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def with_fingerprint(manifest: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in manifest.items() if k != "fingerprint"}
    return {**body, "fingerprint": canonical_hash(body)}


def write(packed_dir: str, manifest: dict[str, Any]) -> dict[str, Any]:
    manifest = with_fingerprint(manifest)
    fs.write_text(fs.join(packed_dir, FILE_NAME), json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def read(packed_dir: str) -> dict[str, Any]:
    """The manifest of `packed_dir`; FileNotFoundError that says how to make one."""
    path = fs.join(packed_dir, FILE_NAME)
    if not fs.exists(path):
        raise FileNotFoundError(
            f"{path} not found: pack the mixture first "
            f"(python -m mixtures.pack --config=... --output={packed_dir})"
        )
    manifest = fs.read_json_state(path, "restore it, or pack again (mixtures.pack --overwrite)")
    if manifest.get("format") != FORMAT:
        raise ValueError(
            f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}; re-run mixtures.pack"
        )
    if with_fingerprint(manifest)["fingerprint"] != manifest.get("fingerprint"):
        raise ValueError(
            f"{path}: content does not match its fingerprint (edited or truncated); re-run mixtures.pack"
        )
    return manifest


def files(manifest: dict[str, Any]) -> list[str]:
    """Every row file the manifest names, relative to the packed directory."""
    return [f["path"] for tasks in manifest["splits"].values() for t in tasks.values() for f in t["files"]]


def task_files(packed_dir: str, manifest: dict[str, Any], split: str, task: str) -> list[tuple[str, int]]:
    """[(absolute path, rows)] of a task's shard files, in index order."""
    try:
        entry = manifest["splits"][split][task]
    except KeyError:
        packed = {s: sorted(t) for s, t in manifest["splits"].items()}
        raise KeyError(
            f"task {task!r} split {split!r} is not in the packed data at {packed_dir} (it holds "
            f"{packed}); re-run mixtures.pack with this mixture"
        ) from None
    return [(fs.join(packed_dir, f["path"]), int(f["rows"])) for f in entry["files"]]
