"""Evaluation settings: defaults from the authors' protocol, their YAML files, and overrides.

A config file in the authors' shape loads as is::

    model_size: ViT-B/32
    batch_size: 32
    dataset: cub
    data_path: data/CUB_200_2011
    alpha: 0.5
    n_samples: 100
    n_run: 20
    patch_n: 60
    methods:
      - clip: {name: clip, enabled: True}
      - wca: {name: wca, enabled: True, image_scale: 4.0, text_scale: 2.0}

``methods`` may also be a mapping ``{wca: {image_scale: 4.0}}`` or a list of names; a method's
keys other than ``name`` and ``enabled`` are options of its head (``image_scale``,
``text_scale``, ``form`` for wca; ``draws``, ``seed`` for waffle; ``aggregate`` for clip-d).
Precedence: defaults (per dataset, see :func:`dataset_defaults`) < file < overrides
``key=value`` (``methods.wca.image_scale=3``, ``methods=clip,wca``). ``batch_size`` counts
views per encoder pass in wca (images in the authors' code); it does not change results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wca.crops import CROP_STRATEGIES, DEFAULT_BETA
from wca.evaluate import PROTOCOLS

ALL_METHODS = ("clip", "clip-e", "clip-d", "waffle", "cupl", "wca")
IMAGENET_FAMILY = ("imagenet", "imagenetv2", "imagenet-sketch", "imagenet-r", "imagenet-a")
# The authors' CLIP model names -> the wca spec of the same OpenAI weights.
OPENAI_MODELS = {
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
    "RN50": "RN50",
    "RN101": "RN101",
}


@dataclass
class MethodConfig:
    """One method of the evaluation: its registry name, whether it runs, its head options."""

    name: str
    enabled: bool = True
    options: dict[str, Any] = field(default_factory=dict)


def _default_methods() -> list[MethodConfig]:
    wca = MethodConfig("wca", options={"image_scale": 4.0, "text_scale": 2.0})
    return [MethodConfig(name) for name in ALL_METHODS[:-1]] + [wca]


@dataclass
class EvalConfig:
    """Every setting of ``wca eval``; defaults are the authors' (REFERENCE.md)."""

    model_size: str = "ViT-B/32"
    model: str | None = None  # a wca model spec; None: the OpenAI weights of model_size
    dataset: str | None = None
    data_path: str | None = None
    split: str | None = None
    batch_size: int = 256
    alpha: float = 0.5
    beta: float = DEFAULT_BETA
    n_samples: int = 100
    crop_strategy: str = "random"  # the paper's uniform random crops; see wca.crops
    n_run: int = 20
    patch_n: int = 60
    seed: int = 0
    protocol: str = "pool"
    fidelity: bool = False  # per-crop PIL preprocessing (the authors' views) instead of tensors
    half: bool = False  # store features in fp16
    methods: list[MethodConfig] = field(default_factory=_default_methods)

    @property
    def model_spec(self) -> str:
        if self.model:
            return self.model
        if ":" in self.model_size:
            return self.model_size
        if self.model_size not in OPENAI_MODELS:
            raise ValueError(
                f"model_size {self.model_size!r} is not one of the authors' CLIP models "
                f"({', '.join(OPENAI_MODELS)}); give a model spec instead (e.g. open_clip:...)"
            )
        return f"open_clip:{OPENAI_MODELS[self.model_size]}/openai"

    def enabled_methods(self) -> list[MethodConfig]:
        return [method for method in self.methods if method.enabled]

    def to_dict(self) -> dict[str, Any]:
        """Plain values in the authors' shape (methods as a list of one-key mappings)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["model"] = self.model_spec
        data["methods"] = [
            {m.name: {"name": m.name, "enabled": m.enabled, **m.options}} for m in self.methods
        ]
        return data


def dataset_defaults(dataset: str | None) -> dict[str, Any]:
    """The authors' per-dataset values: 60 crops for the ImageNet family, alpha 0.7 for
    Places365, 100 crops and alpha 0.5 elsewhere."""
    key = (dataset or "").lower().replace("_", "-")
    values: dict[str, Any] = {}
    if key in IMAGENET_FAMILY:
        values["n_samples"] = 60
    if key == "places365":
        values["alpha"] = 0.7
    return values


_SCALARS = {f.name: f.type for f in dataclasses.fields(EvalConfig) if f.name != "methods"}


def _coerce(key: str, value: Any, source: str) -> Any:
    kind = _SCALARS[key]
    if value is None and "None" in kind:
        return None
    try:
        if kind.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind.startswith("bool"):
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
                return value.lower() in ("true", "yes")
            if not isinstance(value, bool):
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise ValueError(f"{source}: {key}: expected {kind.split()[0]}, got {value!r}") from None
    if not isinstance(value, str | int | float):
        raise ValueError(f"{source}: {key}: expected text, got {value!r}")
    return str(value)


def _parse_methods(value: Any, source: str) -> list[MethodConfig]:
    """The methods list in any of its shapes (see module doc)."""
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",") if name.strip()]
    entries: list[tuple[str, Any]] = []
    if isinstance(value, Mapping):
        entries = list(value.items())
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                entries.append((item, {}))
            elif isinstance(item, Mapping) and len(item) == 1:
                entries.append(next(iter(item.items())))
            else:
                raise ValueError(
                    f"{source}: methods: entry {item!r} is not a name or {{name: {{options}}}}"
                )
    else:
        raise ValueError(f"{source}: methods: expected a list or mapping, got {value!r}")
    methods = []
    for key, body in entries:
        body = dict(body or {})
        name = str(body.pop("name", key))
        if name not in ALL_METHODS:
            raise ValueError(
                f"{source}: methods: unknown method {name!r} (known: {', '.join(ALL_METHODS)})"
            )
        enabled = body.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise ValueError(f"{source}: methods: {name}: enabled must be true or false")
        methods.append(MethodConfig(name, enabled, body))
    if not methods:
        raise ValueError(f"{source}: methods: no method listed")
    return methods


def _merge(config: EvalConfig, values: Mapping[str, Any], source: str) -> EvalConfig:
    updates: dict[str, Any] = {}
    for key, value in values.items():
        if key == "methods":
            updates["methods"] = _parse_methods(value, source)
        elif key in _SCALARS:
            updates[key] = _coerce(key, value, source)
        else:
            raise ValueError(
                f"{source}: unknown key {key!r} (known: {', '.join([*_SCALARS, 'methods'])})"
            )
    result = dataclasses.replace(config, **updates)
    _check(result, source)
    return result


def _check(config: EvalConfig, source: str) -> None:
    if not 0 < config.alpha <= config.beta <= 1:
        raise ValueError(
            f"{source}: need 0 < alpha <= beta <= 1, got alpha={config.alpha}, beta={config.beta}"
        )
    for key in ("n_samples", "n_run", "patch_n", "batch_size"):
        if getattr(config, key) < 1:
            raise ValueError(f"{source}: {key} must be >= 1, got {getattr(config, key)}")
    if config.seed < 0:
        raise ValueError(f"{source}: seed must be >= 0, got {config.seed}")
    if config.crop_strategy not in CROP_STRATEGIES:
        raise ValueError(
            f"{source}: crop_strategy must be one of {', '.join(CROP_STRATEGIES)}, "
            f"got {config.crop_strategy!r}"
        )
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"{source}: protocol must be one of {', '.join(PROTOCOLS)}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML config file, with clear errors for unreadable files."""
    path = Path(path)
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


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> ``(["a", "b"], value)``, the value read as YAML (numbers, booleans)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not KEY=VALUE")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ValueError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value


