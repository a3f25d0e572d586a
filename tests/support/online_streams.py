"""Random streams and tiny text sides for the tests of the online heads (DOTA, ECALP, BCA,
OGA): unit embeddings in float64, noisy copies of class prototypes so that pseudo-labels vary
and every memory fills."""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from wca.methods import TextSources
from wca.methods.online import Base
from wca.methods.prompts import PromptHead

D = 12


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


def stream_views(
    n_images: int, n_views: int, classes: int, seed: int = 0, spread: float = 0.6
) -> torch.Tensor:
    """Views ``[B, V, D]`` of ``n_images`` images: noisy copies of a class prototype."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = unit(classes, D, seed=seed + 100)
    labels = torch.randint(classes, (n_images,), generator=generator)
    noise = torch.randn(n_images, n_views, D, generator=generator, dtype=torch.float64)
    return F.normalize(prototypes[labels][:, None] + spread * noise, dim=-1)


def clip_base(text: torch.Tensor, scale: float) -> Base:
    """CLIP with class vectors ``text`` as an online method's base, at ``scale``."""
    return Base(PromptHead(text[None]), scale, text)


def streamed(head, views: torch.Tensor, cuts=(0, 1, 7, 8, 30)) -> torch.Tensor:
    """The head's outputs over ``views [B, V, D]`` fed to one stream in uneven chunks."""
    stream, bounds = head.stream(len(views)), [*cuts, len(views)]
    crops = views[:, 1:] if views.shape[1] > 1 else None
    return torch.cat(
        [
            stream.logits(views[lo:hi, 0], None if crops is None else crops[lo:hi])
            for lo, hi in zip(bounds, bounds[1:], strict=False)
        ]
    )


def hash_encoder(texts: list[str]) -> torch.Tensor:
    """Texts -> unit vectors seeded by the text (the same text, the same vector)."""
    seeds = [int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) for text in texts]
    rows = [torch.randn(D, generator=torch.Generator().manual_seed(seed)) for seed in seeds]
    return F.normalize(torch.stack(rows), dim=-1)


def toy_sources() -> TextSources:
    names = ["red fox", "grey wolf", "tabby cat", "snow owl"]
    return TextSources(
        classnames=names,
        sentences={
            n: [f"a {n} in the snow.", f"the {n} has fur.", f"a photo of {n}."] for n in names
        },
        descriptors={n: ["a pointed snout", "four legs", f"the colour of a {n}"] for n in names},
    )
