"""``food101``: Food-101 as extracted from ``food-101.tar.gz``.

Layout ``food-101/images/<class>/<id>.jpg`` with ``food-101/meta/classes.txt`` (label order)
and ``meta/{train,test}.txt`` (lines ``<class>/<id>``). The test split has 25250 images.
Read by hand so that the folder itself or its parent can be given (torchvision's Food101 wants
the parent) and so that labels follow the official ``classes.txt``.
"""

from __future__ import annotations

from pathlib import Path

from wca.datasets.base import (
    Dataset,
    check_split,
    find_layout,
    read_class_listing,
    read_lines,
    register,
)
from wca.datasets.names import checked_classnames

LAYOUT = "<root>[/food-101]/meta/{classes,test,train}.txt and <root>[/food-101]/images/<class>/"


@register("food101", splits=("test", "train"))
def food101(
    root: str | Path, split: str | None = None, *, descriptions_dir: str | Path | None = None
) -> Dataset:
    """The ``test`` (default) or ``train`` images of Food-101, labels by ``meta/classes.txt``."""
    split = check_split("food101", split)
    folder = find_layout(
        root,
        LAYOUT,
        lambda path: (path / "meta" / "classes.txt").is_file() and (path / "images").is_dir(),
        ("food-101",),
    )
    classes = [line for _, line in read_lines(folder / "meta" / "classes.txt")]
    listing = folder / "meta" / f"{split}.txt"
    paths, labels = read_class_listing(
        listing, classes, lambda line: folder / "images" / f"{line}.jpg"
    )
    return Dataset(
        name="food101",
        split=split,
        root=folder,
        paths=paths,
        labels=labels,
        classnames=checked_classnames(
            classes, "food101", descriptions_dir, folder / "meta" / "classes.txt"
        ),
        descriptions_name="food101",
    )
