"""The dataset type every loader returns, the registry of loaders, and layout helpers."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from wca.dataset_names import dataset_key
from wca.defaults import MAX_IMAGE_PIXELS
from wca.descriptions.io import read_text
from wca.images import load_image
from wca.registry import Registry

# Registry name -> loader ``fn(root: Path, split: str | None, **options) -> Dataset``; names
# match whatever their case, ``-``/``_`` and the WCA authors' spellings (``oxford_pet``).
DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset", normalize=dataset_key)


# Registered name -> the splits its loader reads, its default first (`wca datasets` lists them).
SPLITS: dict[str, tuple[str, ...]] = {}


def register(
    name: str, splits: Sequence[str] = ()
) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Register a loader under ``name`` (a name is registered once) that reads ``splits``
    (the default first; none: any, e.g. an image folder's sub-folders)."""

    def add(loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS.register(name, loader)
        if splits:
            SPLITS[name] = tuple(splits)
        return loader

    return add


class Dataset:
    """Images with integer labels and class names in label order.

    ``dataset[i]`` is ``(RGB PIL image, label)``, decoded with :func:`wca.images.load_image`,
    which refuses images above ``max_image_pixels`` (0: no limit; the run option sets it).
    ``class_subset`` (ImageNet-A/-R) lists the labels a prediction is chosen from; None means
    all of ``classnames``. ``descriptions_name`` is the dataset's folder in a descriptions
    directory. ``paths`` are the image files, in dataset order. ``templates`` are prompt
    templates with ``{}`` for the class name that come with the dataset (clip_benchmark's),
    CLIP-E's when no descriptions bring their own. It is a map-style dataset as torch's
    DataLoader reads them, without importing torch: resolving a dataset's name (every
    setting's check) costs no torch.
    """

    def __init__(
        self,
        *,
        name: str,
        split: str,
        root: Path,
        paths: Sequence[Path],
        labels: Sequence[int],
        classnames: Sequence[str],
        descriptions_name: str | None,
        class_subset: Sequence[int] | None = None,
        templates: Sequence[str] | None = None,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{root}: {len(paths)} images but {len(labels)} labels")
        if not paths:
            raise ValueError(f"{root}: the {split} split of {name} has no images")
        bad = sorted({label for label in labels if not 0 <= label < len(classnames)})
        if bad:
            raise ValueError(f"{root}: labels {bad[:10]} outside 0..{len(classnames) - 1}")
        if class_subset is not None:
            outside = sorted(set(labels) - set(class_subset))
            if outside:
                raise ValueError(f"{root}: labels {outside[:10]} are not in the class subset")
        self.name = name
        self.split = split
        self.root = root
        self.paths = list(paths)
        self.labels = [int(label) for label in labels]
        self.classnames = list(classnames)
        self.descriptions_name = descriptions_name
        self.class_subset = None if class_subset is None else [int(i) for i in class_subset]
        self.templates = None if templates is None else list(templates)
        self.max_image_pixels = MAX_IMAGE_PIXELS

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return load_image(self.paths[index], self.max_image_pixels), self.labels[index]

    def __repr__(self) -> str:
        subset = "" if self.class_subset is None else f", scored over {len(self.class_subset)}"
        return (
            f"Dataset({self.name}, split={self.split}, {len(self)} images, "
            f"{len(self.classnames)} classes{subset}, root={self.root})"
        )


def check_split(name: str, split: str | None, allowed: Sequence[str] | None = None) -> str:
    """``split`` (or the default, the first of ``allowed``: by default the splits ``name`` was
    registered with), with a ValueError if the loader cannot read it."""
    allowed = SPLITS[name] if allowed is None else allowed
    split = allowed[0] if split is None else split
    if split not in allowed:
        raise ValueError(f"{name}: unknown split {split!r} (choose from {', '.join(allowed)})")
    return split


def find_layout(
    root: str | Path, layout: str, check: Callable[[Path], bool], subfolders: Sequence[str] = ()
) -> Path:
    """The first of ``root`` and ``root/<subfolder>`` that ``check`` accepts.

    Lets users point at the folder an archive extracted to or at its parent. Raises
    FileNotFoundError naming ``root`` and the expected ``layout`` otherwise.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root does not exist or is not a folder")
    for candidate in (root, *(root / sub for sub in subfolders)):
        if candidate.is_dir() and check(candidate):
            return candidate
    raise FileNotFoundError(f"{root}: not the expected layout: {layout}")


def read_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, stripped line)`` for the non-blank, non-comment lines of a text file."""
    text = read_text(path)
    lines = ((number, line.strip()) for number, line in enumerate(text.splitlines(), 1))
    return [(number, line) for number, line in lines if line and not line.startswith("#")]


def read_class_listing(
    listing: Path, classes: Sequence[str], image_path: Callable[[str], Path]
) -> tuple[list[Path], list[int]]:
    """An official split file of ``<class>/<image>`` lines -> image paths and labels."""
    index = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for number, line in read_lines(listing):
        name = line.split("/")[0]
        if name not in index or "/" not in line:
            raise ValueError(f"{listing}: line {number} {line!r} is not <class>/<image>")
        paths.append(image_path(line))
        labels.append(index[name])
    return paths, labels


def parse_fields(path: Path, number: int, line: str, count: int, form: str) -> list[str]:
    """Split a line into at least ``count`` whitespace fields, or a ValueError naming it."""
    fields = line.split()
    if len(fields) < count:
        raise ValueError(f"{path}: line {number} {line!r} is not '{form}'")
    return fields


def parse_int(path: Path, number: int, text: str, what: str) -> int:
    """An integer field of a metadata file, or a ValueError naming the file and line."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}: line {number}: {what} {text!r} is not an integer") from None


def class_folders(folder: Path, *, with_images: bool = False) -> list[str]:
    """The names of the class sub-folders of ``folder``, sorted (hidden folders skipped).
    ``with_images``: only those holding an image file somewhere below (as
    :func:`scan_class_folders` finds them), so that a folder of outputs or notes beside the
    classes is not taken for one."""
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.is_dir()
        and not entry.name.startswith(".")
        and (not with_images or holds_images(entry))
    )


def holds_images(folder: Path) -> bool:
    """Whether an image file (torchvision's extensions) lies anywhere under ``folder``; stops
    at the first."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    for _, _, files in os.walk(folder, followlinks=True):
        if any(name.lower().endswith(IMG_EXTENSIONS) for name in files):
            return True
    return False


def scan_class_folders(folder: Path, class_to_idx: dict[str, int]) -> tuple[list[Path], list[int]]:
    """Image files under ``folder/<class>/`` (torchvision's image extensions), sorted, with the
    label ``class_to_idx`` gives their folder. Every listed folder must hold an image."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{folder}: {error}") from None
    return [Path(path) for path, _ in samples], [label for _, label in samples]
