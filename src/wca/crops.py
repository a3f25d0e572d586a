"""Localized visual prompting: which crops of an image are read, validated once.

A :class:`CropSpec` names the crops of every image: how many, their sizes, the random stream
and the sampler (:data:`CROP_STRATEGIES`). Crop boxes (and, for ``rrc``, a horizontal flip per
view) are a pure function of (seed, image key, crop index), so any batching, worker count or
process layout sees the same crops, and the first k crops of a spec are the crops of the same
spec with ``n_crops = k``. How boxes become model inputs is :mod:`wca.preprocessing`.

The settings are declared once here (type, bounds, help) and read by every front end: the
evaluation config, the classifier, the command line and the web page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from wca import defaults
from wca.compat import renamed
from wca.errors import SettingError
from wca.registry import Registry

# Version of the crop sampler; part of every feature-cache key.
SAMPLER_VERSION = 1
DEFAULT_BETA = defaults.BETA

# The crop settings, declared once (the evaluation config uses the same declarations).
NCrops = Annotated[
    int,
    Field(
        ge=1,
        description="crops per image (an evaluation's pool, from which each run draws patch_n)",
        json_schema_extra={"group": "crops", "metavar": "N", "identity": True},
    ),
]
Alpha = Annotated[
    float,
    Field(
        gt=0,
        le=1,
        description="smallest crop side, as a fraction of the image's short side",
        json_schema_extra={"group": "crops", "identity": True},
    ),
]
Beta = Annotated[
    float,
    Field(
        gt=0,
        le=1,
        description="largest crop side fraction",
        json_schema_extra={"group": "crops", "identity": True},
    ),
]
Seed = Annotated[
    int,
    Field(
        ge=0,
        description="seed of the crops (and of the runs' draws)",
        json_schema_extra={"group": "crops", "identity": True},
    ),
]
Strategy = Annotated[
    str,
    Field(
        description="random: the paper's uniform square crops; diverse: random without "
        "near-duplicates (IoU filter); bifta: BiFTA's IoU-0.85 refinement of n_crops candidates; "
        "grid: a multi-scale grid; rrc: RandomResizedCrop boxes with random flips, as ZERO, MTA "
        "and AWT augment",
        json_schema_extra={"group": "crops", "metavar": "NAME", "identity": True},
    ),
]


class CropSpec(BaseModel):
    """The crops of every image (see the module doc): ``n_crops`` views per image, sides from
    ``alpha`` to ``beta`` x the short side (the paper's U(alpha, beta)), the random stream
    ``seed`` and the sampler ``crop_strategy``. An invalid value raises a
    :class:`~wca.errors.SettingError` naming the setting."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    n_crops: NCrops = defaults.N_CROPS
    alpha: Alpha = defaults.ALPHA
    beta: Beta = defaults.BETA
    seed: Seed = defaults.SEED
    crop_strategy: Strategy = "random"

    def __init__(self, **values: Any) -> None:
        values = renamed(values, {"n": "n_crops", "strategy": "crop_strategy"}, "CropSpec")
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise setting_error(error) from None
        if self.alpha > self.beta:
            raise SettingError("alpha", f"must be <= beta, got {self.alpha} > {self.beta}")

    @field_validator("n_crops", "seed", mode="before")
    @classmethod
    def _integer(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"must be an integer, got {value!r}")
        return int(value)

    @field_validator("crop_strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in CROP_STRATEGIES:
            raise ValueError(f"must be one of {', '.join(CROP_STRATEGIES)}, got {value!r}")
        return value

    def views(self, height: int, width: int, image_key: int):
        """``n_crops`` boxes ``[n, 4]`` as ``(left, top, right, bottom)`` pixel corners and a
        horizontal flip flag per view ``bool [n]`` (torch tensors) for an image of ``height x
        width`` whose crops are keyed by ``image_key`` (its index in a dataset, or a hash of its
        pixels).

        The paper's ``"random"``: square side = floor(U(alpha, beta) * min(height, width))
        (at least 1 pixel), placed uniformly inside the image, never flipped; row ``i``
        depends only on ``(seed, image_key, i)``.
        """
        import torch

        if height < 1 or width < 1:
            raise ValueError(f"image of size {width}x{height} has no pixels to crop")
        if image_key < 0:
            raise ValueError(f"image key must be >= 0, got {image_key}")
        rng = np.random.default_rng((self.seed, image_key))
        sampler = CROP_STRATEGIES[self.crop_strategy]
        boxes, flips = sampler(height, width, self.n_crops, self.alpha, self.beta, rng)
        return torch.from_numpy(boxes), torch.from_numpy(flips)


def setting_error(error: ValidationError) -> SettingError:
    """The first problem of a settings model's validation error, naming the setting."""
    first = error.errors()[0]
    setting = ".".join(map(str, first["loc"])) or "settings"
    message = first["msg"].removeprefix("Value error, ")
    got = f", got {first['input']!r}" if "input" in first and "got " not in message else ""
    return SettingError(setting, f"{message}{got}")


def crop_boxes(
    height: int,
    width: int,
    n: int,
    alpha: float,
    beta: float = DEFAULT_BETA,
    seed: int = 0,
    image_index: int = 0,
    strategy: str = "random",
):
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
):
    """:meth:`CropSpec.views` with the spec's fields given one by one."""
    spec = CropSpec(n_crops=n, alpha=alpha, beta=beta, seed=seed, crop_strategy=strategy)
    return spec.views(height, width, image_index)


# A sampler: fn(height, width, n, alpha, beta, numpy Generator) -> (int boxes [n, 4], bool
# flips [n]).
Sampler = Callable[..., tuple[np.ndarray, np.ndarray]]


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
CROP_STRATEGIES: Registry[Sampler] = Registry("crop strategy")
CROP_STRATEGIES.register("random", _unflipped(_random_boxes))
CROP_STRATEGIES.register("diverse", _unflipped(_diverse_boxes))
CROP_STRATEGIES.register("bifta", _unflipped(_bifta_boxes))
CROP_STRATEGIES.register("grid", _unflipped(_grid_boxes))
CROP_STRATEGIES.register("rrc", _rrc_boxes)
