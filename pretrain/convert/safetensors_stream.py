"""Writes and reads safetensors files one tensor at a time, on any filesystem.

`safetensors.numpy.save_file` needs every tensor of a file in memory at once; exporting
a 7B model that way holds a second full copy of the weights. The format is a little-endian
u64 header length, a JSON header of dtypes/shapes/byte offsets, then the raw bytes, so
with shapes known in advance each tensor can be produced, written and dropped in turn.
Reading seeks to one tensor's bytes at a time, through common.fs, so a `gs://` checkpoint
is read without a local copy (`safetensors.safe_open` needs a local file to mmap).
"""

import json
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ml_dtypes
import numpy as np

from common import fs

DTYPE_NAMES = {np.dtype(np.float32): "F32", np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.float16): "F16"}


def header(entries: Sequence[tuple[str, tuple[int, ...], np.dtype]]) -> bytes:
    """Header (length prefix included) for tensors written in `entries` order."""
    meta: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, dtype in entries:
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        meta[name] = {
            "dtype": DTYPE_NAMES[np.dtype(dtype)],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(meta, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the reference writer aligns the data start to 8 bytes
    return struct.pack("<Q", len(text)) + text


def write_file(
    path: fs.PathLike,
    entries: Sequence[tuple[str, tuple[int, ...], np.dtype]],
    produce: Callable[[str], np.ndarray],
) -> int:
    """Writes `path`, calling `produce(name)` for each tensor just before its bytes are needed."""
    written = 0
    local = not fs.is_uri(path)
    with fs.open(path, "wb") as f:
        f.write(header(entries))
        for name, shape, dtype in entries:
            array = np.ascontiguousarray(produce(name))
            if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
                raise ValueError(f"{name}: produced {array.shape} {array.dtype}, planned {shape} {dtype}")
            data = array.reshape(-1).view(np.uint8).data
            f.write(data if local else data.tobytes())  # gfile writes bytes, not views
            written += array.nbytes
    return written


def plan_shards(
    entries: Iterable[tuple[str, tuple[int, ...], np.dtype]], max_shard_bytes: int
) -> list[list[tuple[str, tuple[int, ...], np.dtype]]]:
    """Consecutive groups of at most `max_shard_bytes` (a larger tensor gets a file of its own)."""
    shards: list[list] = [[]]
    size = 0
    for entry in entries:
        nbytes = int(np.prod(entry[1], dtype=np.int64)) * np.dtype(entry[2]).itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    return shards


class Reader:
    """Tensors of one safetensors file, read one at a time (`with Reader(path) as r: r[name]`)."""

    def __init__(self, path: fs.PathLike):
        self.path = path
        self._file = fs.open(path, "rb")
        (size,) = struct.unpack("<Q", self._file.read(8))
        self._meta = json.loads(self._file.read(size))
        self._meta.pop("__metadata__", None)
        self._start = 8 + size

    def keys(self) -> list[str]:
        return list(self._meta)

    def __getitem__(self, name: str) -> np.ndarray:
        meta = self._meta[name]
        dtype = _DTYPES_BY_NAME.get(meta["dtype"])
        if dtype is None:
            raise ValueError(f"{self.path}: {name} has unsupported dtype {meta['dtype']}")
        begin, end = meta["data_offsets"]
        self._file.seek(self._start + begin)
        data = self._file.read(end - begin)
        return np.frombuffer(data, dtype).reshape(meta["shape"])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_DTYPES_BY_NAME = {name: dtype for dtype, name in DTYPE_NAMES.items()}
