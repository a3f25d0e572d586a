"""Decoding images: any file PIL opens (and arrays) as upright 8-bit RGB, with a guard against
decompression bombs, and the key of an image's pixels that its crops are drawn from when it has
no place in a dataset."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS_ENV = "WCA_MAX_IMAGE_PIXELS"  # 0 or "none": no limit


def max_image_pixels() -> int | None:
    """The largest image (width x height) :func:`load_image` decodes: ``$WCA_MAX_IMAGE_PIXELS``
    (``0``/``none``: no limit), else PIL's ``Image.MAX_IMAGE_PIXELS`` (about 89 megapixels),
    which guards against decompression bombs (a tiny file declaring a huge image)."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip().lower()
    if not value:
        return Image.MAX_IMAGE_PIXELS
    if value == "none":
        return None
    try:
        limit = int(value)
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV}={value!r} is not a number of pixels") from None
    if limit < 0:
        raise ValueError(f"{MAX_PIXELS_ENV}={value!r} must be >= 0 (0: no limit)")
    return limit or None


def _open(source: str | Path) -> Image.Image:
    """Decode a file, refusing images above :func:`max_image_pixels` with a clear error."""
    limit = max_image_pixels()
    if os.environ.get(MAX_PIXELS_ENV):
        Image.MAX_IMAGE_PIXELS = limit  # PIL refuses above twice its own global
    try:
        image = Image.open(source)
        if limit is not None and image.width * image.height > limit:
            raise Image.DecompressionBombError(f"{image.width} x {image.height} pixels")
        image.load()
    except Image.DecompressionBombError as error:
        # PIL's own refusal (above twice its limit) quotes that limit and not the size: say
        # the size and the one limit that applies
        size = re.search(r"\((\d+) pixels\)", str(error))
        what = f"{size[1]} pixels" if size else str(error)
        raise ValueError(
            f"{source}: image too large ({what}; the limit is {limit} pixels, a guard against "
            f"decompression bombs): raise it with --max-image-pixels N or {MAX_PIXELS_ENV}=N "
            "(0: no limit) if you trust the file"
        ) from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{source}: not a readable image ({error})") from error
    return image


def load_image(source: str | Path | Image.Image) -> Image.Image:
    """Open an image as 8-bit RGB, upright by its EXIF orientation, with a clear error if not
    (unreadable, or larger than :func:`max_image_pixels`)."""
    image = source if isinstance(source, Image.Image) else _open(source)
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


def image_key(image: Image.Image) -> int:
    """A 63-bit key of an image's decoded RGB pixels and size: its crops' random stream."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{image.width}x{image.height}".encode())
    digest.update(np.asarray(image, dtype=np.uint8).tobytes())
    return int.from_bytes(digest.digest(), "big") >> 1


def as_image(source: str | Path | Image.Image | np.ndarray) -> Image.Image:
    """A path, a PIL image or an ``HxW`` / ``HxWxC`` uint8 array as an upright RGB image."""
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise ValueError(
                f"array image: want uint8 HxW or HxWxC, got {source.dtype} {source.shape}"
            )
        source = Image.fromarray(source)
    elif not isinstance(source, str | Path | Image.Image):
        raise ValueError(f"not an image: {type(source).__name__} (a path, PIL image or array)")
    return load_image(source)
