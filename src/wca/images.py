"""Decoding images: any file PIL opens (and arrays) as upright 8-bit RGB, with a guard against
decompression bombs (the limit is carried with the data it guards: a dataset's or classifier's
``max_image_pixels``), and the key of an image's pixels that its crops are drawn from when it has
no place in a dataset."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wca.defaults import MAX_IMAGE_PIXELS, URL_MAX_BYTES, URL_TIMEOUT

_PIL_GUARD = threading.Lock()  # PIL's own guard is a process-wide setting


class ImageTooLarge(ValueError):
    """An image above the decompression-bomb guard; ``setting`` names the option that raises
    it (front ends name their own flag for it)."""

    setting = "max_image_pixels"


@contextlib.contextmanager
def _pil_allows(limit: int) -> Iterator[None]:
    """PIL's own refusal (above twice its global limit) lifted while a larger ``limit`` (0: no
    limit) is checked here instead; PIL's setting is restored after."""
    if limit and limit <= 2 * Image.MAX_IMAGE_PIXELS:
        yield
        return
    with _PIL_GUARD:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _open(source: str | Path | BinaryIO, limit: int, name: str | None = None) -> Image.Image:
    """Decode a file (or a stream, called ``name`` in errors), refusing images above
    ``limit`` pixels (0: no limit) with a clear error."""
    name = str(source) if name is None else name
    try:
        with _pil_allows(limit), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below
            image = Image.open(source)
            if limit and image.width * image.height > limit:
                raise Image.DecompressionBombError(f"({image.width * image.height} pixels)")
            image.load()
    except Image.DecompressionBombError as error:
        size = re.search(r"\((\d+) pixels\)", str(error))
        what = f"{size[1]} pixels" if size else str(error)
        raise ImageTooLarge(
            f"{name}: image too large ({what}; the limit is {limit} pixels, a guard against "
            "decompression bombs): raise max_image_pixels (0: no limit) if you trust the file"
        ) from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{name}: not a readable image ({error})") from error
    return image


def load_image(
    source: str | Path | BinaryIO | Image.Image,
    max_pixels: int = MAX_IMAGE_PIXELS,
    name: str | None = None,
) -> Image.Image:
    """Open an image as 8-bit RGB, upright by its EXIF orientation, with a clear error if not
    (unreadable, or larger than ``max_pixels``, width x height; 0: no limit). A stream (an
    image inside an archive) is called ``name`` in errors."""
    image = source if isinstance(source, Image.Image) else _open(source, max_pixels, name)
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


def fetch(url: str, timeout: float = URL_TIMEOUT, max_bytes: int = URL_MAX_BYTES) -> bytes:
    """The bytes at an http(s) ``url``, refused (a ValueError naming it) when the server does
    not answer, or send them all, within ``timeout`` seconds, or sends more than
    ``max_bytes``."""
    import httpx

    deadline = time.monotonic() + timeout
    too_large = ValueError(f"{url}: more than {max_bytes} bytes, the limit for an image")
    data = bytearray()
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            response.raise_for_status()
            if int(response.headers.get("content-length") or 0) > max_bytes:
                raise too_large
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise too_large
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the whole answer took too long")
    except httpx.TimeoutException:
        raise ValueError(f"{url}: no whole answer within {timeout:g} s") from None
    except httpx.HTTPStatusError as error:
        raise ValueError(f"{url}: HTTP {error.response.status_code}") from None
    except httpx.HTTPError as error:
        raise ValueError(f"{url}: cannot be fetched ({error})") from None
    return bytes(data)


def as_image(
    source: str | Path | Image.Image | np.ndarray, max_pixels: int = MAX_IMAGE_PIXELS
) -> Image.Image:
    """A path, an http(s) URL (:func:`fetch`), a PIL image or an ``HxW`` / ``HxWxC`` uint8
    array as an upright RGB image."""
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return load_image(io.BytesIO(fetch(source)), max_pixels, name=source)
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise ValueError(
                f"array image: want uint8 HxW or HxWxC, got {source.dtype} {source.shape}"
            )
        source = Image.fromarray(source)
    elif not isinstance(source, str | Path | Image.Image):
        raise ValueError(f"not an image: {type(source).__name__} (a path, PIL image or array)")
    return load_image(source, max_pixels)
