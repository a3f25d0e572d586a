"""``cub``: Caltech-UCSD Birds-200-2011 as extracted from ``CUB_200_2011.tgz``.

torchvision has no CUB loader. The split and labels come from the dataset's own files:
``images.txt`` (id, path), ``image_class_labels.txt`` (id, class id 1..200),
``train_test_split.txt`` (id, is_training_image) and ``classes.txt`` (class id,
``001.Black_footed_Albatross``). The test split (``is_training_image`` 0) has 5794 images.
"""

from __future__ import annotations

import re
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

FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
LAYOUT = "<root>[/CUB_200_2011]/{" + ",".join(FILES) + "} and images/<class>/<image>"


def _id_table(path: Path) -> dict[int, str]:
    """``{id: rest of line}`` from a CUB metadata file of ``<id> <value>`` lines."""
    table = {}
    for number, line in read_lines(path):
        key, value = parse_fields(path, number, line, 2, "<id> <value>")[:2]
        table[parse_int(path, number, key, "id")] = value
    return table


@register("cub", splits=("test", "train", "all"))
def cub(
    root: str | Path, split: str | None = None, *, descriptions_dir: str | Path | None = None
) -> Dataset:
    """The ``test`` (default), ``train`` or ``all`` images of CUB-200-2011, labels 0..199."""
    split = check_split("cub", split)
    folder = find_layout(
        root, LAYOUT, lambda path: all((path / f).is_file() for f in FILES), ("CUB_200_2011",)
    )
    images, labels, training, classes = (_id_table(folder / name) for name in FILES)
    class_ids = sorted(classes)
    if class_ids != list(range(1, len(class_ids) + 1)):
        raise ValueError(f"{folder / 'classes.txt'}: class ids are not 1..{len(class_ids)}")
    own_names = [re.sub(r"^\d+\.", "", classes[i]) for i in class_ids]
    keep = {"test": {"0"}, "train": {"1"}, "all": {"0", "1"}}[split]
    paths, targets = [], []
    for image_id, relative in sorted(images.items()):
        for table, name in ((labels, FILES[1]), (training, FILES[2])):
            if image_id not in table:
                raise ValueError(f"{folder / name}: no entry for image {image_id}")
        if training[image_id] not in ("0", "1"):
            raise ValueError(f"{folder / FILES[2]}: image {image_id} is neither 0 nor 1")
        label = labels[image_id]
        if not label.isdigit() or not 1 <= int(label) <= len(class_ids):
            raise ValueError(
                f"{folder / FILES[1]}: image {image_id} has class {label!r}, "
                f"not 1..{len(class_ids)}"
            )
        if training[image_id] in keep:
            paths.append(folder / "images" / relative)
            targets.append(int(label) - 1)
    return Dataset(
        name="cub",
        split=split,
        root=folder,
        paths=paths,
        labels=targets,
        classnames=checked_classnames(own_names, "cub", descriptions_dir, folder / "classes.txt"),
        descriptions_name="cub",
    )
