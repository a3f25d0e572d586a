"""Datasets as users download them: images, integer labels and class names in label order.

``load_dataset(name, root, split=None, **options)`` looks ``name`` up in the registry
``DATASETS`` (``-`` and ``_`` alike) and returns a :class:`Dataset`. Registered names:

- ``imagefolder``: any ``<root>/<class>/<image>`` tree (options ``classnames_file``,
  ``descriptions_name``);
- ``imagenet`` (``val``), ``imagenetv2`` (``matched-frequency``), ``imagenet-sketch``,
  ``imagenet-r`` and ``imagenet-a``: labelled by ImageNet index 0..999 with the 1000 ImageNet
  class names; R and A add ``class_subset``, the 200 indices predictions are chosen from;
- ``cub`` (``test``), ``dtd`` (``test`` of ``partition`` 1), ``food101`` (``test``),
  ``oxford_pets`` (``test``), ``places365`` (``val``), ``eurosat`` (``all``); the WCA authors'
  names ``oxford_pet`` and ``place365`` are aliases;
- ``wds/NAME``: LAION clip_benchmark's webdataset shards (a folder or a Hub repository;
  :mod:`wca.datasets.webdataset`), with the class names and templates beside them;
- the torchvision datasets clip_benchmark evaluates on (``cifar10``, ``cifar100``, ``stl10``,
  ``mnist``, ...: :mod:`wca.datasets.torchvision_sets`), read from torchvision's layout,
  downloaded only with ``download=True``.

A name ``FAMILY/SUB`` (``wds/cifar10``) is the loader of ``FAMILY`` with the option
``name=SUB``.

Every loader but ``imagefolder`` takes ``descriptions_dir``: the directory of description sets
(see :mod:`wca.datasets.names` for how it is found) whose ``classnames.json`` gives or checks
the class names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The loader modules register themselves on import.
from wca.datasets import (  # noqa: F401
    cub,
    dtd,
    eurosat,
    folder,
    food101,
    imagenet,
    oxford_pets,
    places365,
    torchvision_sets,
    webdataset,
)
from wca.datasets.base import DATASETS, Dataset, register
from wca.datasets.names import ENV_VAR, default_descriptions_dir, resolve_descriptions_dir

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "Dataset",
    "default_descriptions_dir",
    "canonical_name",
    "load_dataset",
    "register",
    "resolve_descriptions_dir",
]


def canonical_name(name: str) -> str:
    """The registered name of dataset ``name`` (``-``/``_`` and the authors' spellings alike,
    see :mod:`wca.dataset_names`); unknown names come back as they are."""
    family, slash, sub = name.partition("/")
    if slash and DATASETS.canonical(family):
        return f"{DATASETS.canonical(family)}/{sub}"
    return DATASETS.canonical(name) or name


def loader_of(name: str) -> tuple[Callable[..., Dataset], dict[str, str]]:
    """The registered loader of dataset ``name`` and the options its name gives (``FAMILY/SUB``:
    ``name=SUB``); an unknown name is one line listing the known ones."""
    family, slash, sub = name.partition("/")
    if slash and DATASETS.canonical(family):
        return DATASETS.get_entry(family), {"name": sub}
    return DATASETS.get_entry(name), {}


def load_dataset(name: str, root: str | Path, split: str | None = None, **options: Any) -> Dataset:
    """Read dataset ``name`` from ``root`` (its default split when ``split`` is None).

    Unknown names and options give a ValueError listing the known ones; a missing root or an
    unexpected layout gives a FileNotFoundError naming the path and the layout expected.
    """
    loader, extra = loader_of(name)
    options = {**options, **extra}
    parameters = inspect.signature(loader).parameters
    known = [p.name for p in parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"dataset {name!r} has no option {', '.join(unknown)} (its options: "
            f"{', '.join(known) or 'none'})"
        )
    return loader(root, split, **options)
