"""A process that holds a lock file, for the tests of waiting on locks: prints ``held`` once it
holds ``PATH``; with ``--beat S`` marks progress every S seconds; lets go and exits once
``RELEASE`` exists (never, if it is not given)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import wca.files
from wca.files import FileLock


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", type=Path)
    parser.add_argument("--release", type=Path)
    parser.add_argument("--beat", type=float)
    args = parser.parse_args()
    if args.beat is not None:
        wca.files.BEAT_SECONDS = args.beat
    lock = FileLock(args.path)
    assert lock.try_acquire(), f"{args.path} is held already"
    print("held", flush=True)
    while args.release is None or not args.release.exists():
        if args.beat is not None:
            lock.beat()
        time.sleep(0.005)
    lock.release(remove=True)


if __name__ == "__main__":
    main()
