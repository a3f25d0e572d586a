"""``dtd``: the Describable Textures Dataset as extracted from ``dtd-r1.0.1.tar.gz``.

Layout ``dtd/images/<class>/<image>`` with the ten official partitions in
``dtd/labels/{train,val,test}{1..10}.txt`` (lines ``<class>/<image>``). Read by hand because
torchvision's DTD only finds the folder under ``<root>/dtd/dtd`` (its own download location),
not where the archive extracts. Labels are the sorted class folders, as in torchvision.
"""

from __future__ import annotations

from pathlib import Path

from wca.datasets.base import (
    Dataset,
    check_split,
    class_folders,
    find_layout,
    read_class_listing,
    register,
)
from wca.datasets.names import checked_classnames

LAYOUT = "<root>[/dtd]/images/<class>/<image> and <root>[/dtd]/labels/<split><partition>.txt"


@register("dtd", splits=("test", "train", "val"))
def dtd(
    root: str | Path,
    split: str | None = None,
    *,
    partition: int = 1,
    descriptions_dir: str | Path | None = None,
) -> Dataset:
    """The ``test`` (default), ``train`` or ``val`` images of one partition (1..10, default 1)."""
    split = check_split("dtd", split)
    if isinstance(partition, bool) or not isinstance(partition, int) or not 1 <= partition <= 10:
        raise ValueError(f"dtd: partition must be an integer 1..10, got {partition!r}")
    folder = find_layout(
        root,
        LAYOUT,
        lambda path: (path / "images").is_dir() and (path / "labels").is_dir(),
        ("dtd", "dtd/dtd"),
    )
    classes = class_folders(folder / "images")
    listing = folder / "labels" / f"{split}{partition}.txt"
    paths, labels = read_class_listing(listing, classes, lambda line: folder / "images" / line)
    return Dataset(
        name="dtd",
        split=f"{split}{partition}",
        root=folder,
        paths=paths,
        labels=labels,
        classnames=checked_classnames(classes, "dtd", descriptions_dir, folder / "images"),
        descriptions_name="dtd",
    )
