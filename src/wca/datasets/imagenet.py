"""ImageNet and its test sets: class folders named by WordNet id (wnid) or by ImageNet index.

Every dataset here is labelled with ImageNet indices 0..999 (the rank of the wnid in the sorted
list of the 1000 ImageNet-1k wnids, as every ImageNet classifier numbers them) and carries the
1000 class names of ``<descriptions dir>/<descriptions_name>/classnames.json``.
ImageNet-A and ImageNet-R hold 200 of those classes: their ``class_subset`` lists the 200
indices a prediction is chosen from, read from ``<descriptions_name>/imagenet-indices.json``
when the descriptions directory has it, otherwise from the published wnid lists that timm
ships (the same 200 classes; checked equal for both datasets).
"""

from __future__ import annotations

import pkgutil
import re
from functools import cache
from pathlib import Path

from wca.datasets.base import (
    Dataset,
    check_split,
    class_folders,
    find_layout,
    register,
    scan_class_folders,
)
from wca.datasets.names import reference_classnames, resolve_descriptions_dir
from wca.descriptions.io import read_json

NUM_CLASSES = 1000
WNID = re.compile(r"n\d{8}")
WNID_LAYOUT = "{where}/<wnid>/<image> with WordNet-id class folders such as n01440764"


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in label order (sorted), from timm's packaged list."""
    from timm.data import ImageNetInfo  # only the ImageNet loaders need timm (0.5 s to import)

    wnids = tuple(ImageNetInfo("imagenet-1k").label_names())
    if len(wnids) != NUM_CLASSES or list(wnids) != sorted(wnids):
        raise RuntimeError("timm's ImageNet-1k wnid list is not 1000 sorted wnids")
    return wnids


def _has_wnid_folders(path: Path) -> bool:
    return path.is_dir() and any(WNID.fullmatch(name) for name in class_folders(path))


def _imagenet_classnames(descriptions_name: str, descriptions_dir: str | Path | None) -> list[str]:
    names = reference_classnames(descriptions_name, descriptions_dir, required=True)
    if len(names) != NUM_CLASSES:
        raise ValueError(
            f"{descriptions_name}/classnames.json of the descriptions directory has {len(names)} "
            f"names; ImageNet has {NUM_CLASSES}"
        )
    return names


def _wnid_dataset(
    name: str,
    root: str | Path,
    split: str,
    subfolders: tuple[str, ...],
    descriptions_name: str,
    descriptions_dir: str | Path | None,
    class_subset: list[int] | None = None,
) -> Dataset:
    """A dataset of wnid class folders, labelled by ImageNet index."""
    layout = WNID_LAYOUT.format(where="/".join(("<root>", *subfolders[:1])))
    folder = find_layout(root, layout, _has_wnid_folders, subfolders)
    index = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    folders = class_folders(folder)
    unknown = [wnid for wnid in folders if wnid not in index]
    if unknown:
        raise ValueError(f"{folder}: folders {unknown[:10]} are not ImageNet-1k wnids")
    paths, labels = scan_class_folders(folder, {wnid: index[wnid] for wnid in folders})
    return Dataset(
        name=name,
        split=split,
        root=folder,
        paths=paths,
        labels=labels,
        classnames=_imagenet_classnames(descriptions_name, descriptions_dir),
        descriptions_name=descriptions_name,
        class_subset=class_subset,
    )


@register("imagenet", splits=("val",))
def imagenet(
    root: str | Path, split: str | None = None, *, descriptions_dir: str | Path | None = None
) -> Dataset:
    """ImageNet-1k validation images sorted into wnid folders (``<root>[/val]/<wnid>/``).

    The official validation archive is flat; sort it into class folders first (for example
    with the ``valprep.sh`` script of the ImageNet tools, or torchvision's ImageNet loader).
    """
    split = check_split("imagenet", split)
    return _wnid_dataset("imagenet", root, split, ("val",), "imagenet", descriptions_dir)


