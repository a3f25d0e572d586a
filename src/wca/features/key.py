"""What identifies a feature pass (the cache key) and the images it was computed from.

The key holds what changes the numbers of every image (model, preprocessing, crop settings,
seed, dataset name, split and root). The images themselves are identified one by one
(:func:`image_identities`) and checked per shard by :class:`wca.features.cache.ShardCache`.

An image is identified by its path, label, size, mtime in nanoseconds and a fingerprint of its
content: the sha256 of its first and last 16 KB (:func:`wca.files.file_fingerprint`). Size and
mtime alone, the test ``make`` and ``rsync`` use, miss a file replaced by another of the same
size whose mtime was restored (``cp -p``, ``rsync -t``, a tar restore); the fingerprint catches
that (a JPEG's tables and the end of its compressed data differ between any two images), and
the mtime still catches an ordinary edit between the two ends. The inode change time (ctime)
would cost nothing, but it changes on ``chmod``, ``chown`` and on each node's copy of a
dataset, recomputing features that are still right, while comparing no content. The cost is
two reads per image on every run that uses the cache: on 300 JPEGs of 75 KB (2 busy cores),
about 60 us an image with its pages cached and 230 us with them dropped, against 2 us for
``stat`` alone and 2 ms to decode the image (``benchmarks/identity.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from wca import crops
from wca.crops import CropSpec
from wca.files import file_fingerprint

FORMAT_VERSION = 3  # 2: shards hold per-view flips; 3: images checked per shard, not by key
# what each line of image_identities holds; a shard cached with other lines is recomputed once
IDENTITY = "path label size mtime_ns sha256(first and last 16 KB)"


def dataset_identity(dataset: Any) -> dict[str, Any]:
    """What identifies a dataset for the cache key: name, split and root, and its length when
    it does not list its files (listed files are checked per shard: :func:`image_identities`)."""
    identity: dict[str, Any] = {
        "name": getattr(dataset, "name", type(dataset).__name__),
        "split": getattr(dataset, "split", None),
        "root": str(Path(dataset.root).resolve()) if getattr(dataset, "root", None) else None,
    }
    if getattr(dataset, "paths", None) is None or getattr(dataset, "labels", None) is None:
        identity["len"] = len(dataset)
    return identity


def image_identities(dataset: Any) -> list[str] | None:
    """One line per image, ``path, label, size, mtime_ns, fingerprint`` (:data:`IDENTITY`),
    when the dataset lists its files (``paths`` and ``labels``); a file that cannot be read is
    marked missing. A dataset whose images lie inside archives (tar shards, array files) gives
    its own lines (``dataset.image_identities()``: the archive's stamp and the image's place)."""
    own = getattr(dataset, "image_identities", None)  # images inside archives: their own
    if own is not None:
        return own()
    paths, labels = getattr(dataset, "paths", None), getattr(dataset, "labels", None)
    if paths is None or labels is None:
        return None
    lines = []
    for path, label in zip(paths, labels, strict=True):
        try:
            info = os.stat(path)
            stamp = f"{info.st_size}\t{info.st_mtime_ns}\t{file_fingerprint(path, info.st_size)}"
        except OSError:
            stamp = "missing"
        lines.append(f"{path}\t{label}\t{stamp}")
    return lines


def cache_key(
    encoder: Any, dataset: Any, crops_spec: CropSpec, fidelity: bool, store_dtype: torch.dtype
) -> dict[str, Any]:
    """Everything that changes the stored numbers (batch size, workers and device do not), as
    plain JSON values."""
    key = {
        "format": FORMAT_VERSION,
        "encoder": encoder.identity,
        "encoder_dtype": str(encoder.dtype),
        "views": "fidelity" if fidelity else "fast",
        "preprocessing": None if fidelity else dataclasses.asdict(encoder.preprocessing),
        "alpha": crops_spec.alpha,
        "beta": crops_spec.beta,
        "n_samples": crops_spec.n_crops,
        "seed": crops_spec.seed,
        "sampler_version": crops.SAMPLER_VERSION,
        "strategy": crops_spec.crop_strategy,
        "store_dtype": str(store_dtype),
        "dataset": dataset_identity(dataset),
    }
    return json.loads(json.dumps(key))


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
