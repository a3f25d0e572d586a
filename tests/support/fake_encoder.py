"""A small deterministic stand-in for a CLIP encoder (the ``wca.encoders.Encoder`` interface),
for tests that need no real model."""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from PIL import Image

from wca import preprocessing


class FakeEncoder:
    """Images: a fixed random projection of 8x8-pooled pixels. Texts: a vector seeded by the
    text. Counts image calls and views, and can fail on purpose after ``fail_after`` calls."""

    name = "fake"
    embed_dim = 16
    device = torch.device("cpu")
    dtype = torch.float32
    logit_scale = 100.0
    preprocessing = preprocessing.Preprocessing(image_size=32)

    def __init__(self, seed: int = 0, fail_after: int | None = None) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.identity = f"fake:seed{seed}"
        self.projection = torch.randn(3 * 8 * 8, self.embed_dim, generator=generator)
        self.calls = 0
        self.views = 0
        self.fail_after = fail_after

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        no_boxes = torch.zeros(0, 4, dtype=torch.long)
        return preprocessing.fast_views(image, no_boxes, self.preprocessing)[0]

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # a kill in the middle of the pass
        self.calls += 1
        self.views += len(pixels)
        pooled = F.adaptive_avg_pool2d(pixels.float(), 8).flatten(1)
        return F.normalize(pooled @ self.projection, dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        seeds = [int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) for text in texts]
        rows = [
            torch.randn(self.embed_dim, generator=torch.Generator().manual_seed(s)) for s in seeds
        ]
        return F.normalize(torch.stack(rows), dim=-1).reshape(len(texts), self.embed_dim)
