"""A process that fills a feature cache, for tests/test_cache_r3.py: the fake encoder on
``TinyDataset(12)`` in shards of 2 images; prints ``{"views": N}`` (views it encoded).

``--hold STARTED RELEASE``: in its first encoder call, create STARTED and wait until RELEASE
exists (a process caught in the middle of a shard, holding its lock)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from fake_encoder import FakeEncoder
from feature_world import TinyDataset, extract

IMAGES, SHARD_SIZE = 12, 2


class HeldEncoder(FakeEncoder):
    def __init__(self, hold: list[Path] | None) -> None:
        super().__init__()
        self.hold = hold

    def encode_images(self, pixels):
        if self.hold and self.calls == 0:
            started, release = self.hold
            started.touch()
            while not release.exists():  # the test creates it once the other process waits
                time.sleep(0.01)
        return super().encode_images(pixels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cache", type=Path)
    parser.add_argument("--hold", nargs=2, type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    encoder = HeldEncoder(args.hold)
    extract(encoder, TinyDataset(IMAGES), args.cache, shard_size=SHARD_SIZE)
    print(json.dumps({"views": encoder.views}), flush=True)


if __name__ == "__main__":
    main()
