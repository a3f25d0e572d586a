"""Evaluation settings: defaults from the authors' protocol, their YAML files, and overrides,
all validated by pydantic before any work starts.

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
keys other than ``name`` and ``enabled`` are options of its head, checked against the typed
signature of its builder in :data:`wca.methods.METHODS` (so ``image_scale: abc`` or ``inf`` is
refused before the feature pass, not after it). Precedence: defaults (per dataset, see
:func:`dataset_defaults`) < file < overrides ``key=value`` (``methods.wca.image_scale=3``,
``methods=clip,wca``). ``batch_size`` counts views per encoder pass in wca (images in the
authors' code); it does not change results.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from wca.crops import CROP_STRATEGIES, DEFAULT_BETA
from wca.methods import METHODS
from wca.methods.registry import options_model

IMAGENET_FAMILY = ("imagenet", "imagenetv2", "imagenet-sketch", "imagenet-r", "imagenet-a")
DEFAULT_METHODS = ("clip", "clip-e", "clip-d", "waffle", "cupl", "wca")
# The authors' CLIP model names -> the wca spec of the same OpenAI weights.
OPENAI_MODELS = {
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
    "RN50": "RN50",
    "RN101": "RN101",
}
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class MethodConfig(BaseModel):
    """One method of the evaluation: its registry name, whether it runs, its head options
    (only those set explicitly, validated and coerced by
    :func:`wca.methods.registry.options_model`)."""

    model_config = STRICT

    name: str
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_options(self) -> MethodConfig:
        if self.name not in METHODS:
            raise ValueError(f"unknown method {self.name!r} (known: {', '.join(METHODS)})")
        options = options_model(self.name).model_validate(self.options)
        self.options = options.model_dump(exclude_unset=True)
        return self


def _default_methods() -> list[MethodConfig]:
    wca = MethodConfig(name="wca", options={"image_scale": 4.0, "text_scale": 2.0})
    return [MethodConfig(name=name) for name in DEFAULT_METHODS[:-1]] + [wca]


def _method_entries(value: Any) -> list[dict[str, Any]]:
    """The methods list in any of its shapes (see module doc) as ``{name, enabled, options}``."""
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",") if name.strip()]
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = []
        for item in value:
            if isinstance(item, MethodConfig):
                item = item.model_dump()
            if isinstance(item, Mapping) and "options" in item:  # {name, enabled, options}
                body = {"enabled": item.get("enabled", True), **item["options"]}
                pairs.append((item["name"], body))
            elif isinstance(item, str):
                pairs.append((item, {}))
            elif isinstance(item, Mapping) and len(item) == 1:
                pairs.append(next(iter(item.items())))
            else:
                raise ValueError(f"entry {item!r} is not a name or {{name: {{options}}}}")
    else:
        raise ValueError(f"expected a list or mapping, got {value!r}")
    entries = []
    for key, body in pairs:
        if body is not None and not isinstance(body, Mapping):
            raise ValueError(f"{key}: expected a mapping of options, got {body!r}")
        body = dict(body or {})
        name = str(body.pop("name", key))
        enabled = body.pop("enabled", True)
        entries.append({"name": name, "enabled": enabled, "options": body})
    if not entries:
        raise ValueError("no method listed")
    return entries


PositiveInt = Annotated[int, Field(ge=1)]


class EvalConfig(BaseModel):
    """Every setting of ``wca eval``; defaults are the authors' (REFERENCE.md)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    model_size: str = "ViT-B/32"
    model: str | None = None  # a wca model spec; None: the OpenAI weights of model_size
    dataset: str | None = None
    data_path: str | None = None
    split: str | None = None
    batch_size: PositiveInt = 256
    alpha: Annotated[float, Field(gt=0, le=1)] = 0.5
    beta: Annotated[float, Field(gt=0, le=1)] = DEFAULT_BETA
    n_samples: PositiveInt = 100
    crop_strategy: str = "random"  # the paper's uniform random crops; see wca.crops
    n_run: PositiveInt = 20
    patch_n: PositiveInt = 60
    seed: Annotated[int, Field(ge=0)] = 0
    protocol: Literal["pool", "fresh"] = "pool"
    fidelity: bool = False  # per-crop PIL preprocessing (the authors' views) instead of tensors
    half: bool = False  # store features in fp16
    methods: list[MethodConfig] = Field(default_factory=_default_methods)

    @field_validator("methods", mode="before")
    @classmethod
    def _methods_shapes(cls, value: Any) -> list[dict[str, Any]]:
        return _method_entries(value)

    @field_validator("crop_strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in CROP_STRATEGIES:
            raise ValueError(f"must be one of {', '.join(CROP_STRATEGIES)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _crop_bounds(self) -> EvalConfig:
        if self.alpha > self.beta:
            raise ValueError(f"need alpha <= beta, got alpha={self.alpha}, beta={self.beta}")
        return self

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
        data = self.model_dump(exclude={"methods"})
        data["model"] = self.model_spec
        data["methods"] = [
            {m.name: {"name": m.name, "enabled": m.enabled, **m.options}} for m in self.methods
        ]
        return data


def _one_line(error: ValidationError, data: Mapping[str, Any], source: str) -> ValueError:
    """The first problem of a validation error as ``source: key: what was wrong``, a method
    named by its name rather than its position in the list."""
    first = error.errors()[0]
    loc = [part for part in first["loc"] if part != "options"]
    if len(loc) > 1 and loc[0] == "methods" and isinstance(loc[1], int):
        with contextlib.suppress(ValueError, IndexError, KeyError):
            loc[1] = _method_entries(data["methods"])[loc[1]]["name"]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        known = f" (known: {', '.join(EvalConfig.model_fields)})" if len(loc) == 1 else ""
        message, loc = f"unknown key {loc[-1]!r}{known}", loc[:-1]
    elif "input" in first and first["type"] not in ("value_error", "assertion_error"):
        message += f", got {first['input']!r}"
    where = ".".join(map(str, loc))
    return ValueError(f"{source}: {where + ': ' if where else ''}{message}")


def _validated(data: Mapping[str, Any], source: str) -> EvalConfig:
    try:
        return EvalConfig.model_validate(dict(data))
    except ValidationError as error:
        raise _one_line(error, data, source) from None


def _merge(config: EvalConfig, values: Mapping[str, Any], source: str) -> EvalConfig:
    return _validated({**config.model_dump(), **values}, source)


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


def _apply_method_override(config: EvalConfig, path: list[str], value: Any, source: str):
    """``methods.<name>.<option>=value`` (``enabled`` switches the method on or off)."""
    if len(path) != 3:
        raise ValueError(f"{source}: use methods.<method>.<option>=VALUE")
    _, name, option = path
    methods = [m.model_dump() for m in config.methods]
    target = next((m for m in methods if m["name"] == name), None)
    if target is None:
        target = {"name": name, "enabled": True, "options": {}}
        methods.append(target)
    if option == "enabled":
        target["enabled"] = value
    else:
        target["options"][option] = value
    return _merge(config, {"methods": methods}, source)


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
    config = _validated(dataset_defaults(named), "defaults")
    if path is not None:
        config = _merge(config, file_values, str(path))
    if dataset is not None:
        overrides = {"dataset": dataset, **overrides}
    config = _merge(config, overrides, "command line")
    for text in settings:
        key, value = parse_override(text)
        if key[0] == "methods" and len(key) > 1:
            config = _apply_method_override(config, key, value, f"--set {text}")
        elif len(key) == 1:
            config = _merge(config, {key[0]: value}, f"--set {text}")
        else:
            raise ValueError(f"--set {text}: only methods.<method>.<option> keys have dots")
    return config
