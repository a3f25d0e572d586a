"""What a cell reads before any model is loaded: its dataset, its texts, and the digests that
identify them (the texts' and the image list's sha256, the weights file's)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from wca.config import EvalConfig
from wca.defaults import IMAGENET_FAMILY
from wca.errors import SettingError
from wca.options import RunOptions


def dataset_name(config: EvalConfig) -> str:
    """The name results carry: ``config.dataset_name``, else an image folder's own folder name
    (two custom folders stay apart), else the dataset's registered name."""
    if config.dataset_name:
        return config.dataset_name
    if config.dataset == "imagefolder" and config.data_root:
        return Path(config.data_root).expanduser().resolve().name or "imagefolder"
    return str(config.dataset)


def is_remote(root: str, dataset: str | None) -> bool:
    """Whether ``root`` names a Hub repository of shards rather than a folder (``wds/NAME``
    datasets: :func:`wca.datasets.webdataset.hub_repo`)."""
    if not str(dataset or "").lower().startswith("wds/"):
        return False
    from wca.datasets.webdataset import hub_repo

    return hub_repo(root) is not None


def data_root(root: str, dataset: str | None) -> str:
    """A data root as results record it: absolute, or a Hub repository as given."""
    return root if is_remote(root, dataset) else str(Path(root).expanduser().resolve())


def load_cell_dataset(config: EvalConfig, options: RunOptions):
    """The dataset of ``config``, read from its data path."""
    from wca.datasets import load_dataset

    if not config.dataset:
        raise SettingError("dataset", "not set (a dataset name, or dataset: in a config file)")
    if not config.data_root:
        raise SettingError("data_root", "not set (where the dataset is)")
    extra = {"download": True} if options.download else {}
    dataset = load_dataset(
        config.dataset,
        config.data_root,
        config.split,
        descriptions_dir=options.descriptions_dir,
        **extra,
    )
    dataset.max_image_pixels = options.max_image_pixels
    return dataset


def text_sources(dataset, options: RunOptions):
    """The texts of every method and where they came from.

    ``options.descriptions`` as a folder replaces the dataset's folder of the descriptions
    directory; as a file it replaces only the sentences (cupl, wca). Class names come from the
    folder when it has its own lists, else from the dataset; ImageNet and its variants use
    ImageNet's lists (CuPL names; OpenAI names for clip-d and waffle), as the authors do.
    Without any descriptions (a dataset with no folder of its own, none given), the class
    names alone: the methods that need no more run (clip; clip-e on templates the dataset
    brings, e.g. clip_benchmark's shards). A dataset's templates serve clip-e wherever the
    descriptions have none.
    """
    from wca.datasets import resolve_descriptions_dir
    from wca.descriptions import load_descriptions
    from wca.methods import TextSources, load_text_sources

    given = None if options.descriptions is None else Path(options.descriptions).expanduser()
    folder = None
    if given is not None and given.is_dir():
        folder = given
    elif dataset.descriptions_name:
        directory, _ = resolve_descriptions_dir(options.descriptions_dir)
        folder = directory / dataset.descriptions_name
    if folder is None or (given is not None and not folder.is_dir()):
        sources = TextSources(list(dataset.classnames))
    else:
        own_names = any((folder / n).is_file() for n in ("classnames.json", "classnames-cupl.json"))
        sources = load_text_sources(folder, None if own_names else list(dataset.classnames))
        names = folder.parent / "imagenet"
        if dataset.name in IMAGENET_FAMILY and (names / "classnames-openai.json").is_file():
            # the authors score every ImageNet variant with ImageNet's name lists
            imagenet = load_text_sources(names)
            sources.classnames, sources.classnames_for = (
                imagenet.classnames,
                imagenet.classnames_for,
            )
    sources.dataset = dataset.name
    if sources.templates is None and dataset.templates:
        sources.templates = list(dataset.templates)
    if len(sources.classnames) != len(dataset.classnames):
        raise ValueError(
            f"{folder}: {len(sources.classnames)} class names, the dataset has "
            f"{len(dataset.classnames)}"
        )
    if given is not None and not given.is_dir():
        sources.sentences = load_descriptions(given)
        sources.origins["sentences"] = str(given)
        return sources, str(given.resolve()) if folder is None else f"{folder} + {given.resolve()}"
    if folder is None:
        brought = " and the dataset's templates" if sources.templates else ""
        return sources, f"the class names{brought} (no descriptions)"
    return sources, str(folder.resolve())


def sources_sha256(sources) -> str:
    """The first 16 hex digits of the sha256 of every text the methods read (names, sentences,
    descriptors, templates, words): equal digests, equal text sides."""
    texts = {
        key: value
        for key, value in vars(sources).items()
        if value is not None and key != "origins"  # where the texts are, not what they say
    }
    text = json.dumps(texts, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def images_sha256(dataset) -> str | None:
    """The first 16 hex digits of the sha256 of a dataset's image list: each file's path
    (relative to the dataset's folder) and label, in order; None for a dataset that lists no
    files. Results of other images (files added, removed or relabelled) never pool."""
    paths, labels = getattr(dataset, "paths", None), getattr(dataset, "labels", None)
    if paths is None or labels is None:
        return None
    root = getattr(dataset, "root", None) or "."
    pairs = zip(paths, labels, strict=True)
    lines = (f"{os.path.relpath(path, root)}\t{int(label)}" for path, label in pairs)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def cell_digests(dataset, sources) -> dict[str, str | None]:
    """What a result records of its inputs beyond the config: the texts' and the image list's
    digests (compared before a result file is reused or replaced, and by ``wca report``)."""
    return {"descriptions_sha256": sources_sha256(sources), "images_sha256": images_sha256(dataset)}


def file_sha256(path: str | None) -> str | None:
    """The first 16 hex digits of a weights file's sha256 (of the weights file in a folder);
    None without one."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        found = [
            path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()
        ]
        if not found:
            return None
        path = found[0]
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:16]
