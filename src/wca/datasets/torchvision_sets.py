"""The torchvision datasets LAION clip_benchmark evaluates on, under its names, read by torchvision
from torchvision's own layout under the data root (``ROOT/cifar-10-batches-py``,
``ROOT/MNIST/raw``, ``ROOT/stl10_binary``, ``ROOT/fgvc-aircraft-2013b``...) and downloaded
into it only with ``download=True`` (the run option ``download``).

- ``cifar10``, ``cifar100``, ``stl10``, ``mnist``: the test split, images held in arrays. An
  image is identified by its index and the stamp (size, mtime, fingerprint of both ends) of the
  set's data files, so features are cached and resumed as a folder's are.
- ``fgvc_aircraft`` (variants), ``cars``, ``flowers``, ``renderedsst2``: the test split of
  image files, read (and identified) as a folder's files.

Class names are torchvision's, ``_`` read as a space (MNIST's digits as clip_benchmark names
them); no set brings prompt templates, so CLIP-E needs a descriptions folder with its own
(``clip-e.json``). The paper's datasets with an official layout of their own (``dtd``,
``eurosat``, ``food101``, ``oxford_pets``) keep their loaders (:mod:`wca.datasets`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from wca.datasets.base import Dataset, check_split, register
from wca.files import file_fingerprint
from wca.images import load_image


class NotDownloaded(FileNotFoundError):
    """A torchvision dataset not (or not wholly) under its root; ``setting`` fetches it."""

    setting = "download"


@dataclass(frozen=True)
class Spec:
    """How torchvision builds one set's test split, and its name for the layout it reads."""

    build: Callable[..., Any]  # (root, download, loader or None) -> the torchvision dataset
    layout: str
    files: bool = False  # the set lists image files (read through a loader)


def _torchvision(name: str, **arguments: Any) -> Callable[..., Any]:
    def build(root: Path, download: bool, loader: Callable | None = None) -> Any:
        import torchvision.datasets as sets

        extra = {} if loader is None else {"loader": loader}
        return getattr(sets, name)(str(root), download=download, **arguments, **extra)

    return build


SETS = {
    "cifar10": Spec(_torchvision("CIFAR10", train=False), "cifar-10-batches-py/test_batch"),
    "cifar100": Spec(_torchvision("CIFAR100", train=False), "cifar-100-python/test"),
    "stl10": Spec(_torchvision("STL10", split="test"), "stl10_binary/test_X.bin"),
    "mnist": Spec(_torchvision("MNIST", train=False), "MNIST/raw/t10k-images-idx3-ubyte"),
    "fgvc_aircraft": Spec(
        _torchvision("FGVCAircraft", split="test", annotation_level="variant"),
        "fgvc-aircraft-2013b/data/images_variant_test.txt",
        files=True,
    ),
    "cars": Spec(_torchvision("StanfordCars", split="test"), "stanford_cars/cars_test", True),
    "flowers": Spec(_torchvision("Flowers102", split="test"), "flowers-102/jpg", True),
    "renderedsst2": Spec(_torchvision("RenderedSST2", split="test"), "rendered-sst2/test", True),
}


def _classnames(name: str, source: Any) -> list[str]:
    classes = list(source.classes)
    if name == "mnist":  # "0 - zero": clip_benchmark names the digits
        return [text.split(" - ")[0] for text in classes]
    return [" ".join(text.replace("_", " ").split()) for text in classes]


class ArraySet(Dataset):
    """A torchvision set whose images are arrays: ``paths`` are ``ROOT/NAME#INDEX`` names."""

    def __init__(self, *, source: Any, data_files: list[Path], **fields) -> None:
        super().__init__(**fields)
        self.source = source
        self.data_files = data_files

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        image, _ = self.source[index]
        return load_image(image, self.max_image_pixels), self.labels[index]

    def image_identities(self) -> list[str]:
        """One line per image: its index and label, and the stamp of the set's data files."""
        stamp = []
        for path in self.data_files:
            info = os.stat(path)
            size = info.st_size
            stamp.append(f"{path.name}:{size}:{info.st_mtime_ns}:{file_fingerprint(path, size)}")
        files = ",".join(stamp)
        pairs = zip(self.paths, self.labels, strict=True)
        return [f"{path}\t{label}\t{files}" for path, label in pairs]


def _data_files(source: Any, root: Path) -> list[Path]:
    """The files a set's arrays are read from: its folder under the root."""
    folder = Path(getattr(source, "raw_folder", None) or root / source.base_folder)
    return sorted(path for path in folder.rglob("*") if path.is_file())


def load_torchvision_set(
    name: str, root: str | Path, split: str | None, download: bool
) -> Dataset:
    """The test split of torchvision's ``name`` (:data:`SETS`) under ``root``."""
    spec = SETS[name]
    split = check_split(name, split)
    root = Path(root).expanduser()
    if not root.is_dir() and not download:
        raise NotDownloaded(f"{root}: data root does not exist or is not a folder")
    try:
        source = spec.build(root, download, str if spec.files else None)
    except OSError as error:  # the download failed (no network, a server's error)
        if not download:
            raise
        raise FileNotFoundError(
            f"{root}: downloading torchvision's {name} failed ({error}); offline, put "
            f"torchvision's layout there (<root>/{spec.layout})"
        ) from None
    except RuntimeError as error:
        if not re.search("not found|download", str(error), re.IGNORECASE):
            raise
        raise NotDownloaded(
            f"{root}: not the expected layout: <root>/{spec.layout} (torchvision's {name} "
            "test set, checked as torchvision checks it); set download to fetch it"
        ) from None
    classnames = _classnames(name, source)
    fields = {"name": name, "split": split, "root": root, "classnames": classnames,
              "descriptions_name": None}  # fmt: skip
    if spec.files:  # the loader gave each image's file: a folder's dataset
        pairs = [source[index] for index in range(len(source))]
        paths, labels = [Path(path) for path, _ in pairs], [int(label) for _, label in pairs]
        return Dataset(paths=paths, labels=labels, **fields)
    labels = [int(label) for label in (source.labels if name == "stl10" else source.targets)]
    paths = [root / f"{name}#{index}" for index in range(len(labels))]
    return ArraySet(source=source, data_files=_data_files(source, root), paths=paths,
                    labels=labels, **fields)  # fmt: skip


def _register(name: str) -> None:
    def loader(
        root: str | Path,
        split: str | None = None,
        *,
        download: bool = False,
        descriptions_dir: str | Path | None = None,
    ) -> Dataset:
        return load_torchvision_set(name, root, split, download)

    loader.__doc__ = (
        f"torchvision's {name} test set, as torchvision lays it out: <root>/{SETS[name].layout}."
    )
    register(name, splits=("test",))(loader)


for _name in SETS:
    _register(_name)
