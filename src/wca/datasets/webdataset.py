"""``wds/NAME``: LAION clip_benchmark's test sets as webdataset shards, read where they are.

The layout of clip_benchmark's ``wds/...`` datasets (``clip-benchmark/wds_*`` on the Hugging
Face Hub)::

    ROOT/classnames.txt                         one class name a line, in label order
    ROOT/zeroshot_classification_templates.txt  one prompt a line, {c} for the class name
    ROOT/test/nshards.txt                       (optional) how many shards
    ROOT/test/0.tar, 1.tar, ...                 per sample KEY.webp|png|jpg|jpeg and KEY.cls

``ROOT`` is a local folder, or a Hub dataset repository (``clip-benchmark/wds_cifar10``,
``hf://datasets/ORG/NAME``, ``https://huggingface.co/datasets/ORG/NAME``), fetched into the
Hugging Face cache through ``huggingface_hub`` (offline: from that cache, else one line).

Each tar file is indexed once (the byte range of every member, with Python's ``tarfile``), and
an image is read by its index, as a folder's file is: the loader workers, the feature cache's
shards and torchrun's ranks all work by index. (webdataset's own reader streams samples in
order and cannot give one by its index.) Each image is identified by its shard and key
(``test/0.tar#000017``); a shard's size, modification time and a fingerprint of its two ends
identify its content, so a replaced shard recomputes its images' cached features.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from wca.datasets.base import Dataset, check_split, find_layout, read_lines, register
from wca.files import file_fingerprint
from wca.images import load_image

CLASSNAMES = "classnames.txt"
TEMPLATES = "zeroshot_classification_templates.txt"
IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")  # clip_benchmark's, in its order
HUB_URL = re.compile(r"(?:hf://datasets/|https://huggingface\.co/datasets/)([\w.-]+/[\w.-]+)(.*)")
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class Member:
    """Where one sample's image lies: its shard, key, and the byte range of its data."""

    shard: Path
    key: str
    offset: int
    size: int


def hub_repo(root: str) -> tuple[str, str | None] | None:
    """``(repository id, revision)`` when ``root`` names a Hub dataset repository rather than
    a local folder: ``hf://datasets/ORG/NAME``, the repository's https address (``/tree/REV``
    names a revision), or ``ORG/NAME`` where no such folder exists; else None."""
    found = HUB_URL.fullmatch(root)
    if found:
        revision = re.fullmatch(r"/(?:tree|resolve)/([^/]+)/?", found[2] or "")
        return found[1], revision[1] if revision else None
    if REPO_ID.fullmatch(root) and not Path(root).expanduser().exists():
        return root, None
    return None


