"""What identifying every image of a cached dataset costs: ``stat`` alone (size and mtime, wca
before the fingerprint) against ``stat`` plus the fingerprint of the first and last 16 KB that
:func:`wca.features.key.image_identities` reads, on photo-like JPEGs; fingerprints of 4 and
64 KB each end for comparison, and decoding each image once for scale (a feature pass decodes
every image it encodes).

Warm: the files in the page cache (a run soon after another). Cold: their pages dropped
first with ``posix_fadvise(DONTNEED)`` (no root needed; inodes stay cached), so the
fingerprint's reads go to the disk.

    .venv/bin/python benchmarks/identity.py              # 300 JPEGs
    .venv/bin/python benchmarks/identity.py --quick      # smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from _common import best_time, machine_report, make_jpegs, table
from wca.features.key import image_identities
from wca.files import FINGERPRINT_BLOCK, file_fingerprint


class Listed:
    """A dataset that lists its files, as image folders do."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = [0] * len(paths)


def stat_only(dataset: Listed) -> list[str]:
    """The identities of wca before the fingerprint: path, label, size, mtime."""
    lines = []
    for path, label in zip(dataset.paths, dataset.labels, strict=True):
        info = os.stat(path)
        lines.append(f"{path}\t{label}\t{info.st_size}\t{info.st_mtime_ns}")
    return lines


def stat_and_block(block: int):
    """Identities with a fingerprint of ``block`` bytes each end."""

    def identities(dataset: Listed) -> list[str]:
        lines = []
        for path in dataset.paths:
            info = os.stat(path)
            lines.append(
                f"{info.st_size}\t{info.st_mtime_ns}\t{file_fingerprint(path, info.st_size, block)}"
            )
        return lines

    return identities


def decode_all(dataset: Listed) -> None:
    for path in dataset.paths:
        with Image.open(path) as image:
            image.convert("RGB")


def drop_pages(dataset: Listed) -> None:
    """Evict the files' pages from the page cache (clean pages: no root needed)."""
    for path in dataset.paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cold_time(fn, dataset: Listed, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        drop_pages(dataset)
        start = time.perf_counter()
        fn(dataset)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="JPEGs to generate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats = 12, 1
    print(machine_report())
    with tempfile.TemporaryDirectory(prefix="wca-identity-") as folder:
        dataset = Listed(make_jpegs(Path(folder), args.images))
        mean_kb = sum(os.path.getsize(p) for p in dataset.paths) / len(dataset.paths) / 1024
        print(f"{args.images} JPEGs, {mean_kb:.0f} KB on average, in {folder}")
        chosen = FINGERPRINT_BLOCK // 1024
        ways = [
            ("stat: size, mtime (before)", stat_only),
            ("stat + fingerprint, 4 KB each end", stat_and_block(4096)),
            (f"stat + fingerprint, {chosen} KB each end (image_identities)", image_identities),
            ("stat + fingerprint, 64 KB each end", stat_and_block(65536)),
            ("decode every image once (for scale)", decode_all),
        ]
        rows = []
        for name, fn in ways:
            fn(dataset)  # warm the page cache
            warm = best_time(lambda fn=fn: fn(dataset), args.repeats)
            cold = cold_time(fn, dataset, args.repeats)
            per_image = 1e6 / len(dataset.paths)
            rows.append([name, warm * 1e3, warm * per_image, cold * 1e3, cold * per_image])
    headers = ["identity of every image", "warm ms", "warm us/image", "cold ms", "cold us/image"]
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
