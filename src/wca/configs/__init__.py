"""The paper's ten datasets in the WCA authors' YAML shape (shipped with wca), and the authors'
conventions for reading such files: their per-dataset defaults, their crop bound, their
relative data paths."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from wca.compat import RENAMED_SETTINGS, renamed
from wca.defaults import IMAGENET_FAMILY
from wca.specs import from_model_size

# The authors' code crops with side U(0.1, 0.9) whatever alpha its config says: their
# main.py defines random_crop(image, alpha=0.1) and calls it without alpha (tmlr-group/WCA).
AUTHORS_CODE_ALPHA = 0.1


# The authors' per-dataset values (their configs): 60 crops for ImageNet and its test-only
# variants, alpha 0.7 for Places365; 100 crops and alpha 0.5 elsewhere (ImageNetV2 included,
# as their config says). The flags' help shows them beside each default.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    **{name: {"n_crops": 60} for name in IMAGENET_FAMILY if name != "imagenetv2"},
    "places365": {"alpha": 0.7},
}


def dataset_defaults(dataset: str | None) -> dict[str, Any]:
    """The authors' values for ``dataset`` (:data:`DATASET_DEFAULTS`; none for others)."""
    from wca.datasets import canonical_name
    key = canonical_name(dataset or "").replace("_", "-")
    return dict(DATASET_DEFAULTS.get(key, {}))


PACKAGED_CONFIGS = Path(__file__).parent


def packaged_configs() -> dict[str, Path]:
    """The shipped configs of the paper's datasets, by dataset name."""
    return {path.stem: path for path in sorted(PACKAGED_CONFIGS.glob("*.yaml"))}


def config_path(name: str | Path) -> Path:
    """``name`` as a file, or the shipped config of that name (``cub``, ``imagenet``...)."""
    path = Path(name)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    from wca.datasets import canonical_name

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


def authors_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """A config file's settings and the notes for the user, the authors' conventions applied:
    their keys read as ours (``model_size`` -> ``model``, ``data_path`` -> ``data_root``,
    ``n_samples`` -> ``n_crops``; ``batch_size``, images per batch in their code, does not
    change a number and is left to the run options), a file in their own shape (it names WCA
    ``ours``) crops as their code does, and a relative data path is taken from the working
    directory as their code does, else from the file's folder."""
    values, notes = dict(read_config_file(path)), []
    for key, ours in (("data_path", "data_root"), ("n_samples", "n_crops")):
        if key in values:
            if ours in values:
                raise ValueError(f"{path}: {key} and {ours} are one setting; give one")
            values[ours] = values.pop(key)
    if "model_size" in values:
        model_size = values.pop("model_size")
        if "model" not in values:
            values["model"] = from_model_size(str(model_size))
    values.pop("batch_size", None)
    values = renamed(values, RENAMED_SETTINGS, str(path))  # wca 0.3's own names
    methods = values.get("methods")
    entries = methods if isinstance(methods, list) else []
    names = [next(iter(m)) for m in entries if isinstance(m, Mapping) and len(m) == 1]
    if "ours" in names and "effective_alpha" not in values:
        values["effective_alpha"] = AUTHORS_CODE_ALPHA
    data_root = values.get("data_root")
    if isinstance(data_root, str) and data_root.strip() and not Path(data_root).is_absolute():
        data_root = data_root.strip()
        beside = path.resolve().parent / data_root
        if not Path(data_root).exists() and beside.exists():
            values["data_root"] = str(beside)
            notes.append(f"{path}: data root {data_root!r} read from the config's folder: {beside}")
        else:
            values["data_root"] = data_root
    return values, notes