def _download(repo: str, revision: str | None, split: str, root: str) -> Path:
    """The local snapshot of the repository's texts and ``split`` shards (the Hub, or offline
    the Hugging Face cache)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    patterns = [CLASSNAMES, TEMPLATES, f"{split}/*"]
    try:
        folder = snapshot_download(
            repo, repo_type="dataset", revision=revision, allow_patterns=patterns
        )
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"{root}: no such folder, nor a dataset repository in the Hugging Face cache, and "
            "the Hub cannot be reached (offline?): run once online, or give the shards' folder"
        ) from None
    except (HfHubHTTPError, HFValidationError) as error:
        gist = " ".join(str(error).split())[:200]
        raise FileNotFoundError(
            f"{root}: no such folder, nor a dataset repository on the Hub ({gist})"
        ) from None
    return Path(folder)


def index_shard(path: Path) -> tuple[list[Member], list[int]]:
    """The samples of one tar file in their order: where each image is, and its label (the
    ``.cls`` member, an integer). A sample without an image or a label is an error naming it."""
    images: dict[str, Member] = {}
    labels: dict[str, int] = {}
    try:
        with tarfile.open(path) as archive:
            for info in archive:
                if not info.isfile():
                    continue
                folder, _, base = info.name.rpartition("/")
                stem, _, extension = base.partition(".")
                key = f"{folder}/{stem}" if folder else stem
                if extension.lower() in IMAGE_EXTENSIONS and key not in images:
                    images[key] = Member(path, key, info.offset_data, info.size)
                elif extension == "cls":
                    text = archive.extractfile(info).read().decode().strip()
                    labels[key] = _label(path, key, text)
    except (tarfile.TarError, OSError) as error:
        raise ValueError(f"{path}: not a readable tar file ({error})") from None
    unlabelled = [key for key in images if key not in labels]
    if unlabelled:
        raise ValueError(f"{path}: sample {unlabelled[0]!r} has an image but no .cls label")
    return list(images.values()), [labels[key] for key in images]


def _label(path: Path, key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}: {key}.cls is {text!r}, not an integer label") from None


def shard_files(folder: Path) -> list[Path]:
    """The split's tar files in clip_benchmark's order (``0.tar``, ``1.tar``, ...; the count
    of ``nshards.txt`` when there is one), else every ``*.tar`` sorted."""
    count = folder / "nshards.txt"
    if count.is_file():
        text = count.read_text(encoding="utf-8").strip()
        if not text.isdigit():
            raise ValueError(f"{count}: {text!r} is not a number of shards")
        files = [folder / f"{index}.tar" for index in range(int(text))]
        missing = [file.name for file in files if not file.is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: nshards.txt says {text}, missing {missing[0]}")
        return files
    order = lambda path: (not path.stem.isdigit(), len(path.stem), path.stem)  # noqa: E731
    numbered = sorted(folder.glob("*.tar"), key=order)
    if not numbered:
        raise FileNotFoundError(f"{folder}: no .tar shards")
    return numbered


class ShardDataset(Dataset):
    """Images inside tar shards: ``paths`` are ``SHARD#KEY`` names, read by byte range."""

    def __init__(self, *, members: list[Member], **fields) -> None:
        paths = [Path(f"{member.shard}#{member.key}") for member in members]
        super().__init__(paths=paths, **fields)
        self.members = members

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        member = self.members[index]
        with open(member.shard, "rb") as handle:
            handle.seek(member.offset)
            data = handle.read(member.size)
        image = load_image(io.BytesIO(data), self.max_image_pixels, name=str(self.paths[index]))
        return image, self.labels[index]

    def image_identities(self) -> list[str]:
        """One line per image: shard and key, label, and its shard's size, mtime and the
        fingerprint of its two ends (one stat and two reads per shard)."""
        stamps = {}
        for shard in dict.fromkeys(member.shard for member in self.members):
            info = os.stat(shard)
            fingerprint = file_fingerprint(shard, info.st_size)
            stamps[shard] = f"{info.st_size}\t{info.st_mtime_ns}\t{fingerprint}"
        return [
            f"{path}\t{label}\t{member.offset}\t{member.size}\t{stamps[member.shard]}"
            for path, label, member in zip(self.paths, self.labels, self.members, strict=True)
        ]


@register("wds")
def webdataset(
    root: str | Path,
    split: str | None = None,
    *,
    name: str = "",
    descriptions_dir: str | Path | None = None,
) -> ShardDataset:
    """clip_benchmark's webdataset shards, a local folder or a Hub dataset repository: class
    names and templates beside the shards of the split's folder (``test`` by default; ``name``
    is NAME of ``wds/NAME``; see the module doc)."""
    split = "test" if split is None else split
    remote = hub_repo(str(root))
    folder = _download(*remote, split, str(root)) if remote else Path(root)
    layout = f"<root>/{CLASSNAMES} and <root>/{split}/*.tar"
    folder = find_layout(folder, layout, lambda path: (path / CLASSNAMES).is_file())
    splits = sorted(path.name for path in folder.iterdir() if any(path.glob("*.tar")))
    check_split(f"wds/{name}", split, splits or [split])
    members, labels = [], []
    for shard in shard_files(folder / split):
        found, found_labels = index_shard(shard)
        members += found
        labels += found_labels
    classnames = [line for _, line in read_lines(folder / CLASSNAMES)]
    templates = None
    if (folder / TEMPLATES).is_file():
        templates = [line.replace("{c}", "{}") for _, line in read_lines(folder / TEMPLATES)]
    return ShardDataset(
        name=f"wds/{name}" if name else "wds",
        split=split,
        root=folder,
        members=members,
        labels=labels,
        classnames=classnames,
        descriptions_name=None,
        templates=templates,
    )
