"""What checking the images of a cached dataset costs on reuse, on 50,000 small files in shards
of 1,000: the check of :mod:`wca.features.identity` (a stat per file, compared with the one each
shard's sidecar recorded; a file read and hashed again only where it moved) with the stats
unchanged and with every ctime moved (``chmod``: each file read once more and the sidecars
refreshed), against ``stat`` alone and the 16 KB head-and-tail fingerprint that wca used before;
and hashing every file once, which is what a feature pass adds to the reads of its decoder.

Warm: the files in the page cache (a run soon after another). Cold: their pages dropped first
with ``posix_fadvise(DONTNEED)`` (no root needed; inodes stay cached), so reads go to the disk.

    .venv/bin/python benchmarks/identity.py                   # 50,000 files of 8 KB
    .venv/bin/python benchmarks/identity.py --files 5000 --kb 100
    .venv/bin/python benchmarks/identity.py --quick           # smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_report, table
from wca.features import identity
from wca.features.identity import ImageList, images_digest, read_version, verify, write_sidecar

SHARD_SIZE = 1000  # wca's default
BLOCK = 16 * 1024  # the fingerprint of wca before the content hash: 16 KB each end


def make_files(folder: Path, count: int, size: int) -> ImageList:
    """``count`` files of ``size`` random bytes in class folders of 1,000."""
    paths = []
    for index in range(count):
        path = folder / f"class{index // 1000:03d}" / f"{index:06d}.jpg"
        if index % 1000 == 0:
            path.parent.mkdir(parents=True)
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return ImageList(paths, [index // 1000 for index in range(count)], str(folder))


def shards(images: ImageList) -> list[range]:
    count = len(images)
    return [range(lo, min(lo + SHARD_SIZE, count)) for lo in range(0, count, SHARD_SIZE)]


def cache_as_encoding_does(images: ImageList, folder: Path) -> list[str]:
    """Each file read and hashed once (what the loader adds to a feature pass), each shard's
    sidecar written: the digests the cache's entries would hold."""
    digests = []
    for number, rows in enumerate(shards(images)):
        table_ = [(images.name(i), images.labels[i], read_version(images.paths[i])) for i in rows]
        write_sidecar(folder / f"shard-{number:05d}.images.json", table_)
        digests.append(images_digest(table_))
    return digests


def reuse_check(images: ImageList, folder: Path, digests: list[str]) -> int:
    """The cache's check of every shard (:func:`wca.features.identity.verify`): files read."""
    reread = 0
    for number, rows in enumerate(shards(images)):
        now = verify(images, rows, folder / f"shard-{number:05d}.images.json", digests[number])
        assert now.digest == digests[number]
        reread += now.reread
    return reread


def stat_only(images: ImageList) -> None:
    for path in images.paths:
        os.stat(path)


def head_and_tail(images: ImageList) -> None:
    """wca before the content hash: stat, and the sha256 of the first and last 16 KB."""
    for path in images.paths:
        size = os.stat(path).st_size
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            digest.update(handle.read(BLOCK))
            if size > BLOCK:
                handle.seek(max(BLOCK, size - BLOCK))
                digest.update(handle.read(BLOCK))


def move_ctimes(images: ImageList) -> None:
    """chmod every file to the mode it has: its ctime moves, its content does not."""
    for path in images.paths:
        os.chmod(path, 0o644)


def drop_pages(images: ImageList) -> None:
    """Evict the files' pages from the page cache (clean pages: no root needed)."""
    for path in images.paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(run, prepare, repeats: int) -> float:
    """The best of ``repeats`` runs of ``run()``, each after ``prepare()`` (not timed)."""
    times = []
    for _ in range(repeats):
        prepare()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000, help="files to generate")
    parser.add_argument("--kb", type=int, default=8, help="size of each file in KB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.kb, args.repeats = 300, 4, 1
    print(machine_report())
    with tempfile.TemporaryDirectory(prefix="wca-identity-") as base:
        data, cache = Path(base) / "data", Path(base) / "cache"
        cache.mkdir()
        start = time.perf_counter()
        images = make_files(data, args.files, args.kb * 1024)
        print(f"{args.files} files of {args.kb} KB in {data} ({time.perf_counter() - start:.1f} s)")
        time.sleep(identity.RACY_SECONDS)  # a file read just after its write is not trusted
        digests = cache_as_encoding_does(images, cache)
        moved = {"n": 0}

        def moved_check() -> None:
            moved["n"] = reuse_check(images, cache, digests)

        ways = [
            ("stat: size, mtime (wca before the fingerprint)", lambda: stat_only(images), None),
            ("stat + 16 KB head and tail (wca before the content hash)",
             lambda: head_and_tail(images), None),  # fmt: skip
            ("reuse check, stats unchanged: stat and sidecars",
             lambda: reuse_check(images, cache, digests), None),  # fmt: skip
            ("reuse check, every ctime moved: each file read, sidecars refreshed",
             moved_check, lambda: move_ctimes(images)),  # fmt: skip
            ("hash every file once (what a feature pass adds)",
             lambda: [read_version(p) for p in images.paths], None),  # fmt: skip
        ]
        assert reuse_check(images, cache, digests) == 0  # the sidecars hold every file's stat
        rows = []
        for name, run, prepare in ways:
            prepare = prepare or (lambda: None)
            run()  # warm the page cache
            warm = timed(run, prepare, args.repeats)
            cold = timed(run, lambda prepare=prepare: (prepare(), drop_pages(images)), args.repeats)
            per_file = 1e6 / args.files
            rows.append([name, warm * 1e3, warm * per_file, cold * 1e3, cold * per_file])
        assert moved["n"] == args.files  # the moved ctimes made the check read every file
    headers = ["check of every image", "warm ms", "warm us/file", "cold ms", "cold us/file"]
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
