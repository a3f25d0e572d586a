"""``oxford_pets``: the Oxford-IIIT Pet dataset as extracted from ``images.tar.gz`` and
``annotations.tar.gz`` (side by side, as torchvision lays them out under ``oxford-iiit-pet``).

``annotations/{trainval,test}.txt`` lines are ``<image id> <class 1..37> <species> <breed>``;
the image is ``images/<image id>.jpg`` and the class name is the image id without its number
(``american_bulldog_100``). The test split has 3669 images. Read by hand so that the folder
itself or its parent can be given (torchvision's OxfordIIITPet wants the parent).
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

LAYOUT = "<root>[/oxford-iiit-pet]/annotations/{trainval,test}.txt and <root>/images/<id>.jpg"
LINE = "<image id> <class id> <species> <breed id>"


def _read_split(path: Path) -> list[tuple[str, int]]:
    """``(image id, label 0..36)`` for each line of an annotation list."""
    entries = []
    for number, line in read_lines(path):
        image_id, label = parse_fields(path, number, line, 2, LINE)[:2]
        entries.append((image_id, parse_int(path, number, label, "class id") - 1))
    return entries


@register("oxford_pets", splits=("test", "trainval"))
def oxford_pets(
    root: str | Path, split: str | None = None, *, descriptions_dir: str | Path | None = None
) -> Dataset:
    """The ``test`` (default) or ``trainval`` images, labels 0..36 (the class id minus 1)."""
    split = check_split("oxford_pets", split)
    folder = find_layout(
        root,
        LAYOUT,
        lambda path: (path / "annotations").is_dir() and (path / "images").is_dir(),
        ("oxford-iiit-pet",),
    )
    entries = _read_split(folder / "annotations" / f"{split}.txt")
    names: dict[int, str] = {}
    for listing in ("list.txt", "trainval.txt", "test.txt"):  # all that name classes
        path = folder / "annotations" / listing
        for image_id, label in _read_split(path) if path.is_file() else []:
            names.setdefault(label, image_id.rsplit("_", 1)[0])
    return Dataset(
        name="oxford_pets",
        split=split,
        root=folder,
        paths=[folder / "images" / f"{image_id}.jpg" for image_id, _ in entries],
        labels=[label for _, label in entries],
        classnames=checked_classnames(
            names, "oxford_pet", descriptions_dir, folder / "annotations"
        ),
        descriptions_name="oxford_pet",
    )
