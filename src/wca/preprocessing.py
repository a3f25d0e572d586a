"""How a model wants its pixels, and the views made from an image and its crop boxes.

:class:`Preprocessing` is what the encoders declare (input size, mean and std, interpolation,
resize mode); the functions here turn a decoded image and its boxes (:mod:`wca.crops`) into
model inputs, in two ways:

- the fast path (:func:`fast_views`) decodes the image once and crops and resizes tensors;
- the fidelity path (:func:`fidelity_views`) crops with PIL and calls the model's own
  preprocessing on every crop, as the WCA authors' code does.

Every stack of views is ``[full view, crop 1, ..., crop N]``; the full view is the model's
standard preprocessing of the whole image (resize of the short side + centre crop for CLIP).
Each crop is resized to the model's input in both directions (square boxes keep their aspect).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms import InterpolationMode


@dataclass(frozen=True)
class Preprocessing:
    """The parameters of a CLIP-style image preprocessing, for the fast tensor path.

    ``resize_mode`` is ``"shortest"`` (resize the short side to ``image_size``, then centre
    crop: OpenAI CLIP and most open_clip models) or ``"squash"`` (resize both sides).
    ``resize_size``, where set, is the side resized to before a centre crop to ``image_size``
    (ALIGN squashes to 346 and crops 289). ``crop_rounding`` places an off-centre-by-half crop:
    ``"round"`` as torchvision (open_clip) or ``"floor"`` as transformers' image processors.
    """

    image_size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    resize_size: int | None = None
    crop_rounding: str = "round"


def image_to_tensor(image: Image.Image) -> Tensor:
    """An RGB PIL image as a ``uint8`` tensor ``[3, H, W]`` (decoded once for all views).

    The memory stays channels-last, as decoded: torch's antialiased ``uint8`` resize runs about
    twice as fast on it as on a contiguous ``CHW`` copy.
    """
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def resize_and_crop(pixels: Tensor, prep: Preprocessing) -> Tensor:
    """The model's resize + centre crop on a ``uint8`` tensor, antialiased like PIL."""
    interpolation = InterpolationMode(prep.interpolation)
    size, resize = prep.image_size, prep.resize_size or prep.image_size
    if prep.resize_mode == "squash":
        pixels = TF.resize(pixels, [resize, resize], interpolation=interpolation, antialias=True)
    elif prep.resize_mode == "shortest":
        pixels = TF.resize(pixels, resize, interpolation=interpolation, antialias=True)
    else:
        raise ValueError(f"unknown resize_mode {prep.resize_mode!r} (shortest or squash)")
    if prep.crop_rounding == "floor":
        top, left = (pixels.shape[-2] - size) // 2, (pixels.shape[-1] - size) // 2
        return pixels[..., top : top + size, left : left + size]
    return TF.center_crop(pixels, [size, size])


def normalize_pixels(
    views: Tensor, prep: Preprocessing, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``uint8`` views ``[V, 3, S, S]`` to ``dtype``, normalised with the model's mean and std,
    on the views' device: one allocation, scaled and shifted in place."""
    std = torch.tensor(prep.std, dtype=torch.float64)
    scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1)
    shift = (-torch.tensor(prep.mean, dtype=torch.float64) / std).view(1, 3, 1, 1)
    out = views.to(dtype)
    return out.mul_(scale.to(views.device, dtype)).add_(shift.to(views.device, dtype))


def _flip_flags(flips: Tensor | None, n: int) -> list[bool]:
    return [False] * n if flips is None else [bool(f) for f in flips.tolist()]


def uint8_views(
    image: Image.Image | Tensor,
    boxes: Tensor,
    prep: Preprocessing,
    flips: Tensor | None = None,
    *,
    full: bool = True,
) -> Tensor:
    """All views of one image before normalisation, ``uint8 [N+1, 3, S, S]`` (full view first;
    ``full=False``: the crops alone, ``[N, 3, S, S]``): a quarter of the bytes of float views,
    for loader workers to hand to the encoder. A square crop goes through the model's own
    resize and centre crop, as its processor would take it; a box that is not square (``rrc``)
    is resized to ``S x S``, as RandomResizedCrop does. Views are mirrored where ``flips``."""
    pixels = image if isinstance(image, Tensor) else image_to_tensor(image)
    size = prep.image_size
    interpolation = InterpolationMode(prep.interpolation)
    first = int(full)
    views = torch.empty(len(boxes) + first, size, size, 3, dtype=torch.uint8, device=pixels.device)
    views = views.permute(0, 3, 1, 2)  # channels-last, like the decoded image
    if full:
        views[0] = resize_and_crop(pixels, prep)
    flags = _flip_flags(flips, len(boxes))
    for i, (left, top, right, bottom) in enumerate(boxes.tolist(), start=first):
        crop = pixels[:, top:bottom, left:right]
        if right - left == bottom - top:
            view = resize_and_crop(crop, prep)
        else:
            view = TF.resize(crop, [size, size], interpolation=interpolation, antialias=True)
        views[i] = view.flip(-1) if flags[i - first] else view
    return views


def fast_views(
    image: Image.Image | Tensor, boxes: Tensor, prep: Preprocessing, flips: Tensor | None = None
) -> Tensor:
    """All views of one image, normalised, as one tensor ``[N+1, 3, S, S]`` (full view first)."""
    return normalize_pixels(uint8_views(image, boxes, prep, flips), prep)


def fidelity_views(
    image: Image.Image,
    boxes: Tensor,
    preprocess: Callable[[Image.Image], Tensor],
    flips: Tensor | None = None,
    size: int | None = None,
    *,
    full: bool = True,
) -> Tensor:
    """All views as the authors make them: PIL crop, then the model's own preprocessing
    (``full=False``: the crops alone, no full view first).

    A box that is not square is first resized (bicubic) to ``size x size``, the model's input,
    as RandomResizedCrop does; views are mirrored where ``flips``."""
    views = [preprocess(image)] if full else []
    for box, flip in zip(boxes.tolist(), _flip_flags(flips, len(boxes)), strict=True):
        crop = image.crop(tuple(box))
        if crop.width != crop.height:
            if size is None:
                raise ValueError("fidelity views of boxes that are not square need size")
            crop = crop.resize((size, size), Image.BICUBIC)
        views.append(preprocess(ImageOps.mirror(crop) if flip else crop))
    return torch.stack(views)
