"""What an evaluation computes: every setting declared once, with its help and its group, and
resolved from defaults, a config file and overrides, all validated before any work starts.

Each field of :class:`EvalConfig` carries its description and the group it belongs to; the
command line's flags (``--n-crops`` for ``n_crops``) and their help are generated from them
(:mod:`wca.cli.settings`), and result files record them under the same names. How a run runs
(device, caches, workers) is :class:`wca.options.RunOptions`.

A config file in the WCA authors' shape loads as is (:func:`wca.configs.authors_file` reads
their keys ``model_size``, ``data_path``, ``n_samples``)::

    model_size: ViT-B/32
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
signature of its builder (:func:`wca.methods.registry.options_model`), so ``image_scale: abc``
is refused before the feature pass. Precedence: defaults (per dataset:
:data:`wca.configs.DATASET_DEFAULTS`) < file < overrides < ``KEY=VALUE`` settings
(``methods.wca.image_scale=3``, ``methods=clip,wca``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from wca import budget as anytime
from wca import defaults
from wca.budget import BudgetSpec
from wca.compat import RENAMED_SETTINGS, renamed
from wca.configs import AUTHORS_CODE_ALPHA, authors_file, config_path, dataset_defaults
from wca.crops import Alpha, Beta, CropSpec, NCrops, Seed, Strategy
from wca.errors import SettingError
from wca.method_config import (
    DEFAULT_METHODS,
    METHOD_NAMES,
    MethodConfig,
    default_methods,
    method_entries,
    with_method_option,
)
from wca.overrides import parse_setting
from wca.specs import GRAMMAR, image_spec, with_pretrained

DEFAULT_MODEL = "open_clip:ViT-B-32/openai"  # the authors' default CLIP, ViT-B/32
PositiveInt = Annotated[int, Field(ge=1)]
PROTOCOLS = ("pool", "fresh")


def group(name: str, **extra: Any) -> dict[str, Any]:
    """A field's ``json_schema_extra``: the group its flag is listed in, ``identity=True`` for a
    setting that changes a number (a result's identity, :data:`wca.results.IDENTITY`), and
    e.g. ``metavar``, ``repeatable`` for the flags a sweep repeats."""
    return {"group": name, **extra}


class EvalConfig(BaseModel):
    """Every setting of an evaluation (``wca eval``); defaults are the WCA authors' (their
    configs and code)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    model: str = Field(
        DEFAULT_MODEL,
        description=f"the model: {GRAMMAR}; `wca models` lists them",
        json_schema_extra=group("model", identity=True, metavar="SPEC", repeatable=True),
    )
    pretrained: str | None = Field(
        None,
        description="the weights of model given as an architecture, clip_benchmark's way "
        "(--model ViT-B-32 --pretrained openai, or a weights file): read as ViT-B-32/openai",
        json_schema_extra=group("model", metavar="TAG"),
    )
    aux_model: str | None = Field(
        None,
        description="a second image encoder of the same views, for the methods that read one "
        "(cosmic's fine-grained graph): hf:ORG/NAME (DINOv2: facebook/dinov2-small), a model "
        "folder, timm:NAME, or any model spec (its image tower); unset: they run without it",
        json_schema_extra=group("model", identity=True, metavar="SPEC"),
    )
    dataset: str | None = Field(
        None,
        description="the dataset's registered name (`wca datasets` lists them)",
        json_schema_extra=group("data", identity=True, metavar="NAME", repeatable=True),
    )
    data_root: str | None = Field(
        None,
        description="where the dataset is, as downloaded ({dataset} stands for each name)",
        json_schema_extra=group("data", identity=True, metavar="DIR", repeatable=True),
    )
    dataset_name: str | None = Field(
        None,
        description="the dataset's name in results",
        json_schema_extra=group(
            "data", metavar="NAME", shown="an image folder's own name, else the dataset's"
        ),
    )
    split: str | None = Field(
        None,
        description="the split to read",
        json_schema_extra=group("data", identity=True, shown="the paper's test split"),
    )
    alpha: Alpha = defaults.ALPHA
    effective_alpha: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None,
        description="the lower crop bound actually drawn with where it differs from alpha (the "
        "authors' code crops with 0.1 whatever its config says; their config files set it)",
        json_schema_extra=group("crops", identity=True),
    )
    beta: Beta = defaults.BETA
    n_crops: NCrops = 100  # the authors' pool (60 for ImageNet: DATASET_DEFAULTS)
    crop_strategy: Strategy = "random"
    crop_budget: anytime.BudgetName = "fixed"
    stop_rule: anytime.StopRuleName = "margin"
    margin_z: anytime.MarginZ = anytime.DEFAULT_MARGIN_Z
    patience: anytime.Patience = anytime.DEFAULT_PATIENCE
    min_crops: anytime.MinCrops = anytime.DEFAULT_MIN_CROPS
    crops_per_round: anytime.CropsPerRound = anytime.DEFAULT_CROPS_PER_ROUND
    seed: Seed = defaults.SEED
    fidelity: bool = Field(
        False,
        description="make views with the model's own PIL preprocessing per crop (the authors' "
        "way, slower) instead of the fast tensor path",
        json_schema_extra=group("crops", identity=True),
    )
    fp16_cache: bool = Field(
        False,
        description="store features in fp16 (half the disk)",
        json_schema_extra=group("crops", identity=True),
    )
    n_run: PositiveInt | None = Field(
        None,
        description="runs to average: crop draws, and for an online method its stream orders; "
        f"unset: {defaults.CROP_RUNS} (the authors'), or {defaults.STREAM_ORDERS} when an online "
        "method is evaluated, so that its expected tail accuracy (the mean top-1 of the worst "
        f"tenth of runs) averages {defaults.STREAM_ORDERS // 10} orders: for normally spread runs "
        "it then lands within 0.3 run-to-run std of the true tail, where 10 orders leave the "
        "worst alone, 0.6 std off; results record the count used",
        json_schema_extra=group(
            "protocol",
            identity=True,
            shown=f"{defaults.CROP_RUNS}; {defaults.STREAM_ORDERS} with an online method",
        ),
    )
    patch_n: PositiveInt = Field(
        60,
        description="crops drawn per run from the pool",
        json_schema_extra=group("protocol", identity=True),
    )
    protocol: Literal["pool", "fresh"] = Field(
        "pool",
        description="pool: each run draws patch_n crops with replacement from the pool, the same "
        "indices for every image (the authors'); fresh: each run its own crops (needs n_crops >= "
        "n_run * patch_n)",
        json_schema_extra=group("protocol", identity=True),
    )
    methods: list[MethodConfig] = Field(
        default_factory=default_methods,
        description=f"comma-separated methods, of {', '.join(METHOD_NAMES)} (`wca methods` "
        "describes them)",
        json_schema_extra=group("protocol", metavar="LIST", shown=",".join(DEFAULT_METHODS)),
    )
    _notes: list[str] = PrivateAttr(default_factory=list)  # lines for the user, see resolve
    _named: set[str] = PrivateAttr(default_factory=set)  # methods the user asked for by name

    @model_validator(mode="before")
    @classmethod
    def _join_pretrained(cls, data: Any) -> Any:
        """``model: ARCH`` with ``pretrained: TAG`` (clip_benchmark's) is ``ARCH/TAG``."""
        if isinstance(data, Mapping) and data.get("pretrained"):
            model = with_pretrained(str(data.get("model", DEFAULT_MODEL)), data["pretrained"])
            return {**data, "model": model, "pretrained": None}
        return data

    @field_validator("aux_model")
    @classmethod
    def _image_spec(cls, value: str | None) -> str | None:
        """The second encoder's spec resolved (local paths absolute), checked without loading."""
        return None if value is None else image_spec(value)

    @field_validator("dataset")
    @classmethod
    def _canonical_dataset(cls, value: str | None) -> str | None:
        from wca.datasets import canonical_name

        return None if value is None else canonical_name(value)

    @field_validator("methods", mode="before")
    @classmethod
    def _methods_shapes(cls, value: Any) -> list[dict[str, Any]]:
        return method_entries(value)

    @model_validator(mode="after")
    def _valid_crops(self) -> EvalConfig:
        """The crop settings are checked once, by :class:`~wca.crops.CropSpec`."""
        try:
            self.crops  # noqa: B018
            self.budget.stopping(self.n_crops)
        except SettingError as error:
            raise ValueError(f"{error.setting}: {error.reason}") from None
        return self

    @model_validator(mode="after")
    def _default_runs(self) -> EvalConfig:
        """``n_run`` unset: the runs its description gives, by whether a method is online."""
        if self.n_run is None:
            online = any(method.online for method in self.enabled_methods())
            self.n_run = defaults.STREAM_ORDERS if online else defaults.CROP_RUNS
        return self

    @property
    def crops(self) -> CropSpec:
        """The crop pool of the feature pass."""
        return CropSpec(
            n_crops=self.n_crops,
            alpha=self.crop_alpha,
            beta=self.beta,
            seed=self.seed,
            crop_strategy=self.crop_strategy,
        )

    @property
    def budget(self) -> BudgetSpec:
        """How many of its crops an image reads (fixed: all ``n_crops``)."""
        return anytime.budget_of(self.model_dump(include=set(BudgetSpec.model_fields)))

    @property
    def crop_alpha(self) -> float:
        """The lower bound of crop sides the feature pass draws with."""
        return self.alpha if self.effective_alpha is None else self.effective_alpha

    @property
    def notes(self) -> list[str]:
        """What resolving the settings chose that a user should know (printed by the CLI)."""
        return list(self._notes)

    def named(self, method: str) -> bool:
        """Whether ``method`` was asked for by name (a methods list in a file or the
        overrides, ``methods.<name>...`` settings) rather than being one of the defaults: a
        named method whose texts are missing is an error, a default one is skipped."""
        return method in self._named

    def enabled_methods(self) -> list[MethodConfig]:
        return [method for method in self.methods if method.enabled]

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values, under their names, every method's options resolved
        (defaults included), so that equal settings always compare equal."""
        budget = set(BudgetSpec.model_fields)  # recorded where they change a number
        data = self.model_dump(exclude={"methods", "pretrained", *budget})  # pretrained: model
        data.update(anytime.recorded(self.model_dump(include=budget)))
        data["effective_alpha"] = self.crop_alpha
        data["methods"] = [
            {m.name: {"name": m.name, "enabled": m.enabled, **m.resolved_options(self.dataset)}}
            for m in self.methods
        ]
        return data


def check_protocol(n_crops: int, n_run: int, patch_n: int, protocol: str) -> None:
    """Whether the runs can be drawn from the pool: ``fresh`` needs ``n_run * patch_n``
    distinct crops per image (a SettingError naming the setting otherwise)."""
    if protocol not in PROTOCOLS:
        raise SettingError("protocol", f"must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if n_run < 1 or patch_n < 1:
        raise SettingError("n_run", f"n_run and patch_n must be >= 1, got {n_run} and {patch_n}")
    if protocol == "fresh" and n_run * patch_n > n_crops:
        raise SettingError(
            "protocol",
            f"'fresh' needs n_run * patch_n = {n_run * patch_n} crops per image, the pool has "
            f"n_crops = {n_crops}: extract more n_crops or lower n_run/patch_n",
        )


def _first_problem(error: ValidationError, data: Mapping[str, Any]) -> SettingError:
    """The first problem of a validation error as a :class:`SettingError` naming the setting
    (a method by its name, not its place in the list)."""
    first = error.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    loc = [part for part in first["loc"] if part != "options"]
    if not loc:  # a check of the whole config names its setting first: "alpha: must be ..."
        key, _, rest = message.partition(": ")
        if key in EvalConfig.model_fields:
            loc, message = [key], rest
    if len(loc) > 1 and loc[0] == "methods" and isinstance(loc[1], int):
        with contextlib.suppress(ValueError, IndexError, KeyError):
            loc[1] = method_entries(data["methods"])[loc[1]]["name"]
        if len(loc) == 2:  # the method itself (not one of its options): the methods setting
            loc, message = ["methods"], f"{loc[1]}: {message}"
    if first["type"] == "extra_forbidden":
        known = f" (known: {', '.join(EvalConfig.model_fields)})" if len(loc) == 1 else ""
        message = f"unknown setting{known}"
    elif "input" in first and first["type"] not in ("value_error", "assertion_error"):
        message += f", got {first['input']!r}"
    return SettingError(".".join(map(str, loc)) or "settings", message)


def _validated(data: Mapping[str, Any], source: str | None) -> EvalConfig:
    """``data`` as a config; errors name ``source`` (a file, ``KEY=VALUE``) before the
    setting, or the setting alone (a :class:`SettingError`: the CLI adds its flag)."""
    try:
        return EvalConfig.model_validate(dict(data))
    except (ValidationError, SettingError) as error:
        problem = _first_problem(error, data) if isinstance(error, ValidationError) else error
        if source is None:
            raise problem from None
        raise ValueError(f"{source}: {problem}") from None




def resolve_config(
    dataset: str | None = None,
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    settings: Iterable[str] = (),
) -> EvalConfig:
    """Defaults for the dataset, then the file at ``path``, then ``overrides`` (settings by
    name, e.g. from flags; ``methods.<method>.<option>`` keys reach method options; None
    values are skipped), then ``settings`` (``KEY=VALUE`` strings). Errors name the file or
    the ``KEY=VALUE`` they came from; an override's error is a :class:`SettingError` naming
    the setting. Old setting names are accepted with a deprecation notice."""
    parsed = [(text, *parse_setting(text)) for text in settings]
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    overrides = renamed(overrides, RENAMED_SETTINGS, "setting")
    file_values, notes = authors_file(config_path(path)) if path is not None else ({}, [])
    named = dataset or overrides.get("dataset") or file_values.get("dataset")
    named = next((value for _, key, value in parsed if key == ["dataset"]), named)
    values = dataset_defaults(named)
    _validated(values, "defaults")
    values.update(file_values)
    config = _validated(values, None if path is None else str(config_path(path)))
    values.update({k: v for k, v in overrides.items() if not k.startswith("methods.")})
    if dataset is not None:
        values["dataset"] = dataset
    config = _validated(values, None)
    for key, value in overrides.items():
        if key.startswith("methods."):
            values = with_method_option(values, key.split("."), value, key)
            config = _validated(values, None)
    for text, key, value in parsed:
        if key[0] == "methods" and len(key) > 1:
            values = with_method_option(values, key, value, text)
        elif len(key) == 1:
            values = renamed({**values, key[0]: value}, RENAMED_SETTINGS, text)
        else:
            raise ValueError(f"{text}: only methods.<method>.<option> keys have dots")
        config = _validated(values, text)
    explicit = "alpha" in overrides or any(key == ["alpha"] for _, key, _ in parsed)
    if explicit and config.effective_alpha is not None:
        config = _validated({**values, "effective_alpha": None}, None)
        notes = [note for note in notes if "alpha" not in note]
    if config.effective_alpha is not None and config.effective_alpha != config.alpha:
        notes.append(
            f"crops drawn with alpha {config.effective_alpha}, not the stated {config.alpha}: "
            f"the authors' code crops with U({AUTHORS_CODE_ALPHA}, 0.9) whatever its config "
            "says, and the published numbers come from it; set alpha to crop otherwise"
        )
    config._notes = notes
    config._named = _named_methods(file_values, overrides, parsed)
    return config


def _named_methods(file_values, overrides, parsed) -> set[str]:
    named: set[str] = set()
    for values in (file_values, overrides):
        if "methods" in values:
            named = {entry["name"] for entry in method_entries(values["methods"])}
    named |= {key.split(".")[1] for key in overrides if key.startswith("methods.")}
    for _, key, value in parsed:
        if key == ["methods"]:
            named = {entry["name"] for entry in method_entries(value)}
        elif key[0] == "methods" and len(key) > 1:
            named.add(key[1])
    return named
