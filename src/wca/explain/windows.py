"""Explanation crops: small views encoded only for the where-maps, cached on disk.

WCA's own crops are large (alpha 0.5: at least half the short side), so they cannot say which
small part of the image a description matches. The where-maps add square sliding windows at a
few small sizes; each window's side is a multiple of its stride, so every pixel away from the
border is covered by the same number of windows of each size, and the maps' contrast compares
like with like. The prediction and its scores never see these views.

Their embeddings are cached as safetensors under ``wca.defaults.cache_dir("views")``, keyed by
the model (identity, precision, preprocessing), the image (:func:`wca.classifier.image_key`)
and the windows; a file that does not match its key or its boxes is recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from wca import defaults
from wca.classifier import ImageTextEncoder, image_key
from wca.files import write_atomic
from wca.preprocessing import normalize_pixels, uint8_views

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Windows:
    """Square sliding windows of side ``sides[k]`` x the image's short side, ``overlap``
    windows of each size over every pixel along each axis (stride = side / overlap)."""

    sides: tuple[float, ...] = (0.1, 0.2)
    overlap: int = 3

    def __post_init__(self) -> None:
        if not self.sides or not all(0 < side <= 1 for side in self.sides):
            raise ValueError(f"windows: sides must be fractions in (0, 1], got {self.sides}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or self.overlap < 1:
            raise ValueError(f"windows: overlap must be an integer >= 1, got {self.overlap!r}")
        object.__setattr__(self, "sides", tuple(float(side) for side in self.sides))

    def boxes(self, width: int, height: int) -> Tensor:
        """The windows of a ``width`` x ``height`` image, ``[N, 4]`` (left, top, right,
        bottom), smallest size first, row by row. The stride is the side over ``overlap``
        rounded to whole pixels (at least 1) and the side ``overlap`` strides; a last row and
        column of windows lie flush with the far edges."""
        boxes = []
        for fraction in self.sides:
            stride = max(1, round(fraction * min(width, height) / self.overlap))
            side = min(stride * self.overlap, width, height)
            y, x = torch.meshgrid(
                _starts(height, side, stride), _starts(width, side, stride), indexing="ij"
            )
            corners = torch.stack([x.flatten(), y.flatten()], 1)
            boxes.append(torch.cat([corners, corners + side], 1))
        return torch.cat(boxes)

    def describe(self) -> str:
        """The windows in words, for figure captions."""
        sides = " and ".join(f"{side:g}" for side in self.sides)
        return f"sliding windows of {sides} x the short side, {self.overlap} over each pixel"


def _starts(length: int, side: int, stride: int) -> Tensor:
    """Window starts every ``stride`` pixels, and one flush with the far edge, so that the
    windows cover every pixel (the band within ``side`` of that edge is covered more)."""
    starts = torch.arange(0, length - side + 1, stride)
    return (
        starts
        if starts[-1] == length - side
        else torch.cat([starts, torch.tensor([length - side])])
    )


def window_embeddings(
    encoder: ImageTextEncoder, image: Image.Image, windows: Windows, cache: bool = True
) -> tuple[Tensor, Tensor]:
    """The windows' boxes ``[N, 4]`` and embeddings ``[N, D]`` (L2-normalised) of ``image``,
    from the cache when ``cache`` and the encoder has an ``identity``, else encoded (and
    stored) in batches of ``encoder.batch_size`` views."""
    boxes = windows.boxes(image.width, image.height)
    identity = getattr(encoder, "identity", None)
    if not cache or identity is None:
        return boxes, _encode(encoder, image, boxes)
    key = {
        "format": CACHE_FORMAT,
        "encoder": identity,
        "dtype": str(getattr(encoder, "dtype", "")),
        "preprocessing": dataclasses.asdict(encoder.preprocessing),
        "image": image_key(image),
        "windows": dataclasses.asdict(windows),
    }
    text = json.dumps(key, sort_keys=True)
    name = f"windows-{hashlib.sha256(text.encode()).hexdigest()}.safetensors"
    path = defaults.cache_dir("views") / name
    stored = _read(path, text, boxes)
    if stored is not None:
        return boxes, stored
    embeddings = _encode(encoder, image, boxes)
    tensors = {"boxes": boxes.contiguous(), "embeddings": embeddings.contiguous()}
    try:
        write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata={"wca": text}))
    except OSError as error:  # a read-only cache costs time, not the explanation
        log.warning(f"{path}: could not cache the explanation crops ({error})")
    return boxes, embeddings


def _read(path: Path, key: str, boxes: Tensor) -> Tensor | None:
    """The cached embeddings at ``path`` if the file is there, readable, written for ``key``
    and these ``boxes``, with finite values; else None (a warning when a file was there)."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as stored:
            metadata = stored.metadata() or {}
            # copies, not views of the mapped file: it may be replaced while they live
            tensors = {name: stored.get_tensor(name).clone() for name in stored.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        log.warning(f"{path}: unreadable ({error}); encoding the explanation crops again")
        return None
    embeddings = tensors.get("embeddings")
    if (
        metadata.get("wca") != key
        or not torch.equal(tensors.get("boxes", torch.empty(0)), boxes)
        or embeddings is None
        or embeddings.ndim != 2
        or len(embeddings) != len(boxes)
        or not torch.isfinite(embeddings).all()
    ):
        log.warning(f"{path}: does not hold these crops; encoding them again")
        return None
    return embeddings


def _encode(encoder: ImageTextEncoder, image: Image.Image, boxes: Tensor) -> Tensor:
    batch = int(getattr(encoder, "batch_size", defaults.BATCH_SIZE))
    device = getattr(encoder, "device", "cpu")
    parts = []
    with torch.inference_mode():
        for start in range(0, len(boxes), batch):
            views = uint8_views(image, boxes[start : start + batch], encoder.preprocessing)[1:]
            pixels = normalize_pixels(views.to(device), encoder.preprocessing)
            parts.append(encoder.encode_images(pixels).float().cpu())
    return torch.cat(parts)
