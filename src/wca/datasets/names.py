"""Class names of a dataset: finding the descriptions directory and checking names against it.

A descriptions directory is laid out like ``../shared/descriptors``: one folder per dataset
(``cub``, ``dtd``, ``imagenet``, ``oxford_pet``, ``place365``, ...) holding ``classnames.json``
and the description sets (``cupl.json``, ``clip-d.json``, ``clip-e.json``). It is found, in
order, from the ``descriptions_dir`` option, the ``WCA_DESCRIPTIONS_DIR`` environment variable,
and the default, the folder the published sets are downloaded to:
``wca.defaults.cache_dir("descriptions")`` (``$WCA_CACHE_DIR/descriptions``, else
``~/.cache/wca/descriptions``, ``$XDG_CACHE_HOME`` if set).

Label order always comes from the dataset's own files. Where those files carry class names
(CUB's ``classes.txt``, DTD's folders, Food-101's ``classes.txt``, ...), they are compared with
``classnames.json`` position by position, ignoring case, ``_``, ``-`` and extra spaces; the
names returned are those of ``classnames.json``, because they are the keys of the description
files and the names the authors' prompts use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from wca.defaults import cache_dir
from wca.descriptions.io import load_classnames

ENV_VAR = "WCA_DESCRIPTIONS_DIR"


def default_descriptions_dir() -> Path:
    """Where ``wca descriptions fetch`` puts the published description sets:
    ``$WCA_CACHE_DIR/descriptions``, else the user cache folder + ``/wca/descriptions``."""
    return cache_dir("descriptions")


def resolve_descriptions_dir(descriptions_dir: str | Path | None = None) -> tuple[Path, bool]:
    """The descriptions directory and whether the user chose it (option or environment).

    A directory the user chose must exist; the default may be missing (the caller decides
    whether it can do without).
    """
    chosen = descriptions_dir if descriptions_dir is not None else os.environ.get(ENV_VAR)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_dir():
            source = "descriptions_dir" if descriptions_dir is not None else ENV_VAR
            raise FileNotFoundError(f"{path}: descriptions directory ({source}) does not exist")
        return path, True
    return default_descriptions_dir(), False


def normalize_name(name: str) -> str:
    """A class name for comparison: lower case, ``_`` and ``-`` as spaces, single spaces."""
    return " ".join(re.sub(r"[_\-]", " ", name).lower().split())


def reference_classnames(
    descriptions_name: str, descriptions_dir: str | Path | None, required: bool
) -> list[str] | None:
    """``<descriptions dir>/<descriptions_name>/classnames.json`` read as class names.

    Returns None when the file is absent and not ``required`` (a FileNotFoundError naming it if
    it is).
    """
    directory, _ = resolve_descriptions_dir(descriptions_dir)
    path = directory / descriptions_name / "classnames.json"
    if path.is_file():
        return load_classnames(path)
    if required:
        raise FileNotFoundError(
            f"{path}: no class-name file; pass descriptions_dir (or set {ENV_VAR}) to a "
            f"directory with a {descriptions_name}/classnames.json (laid out like "
            f"shared/descriptors; default {default_descriptions_dir()})"
        )
    return None


def checked_classnames(
    own: Sequence[str] | Mapping[int, str],
    descriptions_name: str,
    descriptions_dir: str | Path | None,
    source: str | Path,
) -> list[str]:
    """Class names for a dataset whose files name its classes: ``own``, a list in label order,
    or a mapping label -> name where the files name only some classes (Pets' split files).

    With a descriptions directory, ``own`` must agree with its ``classnames.json`` (ValueError
    listing the mismatches) and those names are returned. Without one, ``own`` is returned with
    ``_`` as spaces; it must then name every label 0..K-1.
    """
    complete = not isinstance(own, Mapping)
    named = dict(enumerate(own)) if complete else dict(own)
    reference = reference_classnames(descriptions_name, descriptions_dir, required=False)
    if reference is None:
        missing = sorted(set(range(max(named, default=-1) + 1)) - set(named))
        if missing:
            raise ValueError(f"{source}: no class name for labels {missing[:10]}")
        return [" ".join(named[label].replace("_", " ").split()) for label in sorted(named)]
    mismatches = [
        f"label {label}: {name!r} vs {reference[label]!r}"
        if label < len(reference)
        else f"label {label}: {name!r} is past the end of the file"
        for label, name in sorted(named.items())
        if label >= len(reference) or normalize_name(name) != normalize_name(reference[label])
    ]
    if complete and len(named) < len(reference):
        mismatches.append(f"{len(named)} classes in the dataset, {len(reference)} in the file")
    if mismatches:
        shown = "; ".join(mismatches[:10])
        more = f" (and {len(mismatches) - 10} more)" if len(mismatches) > 10 else ""
        raise ValueError(
            f"{source}: class names disagree with {descriptions_name}/classnames.json of the "
            f"descriptions directory: {shown}{more}"
        )
    return reference
