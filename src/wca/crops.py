"""Localized visual prompting: random crops of an image and their preprocessed views.

Crop boxes (and, for ``rrc``, a horizontal flip per view) are a pure function of (seed, image
index, crop index), so any batching, worker count or process layout sees the same crops. Each
crop is resized to the model's input in both directions (square boxes keep their aspect).
Two ways turn an image and its boxes into model inputs:

- the fast path (:func:`fast_views`) decodes the image once and crops and resizes tensors;
- the fidelity path (:func:`fidelity_views`) crops with PIL and calls the model's own
  preprocessing on every crop, as the authors' code does.

Every stack of views is ``[full view, crop 1, ..., crop N]``; the full view is the model's
standard preprocessing of the whole image (resize of the short side + centre crop for CLIP).
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

from wca import defaults
from wca.errors import SettingError

# Version of the crop sampler; part of every feature-cache key.
SAMPLER_VERSION = 1
DEFAULT_BETA = defaults.BETA


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


@dataclass(frozen=True)
class CropSpec:
    """The crops of every image, validated once: ``n`` views per image, sides from ``alpha``
    to ``beta`` x the short side (the paper's U(alpha, beta)), the random stream ``seed`` and
    the sampler ``strategy`` (:data:`CROP_STRATEGIES`). The classifier, the evaluation config,
    the feature cache's key, the view pipeline and the web page all take one.

    An invalid value raises a :class:`~wca.errors.SettingError` naming the setting (``n``,
    ``alpha``, ...).
    """

    n: int = defaults.N_CROPS
    alpha: float = defaults.ALPHA
    beta: float = defaults.BETA
    seed: int = defaults.SEED
    strategy: str = "random"

    def __post_init__(self) -> None:
        for name in ("n", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise SettingError(name, f"must be an integer, got {value!r}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise SettingError(name, f"must be a number, got {value!r}")
            if not 0 < value <= 1:  # also refuses NaN
                raise SettingError(name, f"must be in (0, 1], got {value}")
        if self.n < 1:
            raise SettingError("n", f"must be >= 1, got {self.n}")
        if self.seed < 0:
            raise SettingError("seed", f"must be >= 0, got {self.seed}")
        if self.alpha > self.beta:
            raise SettingError("alpha", f"must be <= beta, got {self.alpha} > {self.beta}")
        if self.strategy not in CROP_STRATEGIES:
            choices = ", ".join(CROP_STRATEGIES)
            raise SettingError("strategy", f"must be one of {choices}, got {self.strategy!r}")
        for name, kind in (("n", int), ("seed", int), ("alpha", float), ("beta", float)):
            object.__setattr__(self, name, kind(getattr(self, name)))

    def views(self, height: int, width: int, image_key: int) -> tuple[Tensor, Tensor]:
        """``n`` boxes ``[n, 4]`` as ``(left, top, right, bottom)`` pixel corners and a
        horizontal flip flag per view ``bool [n]`` for an image of ``height x width`` whose
        crops are keyed by ``image_key`` (its index in a dataset, or a hash of its pixels).

        The paper's ``"random"``: square side = floor(U(alpha, beta) * min(height, width))
        (at least 1 pixel), placed uniformly inside the image, never flipped; row ``i``
        depends only on ``(seed, image_key, i)``.
        """
        if height < 1 or width < 1:
            raise ValueError(f"image of size {width}x{height} has no pixels to crop")
        if image_key < 0:
            raise ValueError(f"image key must be >= 0, got {image_key}")
        rng = np.random.default_rng((self.seed, image_key))
        sampler = CROP_STRATEGIES[self.strategy]
        boxes, flips = sampler(height, width, self.n, self.alpha, self.beta, rng)
        return torch.from_numpy(boxes), torch.from_numpy(flips)


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
    """The boxes of :func:`crop_views` alone, ``[n, 4]``."""
    return crop_views(height, width, n, alpha, beta, seed, image_index, strategy)[0]


def crop_views(
    height: int,
    width: int,
    n: int,
    alpha: float,
    beta: float = DEFAULT_BETA,
    seed: int = 0,
    image_index: int = 0,
    strategy: str = "random",
) -> tuple[Tensor, Tensor]:
    """:meth:`CropSpec.views` with the spec's fields given one by one."""
    return CropSpec(n, alpha, beta, seed, strategy).views(height, width, image_index)


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


def iou_filter(boxes: np.ndarray, max_iou: float, limit: int) -> list[int]:
    """BiFTA's view refinement on boxes ``[K, 4]`` (tmlr-group/BiFTA ``helper.py``,
    ``filter_augmented_samples``): in order, the first box is accepted and each later one is
    accepted when its IoU with every accepted box is at most ``max_iou``, until ``limit`` are
    accepted. The indices accepted, in order."""
    chosen: list[int] = []
    for i, box in enumerate(boxes):
        if len(chosen) == limit:
            break
        if not chosen or _iou(box, boxes[chosen]).max() <= max_iou:
            chosen.append(i)
    return chosen


def _diverse_boxes(height, width, n, alpha, beta, rng, max_iou: float = 0.5) -> np.ndarray:
    """Random crops without near-duplicates: BiFTA's rule (:func:`iou_filter`) at a stricter
    ``max_iou`` over 20 n candidates. Where the image cannot hold ``n`` such crops, the
    remaining slots take the next candidates unfiltered (``bifta`` is the authors' sampler)."""
    candidates = _random_boxes(height, width, 20 * n, alpha, beta, rng)
    chosen = iou_filter(candidates, max_iou, n)
    taken = set(chosen)
    rest = [i for i in range(len(candidates)) if i not in taken]
    return candidates[(chosen + rest)[:n]]


BIFTA_MAX_IOU = 0.85  # iou_threshold of every BiFTA config but imagenet_v2.yaml's 0.8
BIFTA_QUEUE = 100  # max_queue_len of every BiFTA config but imagenet_v2.yaml's 200


def _bifta_boxes(height, width, n, alpha, beta, rng) -> np.ndarray:
    """BiFTA's sampler (``create_random_crop_loader``): ``n`` candidates (their
    ``n_samples``: 100 for ImageNet, Food-101, Places365; 300 for CUB, DTD, Pets), kept by
    :func:`iou_filter` at IoU 0.85 up to 100 (their ``max_queue_len``), accepted ones first.
    Their main.py pads the queue with blank crops and draws only accepted ones; the pool here
    has ``n`` slots, so the slots beyond the accepted ones repeat accepted crops drawn
    uniformly (as their save_crops.py pads), which every draw of the pool then meets with
    the accepted crops' uniform chance, in expectation."""
    candidates = _random_boxes(height, width, n, alpha, beta, rng)
    chosen = iou_filter(candidates, BIFTA_MAX_IOU, BIFTA_QUEUE)
    padding = rng.integers(len(chosen), size=n - len(chosen))
    return candidates[chosen + [chosen[i] for i in padding]]


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


RRC_SCALE = (0.08, 1.0)  # torchvision RandomResizedCrop's defaults, as ZERO, MTA and AWT use
RRC_RATIO = (3 / 4, 4 / 3)
RRC_ATTEMPTS = 10


def _rrc_boxes(height, width, n, alpha, beta, rng) -> tuple[np.ndarray, np.ndarray]:
    """torchvision ``RandomResizedCrop.get_params`` (area fraction U(0.08, 1), log-uniform
    aspect in [3/4, 4/3], 10 attempts, then its centre-crop fallback) and a horizontal flip
    with p = 0.5 per view. ``alpha`` and ``beta`` are not used. Every view reads its own row
    of 41 uniforms, so view ``i`` depends only on ``(seed, image_index, i)``."""
    u = rng.random((n, 4 * RRC_ATTEMPTS + 1))
    area = height * width
    target = area * (RRC_SCALE[0] + (RRC_SCALE[1] - RRC_SCALE[0]) * u[:, :RRC_ATTEMPTS])
    log_lo, log_hi = np.log(RRC_RATIO)
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[:, RRC_ATTEMPTS : 2 * RRC_ATTEMPTS])
    w = np.round(np.sqrt(target * aspect)).astype(np.int64)  # round half to even, as Python
    h = np.round(np.sqrt(target / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.argmax(axis=1)
    rows = np.arange(n)
    w, h, found = w[rows, first], h[rows, first], fits[rows, first]
    top = np.floor(u[rows, 2 * RRC_ATTEMPTS + first] * (height - h + 1)).astype(np.int64)
    left = np.floor(u[rows, 3 * RRC_ATTEMPTS + first] * (width - w + 1)).astype(np.int64)
    # the fallback: the largest centred box with the aspect clamped to the ratio bounds
    in_ratio = width / height
    fw, fh = width, height
    if in_ratio < RRC_RATIO[0]:
        fh = int(round(width / RRC_RATIO[0]))
    elif in_ratio > RRC_RATIO[1]:
        fw = int(round(height * RRC_RATIO[1]))
    w, h = np.where(found, w, fw), np.where(found, h, fh)
    top = np.where(found, top, (height - fh) // 2)
    left = np.where(found, left, (width - fw) // 2)
    boxes = np.stack([left, top, left + w, top + h], axis=1).reshape(-1, 4)
    return boxes, u[:, -1] < 0.5


def _unflipped(sampler):
    """A square-box sampler as a strategy: no view is flipped."""

    def strategy(height, width, n, alpha, beta, rng) -> tuple[np.ndarray, np.ndarray]:
        return sampler(height, width, n, alpha, beta, rng), np.zeros(n, dtype=bool)

    strategy.__doc__ = sampler.__doc__
    return strategy


# Crop-set samplers by name: fn(height, width, n, alpha, beta, numpy Generator) ->
# (int boxes [n, 4], bool flips [n]).
CROP_STRATEGIES = {
    "random": _unflipped(_random_boxes),
    "diverse": _unflipped(_diverse_boxes),
    "bifta": _unflipped(_bifta_boxes),
    "grid": _unflipped(_grid_boxes),
    "rrc": _rrc_boxes,
}


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


def _flip_flags(flips: Tensor | None, n: int) -> list[bool]:
    return [False] * n if flips is None else [bool(f) for f in flips.tolist()]


def uint8_views(
    image: Image.Image | Tensor, boxes: Tensor, prep: Preprocessing, flips: Tensor | None = None
) -> Tensor:
    """All views of one image before normalisation, ``uint8 [N+1, 3, S, S]`` (full view first):
    a quarter of the bytes of float views, for loader workers to hand to the encoder. A square
    crop goes through the model's own resize and centre crop, as its processor would take it;
    a box that is not square (``rrc``) is resized to ``S x S``, as RandomResizedCrop does.
    Views are mirrored where ``flips``."""
    pixels = image if isinstance(image, Tensor) else image_to_tensor(image)
    size = prep.image_size
    interpolation = InterpolationMode(prep.interpolation)
    views = torch.empty(len(boxes) + 1, size, size, 3, dtype=torch.uint8, device=pixels.device)
    views = views.permute(0, 3, 1, 2)  # channels-last, like the decoded image
    views[0] = _resize_and_crop(pixels, prep)
    flags = _flip_flags(flips, len(boxes))
    for i, (left, top, right, bottom) in enumerate(boxes.tolist(), start=1):
        crop = pixels[:, top:bottom, left:right]
        if right - left == bottom - top:
            view = _resize_and_crop(crop, prep)
        else:
            view = TF.resize(crop, [size, size], interpolation=interpolation, antialias=True)
        views[i] = view.flip(-1) if flags[i - 1] else view
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
) -> Tensor:
    """All views as the authors make them: PIL crop, then the model's own preprocessing.

    A box that is not square is first resized (bicubic) to ``size x size``, the model's input,
    as RandomResizedCrop does; views are mirrored where ``flips``."""
    views = [preprocess(image)]
    for box, flip in zip(boxes.tolist(), _flip_flags(flips, len(boxes)), strict=True):
        crop = image.crop(tuple(box))
        if crop.width != crop.height:
            if size is None:
                raise ValueError("fidelity views of boxes that are not square need size")
            crop = crop.resize((size, size), Image.BICUBIC)
        views.append(preprocess(ImageOps.mirror(crop) if flip else crop))
    return torch.stack(views)
