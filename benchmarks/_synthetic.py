"""Synthetic features and texts of any size for the scoring benchmarks (scoring.py, gpu.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from wca.features import Features
from wca.methods import TextSources


def synthetic_features(images: int, pool: int, dim: int, classes: int, part: int) -> Features:
    """Unit-norm fp16 features: crops are noisy copies of their image, made ``part`` at a time."""
    generator = torch.Generator().manual_seed(0)
    image_emb = F.normalize(torch.randn(images, dim, generator=generator), dim=-1)
    parts = []
    for lo in range(0, images, part):
        rows = image_emb[lo : lo + part]
        noise = torch.randn(len(rows), pool, dim, generator=generator)
        parts.append(F.normalize(noise.mul_(0.05).add_(rows[:, None]), dim=-1).half())
    labels = torch.randint(0, classes, (images,), generator=generator)
    boxes = torch.zeros(1, pool, 4, dtype=torch.long).expand(images, pool, 4)
    return Features(image_emb.half(), parts, boxes, labels)


def synthetic_sources(classes: int, descriptions: int) -> TextSources:
    """Text sources of ImageNet's shape: 80 templates, 5 descriptors and ``descriptions``
    sentences per class, a 1000-word list for WaffleCLIP."""
    names = [f"class {i}" for i in range(classes)]
    return TextSources(
        classnames=names,
        sentences={n: [f"{n} sentence {j}." for j in range(descriptions)] for n in names},
        descriptors={n: [f"feature {j} of {n}" for j in range(5)] for n in names},
        templates=[f"a photo number {k} of a {{}}." for k in range(80)],
        words=[f"word{k}" for k in range(1000)],
    )


@dataclass
class SyntheticTextEncoder:
    """Texts -> random unit vectors (a fixed generator: the scoring cost does not depend on
    which vectors they are), with CLIP's temperature, passed to ``build_head`` like a model."""

    dim: int
    logit_scale: float = 100.0

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(1)

    def encode_texts(self, texts: list[str]) -> Tensor:
        return F.normalize(torch.randn(len(texts), self.dim, generator=self.generator), dim=-1)
