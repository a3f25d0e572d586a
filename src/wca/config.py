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
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from wca.crops import CROP_STRATEGIES, DEFAULT_BETA
from wca.datasets import canonical_name
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
METHOD_ALIASES = {"ours": "wca"}  # the WCA authors' name for their method in their configs
# The authors' code crops with side U(0.1, 0.9) whatever alpha its config says (REFERENCE.md).
AUTHORS_CODE_ALPHA = 0.1


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
        name = METHOD_ALIASES.get(name, name)
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
    # the lower crop bound actually drawn with, where it differs from the stated alpha: the
    # authors' code used 0.1 for every published number (None: alpha)
    effective_alpha: Annotated[float, Field(gt=0, le=1)] | None = None
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

    @field_validator("crop_strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in CROP_STRATEGIES:
            raise ValueError(f"must be one of {', '.join(CROP_STRATEGIES)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _crop_bounds(self) -> EvalConfig:
        if self.crop_alpha > self.beta:
            raise ValueError(f"need alpha <= beta, got alpha={self.crop_alpha}, beta={self.beta}")
        return self

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


def _validated(data: Mapping[str, Any], source: str | Mapping[str, str]) -> EvalConfig:
    """``data`` as a config; ``source`` names where the values came from (per key, if a
    mapping: the key of the first problem picks the name)."""
    try:
        return EvalConfig.model_validate(dict(data))
    except ValidationError as error:
        if not isinstance(source, str):
            key = str(error.errors()[0]["loc"][0]) if error.errors()[0]["loc"] else ""
            source = source.get(key, "command line")
        raise _one_line(error, data, source) from None


def _merge(
    config: EvalConfig, values: Mapping[str, Any], source: str | Mapping[str, str]
) -> EvalConfig:
    return _validated({**config.model_dump(), **values}, source)


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


PACKAGED_CONFIGS = Path(__file__).parent / "configs"


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
    keys, e.g. from CLI flags, ``methods.<method>.<option>`` reaching method options; None
    values are skipped), then ``settings``
    (``KEY=VALUE`` strings; dotted keys reach method options)."""
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
        file_values, notes = _authors_file(file_values, path)
        config = _merge(config, file_values, str(path))
    if dataset is not None:
        overrides = {"dataset": dataset, **overrides}
    config = _merge(config, overrides, {key: flag_name(key) for key in overrides})
    for key, value in method_flags.items():
        config = _apply_method_override(config, key.split("."), value, flag_name(key))
    for text in settings:
        key, value = parse_override(text)
        if key[0] == "methods" and len(key) > 1:
            config = _apply_method_override(config, key, value, f"--set {text}")
        elif len(key) == 1:
            config = _merge(config, {key[0]: value}, f"--set {text}")
        else:
            raise ValueError(f"--set {text}: only methods.<method>.<option> keys have dots")
    explicit = "alpha" in overrides or any(parse_override(t)[0] == ["alpha"] for t in settings)
    if explicit and config.effective_alpha is not None:
        config = _merge(config, {"effective_alpha": None}, "command line")
        notes = [note for note in notes if "alpha" not in note]
    if config.effective_alpha is not None and config.effective_alpha != config.alpha:
        notes.append(
            f"crops drawn with alpha {config.effective_alpha}, not the stated {config.alpha}: "
            f"the authors' code crops with U({AUTHORS_CODE_ALPHA}, 0.9) whatever its config "
            "says, and the published numbers come from it; set --alpha to crop otherwise"
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


def flag_name(key: str) -> str:
    """The command-line flag that sets config key ``key`` (``methods.wca.image_scale``:
    ``--image-scale``)."""
    key = key.rsplit(".", 1)[-1]
    return {"data_path": "--data-root", "half": "--fp16-cache", "n_samples": "--n-crops"}.get(
        key, "--" + key.replace("_", "-")
    )


def _authors_file(values: dict[str, Any], path: Path) -> tuple[dict[str, Any], list[str]]:
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
