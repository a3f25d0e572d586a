"""Miniature copies of the datasets' official on-disk layouts, with tiny generated JPEGs.

Each builder writes the files a user gets from the official archive (metadata files named and
formatted as in the release) under a folder of ``root`` and returns that folder; only a few
classes get images. Class-name files are written in the dataset's own style from the names in
the descriptions directory, so the loaders' name checks see realistic input.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from PIL import Image

from wca.datasets.eurosat import CLASSNAMES as EUROSAT_FOLDERS
from wca.datasets.imagenet import imagenet_wnids
from wca.descriptions import load_classnames


def write_image(path: Path, size: tuple[int, int] = (6, 5), mode: str = "RGB") -> Path:
    """A tiny image whose colour depends on its path (so images differ); format by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shade = zlib.crc32(str(path).encode()) % 256
    colour = shade if mode == "L" else (shade, 255 - shade, shade // 2)
    Image.new(mode, size, colour).save(path)
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def names(descriptors_dir: Path, folder: str) -> list[str]:
    return load_classnames(descriptors_dir / folder / "classnames.json")


def make_imagefolder(root: Path, counts: dict[str, int]) -> Path:
    """``root/<class>/<k>.jpg`` with ``counts[class]`` images per class."""
    for name, count in counts.items():
        for k in range(count):
            write_image(root / name / f"{k}.jpg")
    return root


def make_imagenet(root: Path, labels: dict[int, int], folder: str = "val") -> Path:
    """``root/<folder>/<wnid>/ILSVRC2012_val_<n>.JPEG`` for ImageNet labels -> image counts."""
    wnids = imagenet_wnids()
    for label, count in labels.items():
        for k in range(count):
            write_image(root / folder / wnids[label] / f"ILSVRC2012_val_{label:05d}{k}.JPEG")
    return root / folder


def make_imagenetv2(root: Path, labels: dict[int, int]) -> Path:
    """``imagenetv2-matched-frequency-format-val/<label>/<hash>.jpeg`` folders."""
    folder = root / "imagenetv2-matched-frequency-format-val"
    for label, count in labels.items():
        for k in range(count):
            write_image(folder / str(label) / f"{label:x}{k}a7.jpeg")
    return folder


def make_cub(
    root: Path,
    descriptors_dir: Path,
    images: list[tuple[int, int]],
    rename: dict[int, str] | None = None,
) -> Path:
    """``CUB_200_2011`` with all 200 classes named as in ``classes.txt`` and one image per
    ``(label, is_training_image)``; ``rename`` overrides a class folder name."""
    folder = root / "CUB_200_2011"
    classes = [name.replace(" ", "_").replace("-", "_") for name in names(descriptors_dir, "cub")]
    rename = rename or {}
    classes = [f"{i + 1:03d}.{rename.get(i, name)}" for i, name in enumerate(classes)]
    write_lines(folder / "classes.txt", [f"{i + 1} {name}" for i, name in enumerate(classes)])
    rows, labels, split = [], [], []
    for image_id, (label, training) in enumerate(images, 1):
        relative = f"{classes[label]}/{classes[label][4:]}_{image_id:04d}_{label}.jpg"
        write_image(folder / "images" / relative)
        rows.append(f"{image_id} {relative}")
        labels.append(f"{image_id} {label + 1}")
        split.append(f"{image_id} {training}")
    write_lines(folder / "images.txt", rows)
    write_lines(folder / "image_class_labels.txt", labels)
    write_lines(folder / "train_test_split.txt", split)
    return folder


def make_dtd(root: Path, descriptors_dir: Path, partitions: dict[str, list[str]]) -> Path:
    """``dtd/images/<class>/`` for all 47 classes and ``dtd/labels/<split><n>.txt`` files
    listing ``<class>/<image>`` (the images they list are written)."""
    folder = root / "dtd"
    for name in names(descriptors_dir, "dtd"):
        (folder / "images" / name).mkdir(parents=True, exist_ok=True)
    for listing, entries in partitions.items():
        for entry in entries:
            write_image(folder / "images" / entry)
        write_lines(folder / "labels" / f"{listing}.txt", entries)
    return folder


def make_food101(root: Path, descriptors_dir: Path, splits: dict[str, list[str]]) -> Path:
    """``food-101/meta/{classes,train,test}.txt`` and ``images/<class>/<id>.jpg``."""
    folder = root / "food-101"
    classes = [name.replace(" ", "_") for name in names(descriptors_dir, "food101")]
    write_lines(folder / "meta" / "classes.txt", classes)
    for split, entries in splits.items():
        for entry in entries:
            write_image(folder / "images" / f"{entry}.jpg")
        write_lines(folder / "meta" / f"{split}.txt", entries)
    return folder


def make_pets(root: Path, descriptors_dir: Path, splits: dict[str, list[int]]) -> Path:
    """``oxford-iiit-pet/annotations/<split>.txt`` and ``images/<Breed_name>_<n>.jpg`` with one
    image per listed label (0-based)."""
    folder = root / "oxford-iiit-pet"
    breeds = [name.replace(" ", "_") for name in names(descriptors_dir, "oxford_pet")]
    for split, labels in splits.items():
        rows = []
        for k, label in enumerate(labels):
            image_id = f"{breeds[label]}_{100 + k}"
            write_image(folder / "images" / f"{image_id}.jpg")
            species = 1 if breeds[label][0].isupper() else 2
            rows.append(f"{image_id} {label + 1} {species} {k + 1}")
        write_lines(folder / "annotations" / f"{split}.txt", rows)
    return folder


def make_places365(
    root: Path, descriptors_dir: Path, labels: list[int], images: str = "val_large"
) -> Path:
    """The devkit files and ``<images>/Places365_val_<n>.jpg`` for the given labels.

    Category paths are rebuilt from the class names: repeated names get a sub-category, as
    ``/a/arena/hockey`` does in the release."""
    classes = names(descriptors_dir, "place365")
    seen: dict[str, int] = {}
    categories = []
    for index, name in enumerate(classes):
        seen[name] = seen.get(name, 0) + 1
        sub = f"/kind{seen[name]}" if classes.count(name) > 1 else ""
        categories.append(f"/{name[0]}/{name.replace(' ', '_')}{sub} {index}")
    write_lines(root / "categories_places365.txt", categories)
    rows = []
    for k, label in enumerate(labels, 1):
        write_image(root / images / f"Places365_val_{k:08d}.jpg")
        rows.append(f"Places365_val_{k:08d}.jpg {label}")
    write_lines(root / "places365_val.txt", rows)
    return root


def make_eurosat(root: Path, per_class: int = 1) -> Path:
    """``2750/<Class>/<Class>_<n>.jpg`` for the ten EuroSAT classes."""
    for name in EUROSAT_FOLDERS:
        for k in range(1, per_class + 1):
            write_image(root / "2750" / name / f"{name}_{k}.jpg")
    return root / "2750"


def write_coop_split(path: Path, splits: dict[str, list[str]]) -> Path:
    """A CoOp-style split file ``{split: [[<class>/<image>, label, name], ...]}``."""
    classes = sorted(EUROSAT_FOLDERS)
    data = {
        split: [[entry, classes.index(entry.split("/")[0]), entry.split("/")[0]] for entry in rows]
        for split, rows in splits.items()
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