def _apply_method_override(config: EvalConfig, path: list[str], value: Any) -> EvalConfig:
    """``methods.<name>.<option>=value`` (``enabled`` switches the method on or off)."""
    if len(path) != 3:
        raise ValueError(f"override {'.'.join(path)}: use methods.<method>.<option>=VALUE")
    _, name, option = path
    if name not in ALL_METHODS:
        raise ValueError(f"override: unknown method {name!r} (known: {', '.join(ALL_METHODS)})")
    methods = [dataclasses.replace(m, options=dict(m.options)) for m in config.methods]
    target = next((m for m in methods if m.name == name), None)
    if target is None:
        target = MethodConfig(name)
        methods.append(target)
    if option == "enabled":
        if not isinstance(value, bool):
            raise ValueError(f"override methods.{name}.enabled: expected true or false")
        target.enabled = value
    else:
        target.options[option] = value
    return dataclasses.replace(config, methods=methods)


def resolve_config(
    dataset: str | None = None,
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    settings: Iterable[str] = (),
) -> EvalConfig:
    """Defaults for the dataset, then the file at ``path``, then ``overrides`` (a mapping of
    top-level keys, e.g. from CLI flags; None values are skipped), then ``settings``
    (``KEY=VALUE`` strings; dotted keys reach method options)."""
    file_values = read_config_file(path) if path is not None else {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    settings = list(settings)
    named = dataset or overrides.get("dataset") or file_values.get("dataset")
    for text in settings:
        key, value = parse_override(text)
        if key == ["dataset"]:
            named = value
    config = _merge(EvalConfig(), dataset_defaults(named), "defaults")
    if path is not None:
        config = _merge(config, file_values, str(path))
    if dataset is not None:
        overrides = {"dataset": dataset, **overrides}
    config = _merge(config, overrides, "command line")
    for text in settings:
        key, value = parse_override(text)
        if key[0] == "methods" and len(key) > 1:
            config = _apply_method_override(config, key, value)
        elif len(key) == 1:
            config = _merge(config, {key[0]: value}, f"--set {text}")
        else:
            raise ValueError(f"--set {text}: only methods.<method>.<option> keys have dots")
    return config
