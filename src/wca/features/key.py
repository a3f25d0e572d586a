"""What identifies a feature pass: the cache key.

The key holds what changes the numbers of every image (model, preprocessing, crop settings,
seed, dataset name, split and root, resolved: the same however the root was typed). The images
themselves are identified one by one, by content, and checked per shard
(:mod:`wca.features.identity`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from wca import crops
from wca.crops import CropSpec
from wca.features.identity import declared_digest

FORMAT_VERSION = 3  # 2: shards hold per-view flips; 3: images checked per shard, not by key


def dataset_identity(dataset: Any) -> dict[str, Any]:
    """What identifies a dataset for the cache key: name, split and root, and its length and
    the images it declares when it does not list its files (listed files are checked per
    shard; :func:`~wca.features.identity.declared_digest`)."""
    identity: dict[str, Any] = {
        "name": getattr(dataset, "name", type(dataset).__name__),
        "split": getattr(dataset, "split", None),
        "root": str(Path(dataset.root).resolve()) if getattr(dataset, "root", None) else None,
    }
    if getattr(dataset, "paths", None) is None or getattr(dataset, "labels", None) is None:
        identity["len"] = len(dataset)
        if (declared := declared_digest(dataset)) is not None:
            identity["images"] = declared
    return identity


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
