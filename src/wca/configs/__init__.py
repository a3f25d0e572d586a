"""The paper's ten datasets in the WCA authors' YAML shape (shipped with wca), and the authors'
conventions for reading such files: their per-dataset defaults, their crop bound, their
relative data paths."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from wca.datasets import canonical_name
from wca.defaults import IMAGENET_FAMILY

# The authors' code crops with side U(0.1, 0.9) whatever alpha its config says: their
# main.py defines random_crop(image, alpha=0.1) and calls it without alpha (tmlr-group/WCA).
AUTHORS_CODE_ALPHA = 0.1


def dataset_defaults(dataset: str | None) -> dict[str, Any]:
    """The authors' per-dataset values: 60 crops for ImageNet and its test-only variants, alpha
    0.7 for Places365, 100 crops and alpha 0.5 elsewhere (ImageNetV2 included, as their
    config says)."""
    key = canonical_name(dataset or "").replace("_", "-")
    values: dict[str, Any] = {}
    if key in IMAGENET_FAMILY and key != "imagenetv2":
        values["n_samples"] = 60
    if key == "places365":
        values["alpha"] = 0.7
    return values


PACKAGED_CONFIGS = Path(__file__).parent


def packaged_configs() -> dict[str, Path]:
    """The shipped configs of the paper's datasets, by dataset name."""
    return {path.stem: path for path in sorted(PACKAGED_CONFIGS.glob("*.yaml"))}


def config_path(name: str | Path) -> Path:
    """``name`` as a file, or the shipped config of that name (``cub``, ``imagenet``...)."""
    path = Path(name)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    shipped = packaged_configs()
    key = canonical_name(str(name))
    if key not in shipped:
        raise FileNotFoundError(
            f"{name}: no such config file, nor a shipped one (shipped: {', '.join(shipped)})"
        )
    return shipped[key]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML config file, with clear errors for unreadable files."""
    path = config_path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected a YAML config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: config file not found") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def authors_file(values: dict[str, Any], path: Path) -> tuple[dict[str, Any], list[str]]:
    """A config file's values with the authors' conventions applied: a file in their own shape
    (it names WCA ``ours``) crops as their code does, and a relative ``data_path`` is taken
    from the working directory as their code does, else from the file's folder."""
    values, notes = dict(values), []
    methods = values.get("methods")
    entries = methods if isinstance(methods, list) else []
    names = [next(iter(m)) for m in entries if isinstance(m, Mapping) and len(m) == 1]
    if "ours" in names and "effective_alpha" not in values:
        values["effective_alpha"] = AUTHORS_CODE_ALPHA
    data_path = values.get("data_path")
    if isinstance(data_path, str) and data_path.strip() and not Path(data_path).is_absolute():
        data_path = data_path.strip()
        beside = path.resolve().parent / data_path
        if not Path(data_path).exists() and beside.exists():
            values["data_path"] = str(beside)
            notes.append(f"{path}: data_path {data_path!r} read from the config's folder: {beside}")
        else:
            values["data_path"] = data_path
    return values, notes
