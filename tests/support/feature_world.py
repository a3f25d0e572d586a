"""A tiny generated dataset and feature extraction with small defaults, shared by the tests of
the feature pass and the cache (and by the worker processes those tests start)."""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from wca.crops import CropSpec
from wca.features import Features, extract_features
from wca.options import RunOptions


class TinyDataset:
    """Generated images of a few sizes; label = colour family."""

    name = "tiny"
    split = "test"
    root = None

    def __init__(self, count: int = 7, classes: int = 3) -> None:
        self.classnames = [f"class {c}" for c in range(classes)]
        self.labels = [i % classes for i in range(count)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        label = self.labels[index]
        generator = torch.Generator().manual_seed(index)
        height, width = 40 + 7 * (index % 3), 50 + 5 * (index % 4)
        pixels = torch.randint(0, 120, (3, height, width), generator=generator, dtype=torch.uint8)
        pixels[label] += 120
        return TF.to_pil_image(pixels), label


def extract(encoder, dataset, cache_dir, **options):
    """``extract_features`` with this module's small defaults, ``options`` split into the crop
    spec (n_crops, alpha, ...), the run options (batch_size, ...) and the rest (fp16_cache,
    verify, ...)."""
    spec = {"n_crops": 5, "alpha": 0.5, "seed": 3}
    run = {"cache_dir": cache_dir, "batch_size": 8, "shard_size": 3, "progress": False}
    for name in list(options):
        if name in CropSpec.model_fields:
            spec[name] = options.pop(name)
        elif name in RunOptions.model_fields:
            run[name] = options.pop(name)
    return extract_features(encoder, dataset, CropSpec(**spec), RunOptions(**run), **options)


def copy_features(features: Features) -> Features:
    """An in-memory copy (cached features are memory-mapped from the files a test damages)."""
    return Features(
        features.image_emb.clone(),
        features.crop_emb.clone(),
        features.boxes,
        features.labels,
        features.source,
    )


def same_features(a: Features, b: Features) -> None:
    for name in ("image_emb", "crop_emb", "boxes", "labels"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
