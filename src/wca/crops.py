"""Localized visual prompting: random square crops of an image and their preprocessed views.

Crop boxes are a pure function of (seed, image index, crop index), so any batching, worker count
or process layout sees the same crops. Two ways turn an image and its boxes into model inputs:

- the fast path (:func:`fast_views`) decodes the image once and crops and resizes tensors;
- the fidelity path (:func:`fidelity_views`) crops with PIL and calls the model's own
  preprocessing on every crop, as the authors' code does.

Every stack of views is ``[full view, crop 1, ..., crop N]``; the full view is the model's
standard preprocessing of the whole image (resize of the short side + centre crop for CLIP).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms import InterpolationMode

# Version of the crop sampler; part of every feature-cache key.
SAMPLER_VERSION = 1
DEFAULT_BETA = 0.9  # the authors hard-code the upper bound of the crop scale


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


def crop_boxes(
    height: int,
    width: int,
    n: int,
    alpha: float,
    beta: float = DEFAULT_BETA,
    seed: int = 0,
    image_index: int = 0,
    strategy: str = "random",
) -> Tensor:
    """Return ``n`` square boxes ``[n, 4]`` as ``(left, top, right, bottom)`` pixel corners.

    ``strategy`` names a sampler in :data:`CROP_STRATEGIES`. The paper's ``"random"``: side =
    floor(U(alpha, beta) * min(height, width)) (at least 1 pixel), placed uniformly inside the
    image; row ``i`` depends only on ``(seed, image_index, i)``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image of size {width}x{height} has no pixels to crop")
    if not 0 < alpha <= beta <= 1:
        raise ValueError(f"need 0 < alpha <= beta <= 1, got alpha={alpha}, beta={beta}")
    if seed < 0 or image_index < 0:
        raise ValueError(f"seed and image index must be >= 0, got {seed} and {image_index}")
    if strategy not in CROP_STRATEGIES:
        raise ValueError(f"unknown crop strategy {strategy!r}; choose from {list(CROP_STRATEGIES)}")
    rng = np.random.default_rng((seed, image_index))
    return torch.from_numpy(CROP_STRATEGIES[strategy](height, width, n, alpha, beta, rng))


def _place(height: int, width: int, scale: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boxes of side floor(scale * short side) (>= 1) at relative positions x, y in [0, 1)."""
    side = np.maximum(np.floor(scale * min(height, width)), 1).astype(np.int64)
    left = np.floor(x * (width - side + 1)).astype(np.int64)
    top = np.floor(y * (height - side + 1)).astype(np.int64)
    return np.stack([left, top, left + side, top + side], axis=1).reshape(-1, 4)


def _random_boxes(height, width, n, alpha, beta, rng) -> np.ndarray:
    """The paper's sampler: uniform scale in [alpha, beta], uniform position."""
    u = rng.random((n, 3))
    return _place(height, width, alpha + (beta - alpha) * u[:, 0], u[:, 1], u[:, 2])


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    width = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    height = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def _diverse_boxes(height, width, n, alpha, beta, rng, max_iou: float = 0.5) -> np.ndarray:
    """Random crops without near-duplicates: a candidate overlapping an accepted crop by IoU
    above ``max_iou`` is skipped (as BiFTA filters its views). Where the image cannot hold ``n``
    such crops, the remaining slots take the next candidates unfiltered."""
    candidates = _random_boxes(height, width, 20 * n, alpha, beta, rng)
    chosen: list[int] = []
    for i, box in enumerate(candidates):
        if len(chosen) == n:
            break
        if not chosen or _iou(box, candidates[chosen]).max() <= max_iou:
            chosen.append(i)
    taken = set(chosen)
    rest = [i for i in range(len(candidates)) if i not in taken]
    return candidates[(chosen + rest)[:n]]


def _grid_boxes(height, width, n, alpha, beta, rng) -> np.ndarray:
    """A deterministic multi-scale grid: level l has (l + 2)^2 evenly spread crops, from scale
    beta down to alpha, coarse levels first, until n crops are placed."""
    levels = 1
    while sum((level + 2) ** 2 for level in range(levels)) < n:
        levels += 1
    scales = np.linspace(beta, alpha, levels) if levels > 1 else np.array([beta])
    boxes = []
    for level, scale in enumerate(scales):
        steps = np.linspace(0, 1 - 1e-9, level + 2)
        x, y = np.meshgrid(steps, steps)
        boxes.append(_place(height, width, np.full(x.size, scale), x.ravel(), y.ravel()))
    return np.concatenate(boxes)[:n]


# Crop-set samplers by name: fn(height, width, n, alpha, beta, numpy Generator) -> int [n, 4].
CROP_STRATEGIES = {"random": _random_boxes, "diverse": _diverse_boxes, "grid": _grid_boxes}


def load_image(source: str | Path | Image.Image) -> Image.Image:
    """Open an image as 8-bit RGB, upright by its EXIF orientation, with a clear error if not."""
    if isinstance(source, Image.Image):
        image = source
    else:
        try:
            image = Image.open(source)
            image.load()
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{source}: not a readable image ({error})") from error
    if image.width < 1 or image.height < 1:
        raise ValueError(f"{getattr(image, 'filename', '') or 'image'}: has no pixels")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _to_8bit(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale a 16/32-bit single-channel image to 8 bits (PIL's convert would clip it)."""
    values = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
    if image.mode == "F":
        top = max(float(values.max()), 1.0)
    return Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def image_to_tensor(image: Image.Image) -> Tensor:
    """An RGB PIL image as a ``uint8`` tensor ``[3, H, W]`` (decoded once for all views).

    The memory stays channels-last, as decoded: torch's antialiased ``uint8`` resize runs about
    twice as fast on it as on a contiguous ``CHW`` copy.
    """
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def _resize_and_crop(pixels: Tensor, prep: Preprocessing) -> Tensor:
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


def uint8_views(image: Image.Image | Tensor, boxes: Tensor, prep: Preprocessing) -> Tensor:
    """All views of one image before normalisation, ``uint8 [N+1, 3, S, S]`` (full view first):
    a quarter of the bytes of float views, for loader workers to hand to the encoder."""
    pixels = image if isinstance(image, Tensor) else image_to_tensor(image)
    size = prep.image_size
    views = torch.empty(len(boxes) + 1, size, size, 3, dtype=torch.uint8, device=pixels.device)
    views = views.permute(0, 3, 1, 2)  # channels-last, like the decoded image
    views[0] = _resize_and_crop(pixels, prep)
    for i, (left, top, right, bottom) in enumerate(boxes.tolist(), start=1):
        views[i] = _resize_and_crop(pixels[:, top:bottom, left:right], prep)
    return views


def fast_views(image: Image.Image | Tensor, boxes: Tensor, prep: Preprocessing) -> Tensor:
    """All views of one image, normalised, as one tensor ``[N+1, 3, S, S]`` (full view first)."""
    return normalize_pixels(uint8_views(image, boxes, prep), prep)


def fidelity_views(
    image: Image.Image, boxes: Tensor, preprocess: Callable[[Image.Image], Tensor]
) -> Tensor:
    """All views as the authors make them: PIL crop, then the model's own preprocessing."""
    views = [preprocess(image)]
    views += [preprocess(image.crop(tuple(box))) for box in boxes.tolist()]
    return torch.stack(views)
