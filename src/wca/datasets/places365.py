"""``places365``: the Places365-Standard validation set (36500 images, 365 classes).

Layout: the devkit's ``categories_places365.txt`` (lines ``/a/airfield 0``) and
``places365_val.txt`` (lines ``Places365_val_00000001.jpg 165``) next to the extracted
``val_large/`` (or ``val_256/`` with ``small=True``). Read by hand because torchvision's
Places365 refuses devkit files whose MD5 differs from the release (re-packaged copies).
Class names drop the letter folder and any sub-category (``/a/apartment_building/outdoor`` is
``apartment building``), as the authors' class names do, so some names repeat.
"""

from __future__ import annotations

from pathlib import Path

from wca.datasets.base import (
    Dataset,
    check_split,
    find_layout,
    parse_fields,
    parse_int,
    read_lines,
    register,
)
from wca.datasets.names import checked_classnames

CATEGORIES = "categories_places365.txt"
VAL_LIST = "places365_val.txt"


@register("places365", splits=("val",))
def places365(
    root: str | Path,
    split: str | None = None,
    *,
    small: bool = False,
    descriptions_dir: str | Path | None = None,
) -> Dataset:
    """The ``val`` images (the only split), from ``val_large`` or, if ``small``, ``val_256``."""
    split = check_split("places365", split)
    images = "val_256" if small else "val_large"
    layout = f"<root>/{{{CATEGORIES},{VAL_LIST}}} and <root>/{images}/<image>"
    folder = find_layout(
        root,
        layout,
        lambda path: (
            all((path / f).is_file() for f in (CATEGORIES, VAL_LIST)) and (path / images).is_dir()
        ),
        ("places365",),
    )
    categories = folder / CATEGORIES
    own: dict[int, str] = {}
    for number, line in read_lines(categories):
        category, label = parse_fields(categories, number, line, 2, "/<letter>/<name> <index>")[:2]
        parts = category.strip("/").split("/")
        if len(parts) < 2:
            raise ValueError(
                f"{categories}: line {number} {line!r} is not /<letter>/<name> <index>"
            )
        own[parse_int(categories, number, label, "index")] = parts[1]
    if sorted(own) != list(range(len(own))):
        raise ValueError(f"{categories}: the class indices are not 0..{len(own) - 1}")
    listing = folder / VAL_LIST
    paths, labels = [], []
    for number, line in read_lines(listing):
        image, label = parse_fields(listing, number, line, 2, "<image> <label>")[:2]
        paths.append(folder / images / image.lstrip("/"))
        labels.append(parse_int(listing, number, label, "label"))
    return Dataset(
        name="places365",
        split=split,
        root=folder,
        paths=paths,
        labels=labels,
        classnames=checked_classnames(
            [own[label] for label in range(len(own))], "place365", descriptions_dir, categories
        ),
        descriptions_name="place365",
    )
