"""A small deterministic stand-in for a CLIP encoder, for tests that need no real model."""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from wca.crops import Preprocessing, fast_views


class FakeEncoder:
    """Images: a fixed random projection of 4x4-pooled pixels. Texts: a hash-seeded vector.
    Counts its calls so tests can check caching."""

    def __init__(self, dim: int = 16, image_size: int = 32) -> None:
        self.preprocessing = Preprocessing(image_size=image_size)
        self.logit_scale = 100.0
        self.embed_dim = dim
        self.projection = torch.randn(3 * 16, dim, generator=torch.Generator().manual_seed(0))
        self.image_calls = 0
        self.text_calls = 0

    def preprocess(self, image: Image.Image) -> Tensor:
        return fast_views(image, torch.zeros(0, 4, dtype=torch.long), self.preprocessing)[0]

    def encode_images(self, pixels: Tensor) -> Tensor:
        self.image_calls += 1
        pooled = F.adaptive_avg_pool2d(pixels.float(), 4).flatten(1)
        return F.normalize(pooled @ self.projection, dim=-1)

    def encode_texts(self, texts: list[str]) -> Tensor:
        self.text_calls += 1
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        rows = [
            torch.randn(self.embed_dim, generator=torch.Generator().manual_seed(s)) for s in seeds
        ]
        return F.normalize(torch.stack(rows), dim=-1).reshape(len(texts), self.embed_dim)
