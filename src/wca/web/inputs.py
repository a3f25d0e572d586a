"""What a visitor sends, checked before the model sees it: one clear message per mistake.

Nothing here imports Gradio, so the checks are plain functions raising :class:`InputError`
(a ``ValueError``) that the page turns into a message box.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from wca.crops import CropSpec
from wca.descriptions.io import class_key, load_classnames, load_descriptions
from wca.errors import SettingError
from wca.methods.prompts import LABEL_TEMPLATE

MAX_BYTES = 20 * 1024 * 1024  # largest image file accepted (20 MB)
MAX_PIXELS = 64_000_000  # largest image decoded (64 megapixels): beyond, a decompression bomb
MAX_CLASSES = 1000
MAX_CROPS = 200


class InputError(ValueError):
    """A visitor's mistake, shown on the page as one line."""


def check_image_file(path: str | Path, name: str | None = None) -> None:
    """Refuse a file that is too large, not an image, or claims more than ``MAX_PIXELS``
    (checked from the header, before any pixel is decoded)."""
    name = name or Path(path).name
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        raise InputError(f"{name}: {size / 2**20:.1f} MB; the largest image accepted is 20 MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{name}: refused as a decompression bomb (too many pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputError(f"{name}: not an image (PNG, JPEG, WebP, ... expected)") from None
    if width * height > MAX_PIXELS:
        raise InputError(
            f"{name}: {width} x {height} pixels; refused as a decompression bomb "
            f"(at most {MAX_PIXELS // 1_000_000} megapixels)"
        )


def parse_classnames(text: str | None) -> list[str]:
    """Class names, one per line (blank lines ignored); at least two, each once."""
    names = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not names:
        raise InputError("no classes: type the class names, one per line (or upload a file)")
    if len(names) < 2:
        raise InputError(f"only one class ({names[0]!r}): give at least two, one per line")
    if len(names) > MAX_CLASSES:
        raise InputError(f"{len(names)} classes; at most {MAX_CLASSES}")
    seen: dict[str, str] = {}
    duplicates = []
    for name in names:
        if class_key(name) in seen:
            duplicates.append(name)
        seen.setdefault(class_key(name), name)
    if duplicates:
        shown = ", ".join(map(repr, dict.fromkeys(duplicates)))
        raise InputError(f"duplicate classes: {shown} (name each class once)")
    return names


def classnames_text(path: str | Path, name: str | None = None) -> str:
    """A class-names file (JSON list or one name per line) as the text box's text."""
    try:
        return "\n".join(load_classnames(path))
    except (ValueError, OSError) as error:
        raise InputError(_rename(error, path, name)) from None


def crop_settings(n_crops: float, alpha: float) -> CropSpec:
    """The crops of the sliders: a whole count from 1 to :data:`MAX_CROPS`, alpha checked by
    :class:`~wca.crops.CropSpec` (0 < alpha <= beta = 0.9)."""
    if n_crops is None or n_crops != int(n_crops) or not 1 <= n_crops <= MAX_CROPS:
        raise InputError(f"crops: a whole number from 1 to {MAX_CROPS}, got {n_crops}")
    try:
        return CropSpec(n_crops=int(n_crops), alpha=float("nan") if alpha is None else float(alpha))
    except SettingError as error:
        raise InputError(f"alpha: the smallest crop side, {error.reason}") from None


def class_texts(
    classnames: list[str],
    path: str | Path | None,
    defaults: Mapping[str, list[str]],
    what: str = "descriptions",
    name: str | None = None,
) -> tuple[list[list[str]], list[str]]:
    """The texts of every class and the classes that have none.

    With a file (``{class: [text, ...]}``), every class must be in it. Without one, a class
    takes its texts from ``defaults`` (the preloaded set) or none (listed in the second value).
    """
    if path is not None:
        try:
            given = load_descriptions(path)
        except (ValueError, OSError) as error:
            raise InputError(_rename(error, path, name)) from None
        texts = _lookup(classnames, given)
        missing = [c for c, t in zip(classnames, texts, strict=True) if not t]
        if missing:
            shown = ", ".join(map(repr, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise InputError(
                f"{name or Path(path).name}: no {what} for {len(missing)} of your "
                f"{len(classnames)} classes: {shown} (the file's keys must name your classes)"
            )
        return texts, []
    texts = _lookup(classnames, defaults)
    return texts, [c for c, t in zip(classnames, texts, strict=True) if not t]


def with_clip_prompts(classnames: list[str], texts: list[list[str]]) -> dict[str, list[str]]:
    """``{class: texts}``, the plain CLIP prompt standing in for a class without texts."""
    return {c: t or [LABEL_TEMPLATE.format(c)] for c, t in zip(classnames, texts, strict=True)}


def _lookup(classnames: list[str], texts: Mapping[str, list[str]]) -> list[list[str]]:
    loose = {class_key(k): v for k, v in texts.items()}
    found = [texts.get(c, loose.get(class_key(c))) or [] for c in classnames]
    return [[t.strip() for t in group if t.strip()] for group in found]


def _rename(error: Exception, path: str | Path, name: str | None) -> str:
    """The error's message with an upload's temporary path replaced by its file name."""
    message = str(error.args[0] if error.args else error)
    return message.replace(str(path), name or Path(path).name)