@register("imagenet-sketch", splits=("test",))
def imagenet_sketch(
    root: str | Path, split: str | None = None, *, descriptions_dir: str | Path | None = None
) -> Dataset:
    """ImageNet-Sketch as downloaded: ``<root>[/sketch]/<wnid>/<image>`` (1000 folders)."""
    split = check_split("imagenet-sketch", split)
    return _wnid_dataset(
        "imagenet-sketch", root, split, ("sketch",), "imagenet-s", descriptions_dir
    )


def _subset_indices(descriptions_name: str, descriptions_dir: str | Path | None) -> list[int]:
    """The 200 ImageNet indices of ImageNet-A or -R (see the module docstring for the source)."""
    directory, _ = resolve_descriptions_dir(descriptions_dir)
    path = directory / descriptions_name / "imagenet-indices.json"
    if path.is_file():
        indices = read_json(path)
        valid = isinstance(indices, list) and all(isinstance(i, int) for i in indices)
        if not valid or not indices or any(not 0 <= i < NUM_CLASSES for i in indices):
            raise ValueError(f"{path}: expected a list of ImageNet indices 0..{NUM_CLASSES - 1}")
        if len(set(indices)) != len(indices):
            raise ValueError(f"{path}: the index list repeats classes")
        return indices
    listing = f"_info/{descriptions_name.replace('-', '_')}_synsets.txt"
    data = pkgutil.get_data("timm.data", listing)
    if data is None:
        raise FileNotFoundError(f"{path}: no such file, and timm has no {listing} to fall back on")
    index = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    return sorted(index[wnid] for wnid in data.decode("utf-8").split())


def _subset_dataset(
    name: str, root: str | Path, split: str | None, descriptions_dir: str | Path | None
) -> Dataset:
    split = check_split(name, split)
    subset = _subset_indices(name, descriptions_dir)
    return _wnid_dataset(name, root, split, (name,), name, descriptions_dir, class_subset=subset)


@register("imagenet-r", splits=("test",))
def imagenet_r(
    root: str | Path, split: str | None = None, *, descriptions_dir: str | Path | None = None
) -> Dataset:
    """ImageNet-R as extracted: ``<root>[/imagenet-r]/<wnid>/<image>`` (200 folders)."""
    return _subset_dataset("imagenet-r", root, split, descriptions_dir)


@register("imagenet-a", splits=("test",))
def imagenet_a(
    root: str | Path, split: str | None = None, *, descriptions_dir: str | Path | None = None
) -> Dataset:
    """ImageNet-A as extracted: ``<root>[/imagenet-a]/<wnid>/<image>`` (200 folders)."""
    return _subset_dataset("imagenet-a", root, split, descriptions_dir)


IMAGENETV2_VARIANTS = ("matched-frequency", "threshold0.7", "top-images")


@register("imagenetv2", splits=IMAGENETV2_VARIANTS)
def imagenetv2(
    root: str | Path, split: str | None = None, *, descriptions_dir: str | Path | None = None
) -> Dataset:
    """ImageNetV2 as extracted: ``<root>[/imagenetv2-<split>-format-val]/<0..999>/<image>``.

    ``split`` picks the variant (default ``matched-frequency``); folder ``k`` holds ImageNet
    class ``k`` (folders sort as numbers, not as strings).
    """
    split = check_split("imagenetv2", split)
    subfolder = f"imagenetv2-{split}-format-val"

    def has_index_folders(path: Path) -> bool:
        return path.is_dir() and any(name.isdigit() for name in class_folders(path))

    folder = find_layout(
        root, f"<root>[/{subfolder}]/<0..999>/<image>", has_index_folders, (subfolder,)
    )
    folders = class_folders(folder)
    bad = [name for name in folders if not name.isdigit() or int(name) >= NUM_CLASSES]
    if bad:
        raise ValueError(f"{folder}: folders {bad[:10]} are not ImageNet indices 0..999")
    paths, labels = scan_class_folders(folder, {name: int(name) for name in folders})
    return Dataset(
        name="imagenetv2",
        split=split,
        root=folder,
        paths=paths,
        labels=labels,
        classnames=_imagenet_classnames("imagenetv2", descriptions_dir),
        descriptions_name="imagenetv2",
    )
