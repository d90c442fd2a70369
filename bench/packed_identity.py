"""What the row files' identity check costs a run at start (mixtures.manifest.file_identity).

    .venv/bin/python bench/packed_identity.py --work_dir=/tmp/identity_bench [--large_gib=2]

Every reader (pretrain.train, mixtures.report, held-out evaluation) checks each row file's
size and sampled SHA-256 when its stream opens. Measured on:
1. a demo-sized pack: 24 files of 0.5 MiB (12 MiB; `make demo`'s pack is 6 tasks x 2
   splits of ~0.5-1 MiB files at seq_len 256), each hashed whole (<= 16 x 64 KiB);
2. one large file (`--large_gib`): 16 blocks of 64 KiB read whatever its size;
3. for comparison, the full SHA-256 of that large file (what checking the whole file costs).
Page-cache state: the files were just written, so reads are warm; on a cold local disk add
16 random reads per file (about 16 x 0.1 ms on an SSD), on gs:// 16 requests per file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import fs  # noqa: E402
from mixtures import manifest  # noqa: E402


def _write(path: str, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            block = min(left, 64 << 20)
            f.write(os.urandom(block))
            left -= block


def _timed(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--large_gib", type=float, default=2.0)
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)

    demo = [os.path.join(args.work_dir, f"demo-{i:02d}.array_record") for i in range(24)]
    for path in demo:
        _write(path, 512 << 10)
    seconds = _timed(lambda: [manifest.file_identity(p) for p in demo])
    print(f"demo-sized pack, {len(demo)} files, 12 MiB: {seconds * 1000:.1f} ms (best of 5)")

    large = os.path.join(args.work_dir, "large.array_record")
    _write(large, int(args.large_gib * (1 << 30)))
    seconds = _timed(lambda: manifest.file_identity(large))
    print(f"one {args.large_gib:g} GiB file, sampled: {seconds * 1000:.1f} ms (best of 5)")
    seconds = _timed(lambda: fs.sha256(large), repeats=1)
    print(f"one {args.large_gib:g} GiB file, full sha256: {seconds:.2f} s")


if __name__ == "__main__":
    main()
