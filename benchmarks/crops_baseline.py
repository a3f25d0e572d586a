"""The fast path of :mod:`wca.crops` as it was before commit b13b9ce, kept to measure that change
(``benchmarks/preprocess.py`` and ``benchmarks/extract.py --config ...,float_views=1``).

b13b9ce took the changes this benchmark proposed, after profiling: decode to a channels-last
view instead of a contiguous ``CHW`` copy, resize into one preallocated ``uint8`` stack instead
of a list + ``torch.stack``, normalise with one allocation in place instead of four
temporaries, and let loader workers hand over ``uint8`` views (normalised per encoder batch).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from wca.preprocessing import Preprocessing, resize_and_crop


def image_to_tensor(image: Image.Image) -> Tensor:
    """The old decode: a contiguous ``CHW`` copy."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def normalize_pixels(views: Tensor, prep: Preprocessing) -> Tensor:
    """The old normalisation: four full-size float temporaries."""
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    return (views.float() / 255.0 - mean) / std


def fast_views(
    image: Image.Image | Tensor, boxes: Tensor, prep: Preprocessing, flips: Tensor | None = None
) -> Tensor:
    """The old fast path: float views ``[N+1, 3, S, S]``, full view first (square boxes; the
    ``flips`` of today's views mirrored afterwards)."""
    pixels = image if isinstance(image, Tensor) else image_to_tensor(image)
    views = [resize_and_crop(pixels, prep)]
    for left, top, right, bottom in boxes.tolist():
        views.append(resize_and_crop(pixels[:, top:bottom, left:right], prep))
    views = torch.stack(views)
    if flips is not None and bool(flips.any()):
        views[1:][flips] = views[1:][flips].flip(-1)
    return normalize_pixels(views, prep)
