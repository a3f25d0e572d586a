"""Single-object probe: what the demo model learned, as colour and shape accuracy by object size.

Each probe image holds one object of a random colour and shape, centred (with a small jitter)
on a noisy grey background; the model picks the caption "a {colour} {shape}." among all
colour x shape captions. Sizes are object radii in model-input pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from wca.demo.scene import COLOURS, SHAPES, Scene, backdrop, render
from wca.demo.world import article

PROBE_RADII = (1.5, 2.0, 3.0, 4.0, 6.0, 10.0)
CAPTIONS = [
    f"{article(f'{c} {s}')}." for c in COLOURS for s in SHAPES
]  # index = colour * len(SHAPES) + shape


def probe_images(
    radius_px: float, n: int, size: int = 64, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` probe images ``[n, 3, size, size]`` in [0, 1] with their colour and shape indices."""
    g = torch.Generator().manual_seed(seed * 1000 + int(radius_px * 10))
    shape = torch.arange(n).remainder(len(SHAPES))
    colour = torch.randint(len(COLOURS), (n,), generator=g)
    scene = Scene(
        x=(0.5 + 0.2 * (torch.rand(n, generator=g) - 0.5)).view(n, 1),
        y=(0.5 + 0.2 * (torch.rand(n, generator=g) - 0.5)).view(n, 1),
        radius=torch.full((n, 1), radius_px / size),
        angle=(torch.rand(n, generator=g) * 2 * math.pi).view(n, 1),
        shape=shape.view(n, 1),
        colour=colour.view(n, 1),
        valid=torch.ones(n, 1, dtype=torch.bool),
    )
    background, noise = backdrop(n, size, g)
    return render(scene, size, background, noise), colour, shape


@torch.no_grad()
def run_probe(
    encode_images: Callable[[Tensor], Tensor],
    encode_texts: Callable[[list[str]], Tensor],
    normalise: Callable[[Tensor], Tensor],
    n_per_size: int = 256,
    radii: tuple[float, ...] = PROBE_RADII,
    size: int = 64,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Colour and shape accuracy (%) per radius: ``{"3.0": {"colour": .., "shape": ..}, ...}``.

    ``encode_images`` takes normalised pixels ``[B,3,size,size]``; ``normalise`` maps [0, 1]
    pixels to the model's input; both encoders return embeddings (normalised or not).
    """
    text = torch.nn.functional.normalize(encode_texts(CAPTIONS).float(), dim=-1)
    out = {}
    for r in radii:
        images, colour, shape = probe_images(r, n_per_size, size, seed)
        emb = torch.nn.functional.normalize(encode_images(normalise(images)).float(), dim=-1)
        pred = (emb @ text.T).argmax(dim=1)
        out[str(r)] = {
            "colour": 100.0 * (pred // len(SHAPES) == colour).float().mean().item(),
            "shape": 100.0 * (pred % len(SHAPES) == shape).float().mean().item(),
        }
    return out


def format_probe(result: dict[str, dict[str, float]]) -> str:
    """A markdown table of a probe result (rows colour/shape, columns radius)."""
    radii = list(result)
    lines = [
        "| radius (px at 64 px input) | " + " | ".join(radii) + " |",
        "|---|" + "---|" * len(radii),
    ]
    for key in ("colour", "shape"):
        lines.append(f"| {key} | " + " | ".join(f"{result[r][key]:.1f}" for r in radii) + " |")
    return "\n".join(lines)
