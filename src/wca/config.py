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
:func:`wca.configs.dataset_defaults`) < file < overrides ``key=value``
(``methods.wca.image_scale=3``, ``methods=clip,wca``). ``batch_size`` counts views per encoder
pass in wca (images in the authors' code); it does not change results.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from wca import defaults
from wca.configs import (
    AUTHORS_CODE_ALPHA,
    authors_file,
    config_path,
    dataset_defaults,
    read_config_file,
)
from wca.crops import CropSpec
from wca.datasets import canonical_name
from wca.errors import SettingError
from wca.methods import METHODS
from wca.methods.registry import options_model

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
METHOD_ALIASES = {"ours": "wca"}  # the WCA authors' name for their method in their configs


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
    options = {"image_scale": defaults.IMAGE_SCALE, "text_scale": defaults.TEXT_SCALE}
    wca = MethodConfig(name="wca", options=options)
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
        name = METHOD_ALIASES.get(name, name)
        enabled = body.pop("enabled", True)
        entries.append({"name": name, "enabled": enabled, "options": body})
    if not entries:
        raise ValueError("no method listed")
    return entries


PositiveInt = Annotated[int, Field(ge=1)]
_CROP_KEYS = {"n": "n_samples", "strategy": "crop_strategy"}  # CropSpec's names -> the config's


class EvalConfig(BaseModel):
    """Every setting of ``wca eval``; defaults are the authors' (their configs and code)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    model_size: str = "ViT-B/32"
    model: str | None = None  # a wca model spec; None: the OpenAI weights of model_size
    dataset: str | None = None
    dataset_name: str | None = None  # the name results carry (default: see pipeline)
    data_path: str | None = None
    split: str | None = None
    batch_size: PositiveInt = defaults.BATCH_SIZE
    alpha: Annotated[float, Field(gt=0, le=1)] = defaults.ALPHA
    # the lower crop bound actually drawn with, where it differs from the stated alpha: the
    # authors' code used 0.1 for every published number (None: alpha)
    effective_alpha: Annotated[float, Field(gt=0, le=1)] | None = None
    beta: Annotated[float, Field(gt=0, le=1)] = defaults.BETA
    n_samples: PositiveInt = 100
    crop_strategy: str = "random"  # the paper's uniform random crops; see wca.crops
    n_run: PositiveInt = 20
    patch_n: PositiveInt = 60
    seed: Annotated[int, Field(ge=0)] = defaults.SEED
    protocol: Literal["pool", "fresh"] = "pool"
    fidelity: bool = False  # per-crop PIL preprocessing (the authors' views) instead of tensors
    half: bool = False  # store features in fp16
    methods: list[MethodConfig] = Field(default_factory=_default_methods)
    _notes: list[str] = PrivateAttr(default_factory=list)  # lines for the user, see resolve
    _named: set[str] = PrivateAttr(default_factory=set)  # methods the user asked for by name

    @field_validator("dataset")
    @classmethod
    def _canonical_dataset(cls, value: str | None) -> str | None:
        return None if value is None else canonical_name(value)

    @field_validator("methods", mode="before")
    @classmethod
    def _methods_shapes(cls, value: Any) -> list[dict[str, Any]]:
        return _method_entries(value)

    @model_validator(mode="after")
    def _valid_crops(self) -> EvalConfig:
        """The crop settings are checked once, by :class:`~wca.crops.CropSpec`."""
        try:
            self.crops  # noqa: B018
        except SettingError as error:
            key = _CROP_KEYS.get(error.setting, error.setting)
            raise ValueError(f"{key}: {error.reason}") from None
        return self

    @property
    def crops(self) -> CropSpec:
        """The crop pool of the feature pass."""
        return CropSpec(
            n=self.n_samples,
            alpha=self.crop_alpha,
            beta=self.beta,
            seed=self.seed,
            strategy=self.crop_strategy,
        )

    @property
    def crop_alpha(self) -> float:
        """The lower bound of crop sides the feature pass draws with."""
        return self.alpha if self.effective_alpha is None else self.effective_alpha

    @property
    def notes(self) -> list[str]:
        """What resolving the settings chose that a user should know (printed by the CLI)."""
        return list(self._notes)

    def named(self, method: str) -> bool:
        """Whether ``method`` was asked for by name (a methods list in a file, ``--methods``,
        ``--set methods...``) rather than being one of the defaults: a named method whose
        texts are missing is an error, a default one is skipped."""
        return method in self._named

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
        data["effective_alpha"] = self.crop_alpha
        if self.model:
            data["model_size"] = None  # the spec says which model ran, not the authors' name
        data["methods"] = [
            {m.name: {"name": m.name, "enabled": m.enabled, **m.options}} for m in self.methods
        ]
        return data


def _model_level_key(first: Mapping[str, Any]) -> list[str]:
    """The config key a model-level check names first (``"alpha: must be <= beta"``), if any."""
    key = first["msg"].removeprefix("Value error, ").split(":", 1)[0]
    return [key] if key in EvalConfig.model_fields else []


def _one_line(error: ValidationError, data: Mapping[str, Any], source: str) -> ValueError:
    """The first problem of a validation error as ``source: key: what was wrong``, a method
    named by its name rather than its position in the list."""
    first = error.errors()[0]
    loc = [part for part in first["loc"] if part != "options"] or _model_level_key(first)
    if len(loc) > 1 and loc[0] == "methods" and isinstance(loc[1], int):
        with contextlib.suppress(ValueError, IndexError, KeyError):
            loc[1] = _method_entries(data["methods"])[loc[1]]["name"]
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"] and loc:
        message = message.removeprefix(f"{loc[0]}: ")
    if first["type"] == "extra_forbidden":
        known = f" (known: {', '.join(EvalConfig.model_fields)})" if len(loc) == 1 else ""
        message, loc = f"unknown key {loc[-1]!r}{known}", loc[:-1]
    elif "input" in first and first["type"] not in ("value_error", "assertion_error"):
        message += f", got {first['input']!r}"
    where = ".".join(map(str, loc))
    return ValueError(f"{source}: {where + ': ' if where else ''}{message}")


def _validated(data: Mapping[str, Any], source: str | Mapping[str, str]) -> EvalConfig:
    """``data`` as a config; ``source`` names where the values came from (per key, if a
    mapping: the key of the first problem picks the name)."""
    try:
        return EvalConfig.model_validate(dict(data))
    except ValidationError as error:
        if not isinstance(source, str):
            first = error.errors()[0]
            key = str((list(first["loc"]) or _model_level_key(first) or [""])[0])
            source = source.get(key, "command line")
        raise _one_line(error, data, source) from None


def _merge(
    config: EvalConfig, values: Mapping[str, Any], source: str | Mapping[str, str]
) -> EvalConfig:
    return _validated({**config.model_dump(), **values}, source)


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
    *,
    flag: Callable[[str], str] = str,
    setting: Callable[[str], str] = str,
) -> EvalConfig:
    """Defaults for the dataset, then the file at ``path``, then ``overrides`` (a mapping of
    keys, e.g. from CLI flags, ``methods.<method>.<option>`` reaching method options; None
    values are skipped), then ``settings`` (``KEY=VALUE`` strings; dotted keys reach method
    options). Errors name where a value came from: the file, ``flag(key)`` for an override
    (default: the key), ``setting(text)`` for a ``KEY=VALUE`` string (default: the string)."""
    file_values = read_config_file(path) if path is not None else {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    method_flags = {k: overrides.pop(k) for k in list(overrides) if k.startswith("methods.")}
    settings = list(settings)
    named = dataset or overrides.get("dataset") or file_values.get("dataset")
    for text in settings:
        key, value = parse_override(text)
        if key == ["dataset"]:
            named = value
    config = _validated(dataset_defaults(named), "defaults")
    notes = []
    if path is not None:
        path = config_path(path)
        file_values, notes = authors_file(file_values, path)
        config = _merge(config, file_values, str(path))
    if dataset is not None:
        overrides = {"dataset": dataset, **overrides}
    config = _merge(config, overrides, {key: flag(key) for key in overrides})
    for key, value in method_flags.items():
        config = _apply_method_override(config, key.split("."), value, flag(key))
    for text in settings:
        key, value = parse_override(text)
        if key[0] == "methods" and len(key) > 1:
            config = _apply_method_override(config, key, value, setting(text))
        elif len(key) == 1:
            config = _merge(config, {key[0]: value}, setting(text))
        else:
            raise ValueError(f"{setting(text)}: only methods.<method>.<option> keys have dots")
    explicit = "alpha" in overrides or any(parse_override(t)[0] == ["alpha"] for t in settings)
    if explicit and config.effective_alpha is not None:
        config = _merge(config, {"effective_alpha": None}, "command line")
        notes = [note for note in notes if "alpha" not in note]
    if config.effective_alpha is not None and config.effective_alpha != config.alpha:
        notes.append(
            f"crops drawn with alpha {config.effective_alpha}, not the stated {config.alpha}: "
            f"the authors' code crops with U({AUTHORS_CODE_ALPHA}, 0.9) whatever its config "
            f"says, and the published numbers come from it; set {flag('alpha')} to crop otherwise"
        )
    config._notes = notes
    config._named = _named_methods(file_values, overrides, method_flags, settings)
    return config


def _named_methods(file_values, overrides, method_flags, settings) -> set[str]:
    named: set[str] = set()
    for values in (file_values, overrides):
        if "methods" in values:
            named = {entry["name"] for entry in _method_entries(values["methods"])}
    named |= {key.split(".")[1] for key in method_flags}
    for text in settings:
        key, value = parse_override(text)
        if key == ["methods"]:
            named = {entry["name"] for entry in _method_entries(value)}
        elif key[0] == "methods" and len(key) > 1:
            named.add(key[1])
    return named


