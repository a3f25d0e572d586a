"""Which methods an evaluation runs and with which options: the ``methods`` setting in any of
its shapes (a comma-separated string, a list of names or ``{name: {options}}`` mappings, the
WCA authors' list of one-key mappings), each method validated by its head builder's typed
options (:func:`wca.methods.registry.options_model`, imported when validating, not before)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_METHODS = ("clip", "clip-e", "clip-d", "waffle", "cupl", "wca")
METHOD_ALIASES = {"ours": "wca"}  # the WCA authors' name for their method in their configs
# Every registered method, for help texts that import no method (tests/cli/test_listings.py
# checks it against wca.methods.METHODS); `wca methods` describes them.
METHOD_NAMES = (
    *DEFAULT_METHODS, "wca-uniform-crops", "wca-uniform-text", "wca-full-view", "wca-paper",
    "bifta", "zero", "mta", "awt", "lazsl", "tda", "tda+wca", "dmn", "boostadapter", "onzeta",
    "dota", "dota+wca", "ecalp", "ecalp+wca", "bca", "bca+wca", "oga", "oga+wca", "cosmic",
    "cosmic+wca",
)  # fmt: skip


class MethodConfig(BaseModel):
    """One method of the evaluation: its registry name, whether it runs, its head options
    (only those set explicitly, validated and coerced by
    :func:`wca.methods.registry.options_model`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_options(self) -> MethodConfig:
        from wca.methods.registry import METHODS, options_model  # the heads: when validating

        METHODS.get_entry(self.name)  # an unknown name: one line listing the known ones
        options = options_model(self.name).model_validate(self.options)
        self.options = options.model_dump(exclude_unset=True)
        return self

    @property
    def online(self) -> bool:
        """Whether the method keeps a memory over a stream of images (its runs are stream
        orders; its head's declared capability)."""
        from wca.methods.registry import head_class

        return head_class(self.name).online

    def resolved_options(self, dataset: str | None = None) -> dict[str, Any]:
        """Every option of the method, defaults included (what a result file records); a
        temperature left unset is the model's own (``"model"``); a method with per-dataset
        values names the dataset whose values run on ``dataset``'s images
        (:class:`wca.methods.registry.PerDataset`: ``imagenet`` for an image folder)."""
        from wca.methods.registry import PER_DATASET, options_model

        model = options_model(self.name)
        resolved = model.model_validate(self.options).model_dump(mode="json")
        if "logit_scale" in model.model_fields and "logit_scale" not in self.options:
            resolved["logit_scale"] = "model"
        if self.name in PER_DATASET:
            resolved["dataset"] = PER_DATASET[self.name](self.options.get("dataset") or dataset)
        return resolved

    def head_options(self, dataset: str | None = None) -> dict[str, Any]:
        """The options the head is built with: those set, and the dataset whose values run
        (the one :meth:`resolved_options` records)."""
        options = dict(self.options)
        if "dataset" in options or dataset is not None:
            resolved = self.resolved_options(dataset).get("dataset")
            options.update({} if resolved is None else {"dataset": resolved})
        return options


def default_methods() -> list[MethodConfig]:
    return [MethodConfig(name=name) for name in DEFAULT_METHODS]


def method_entries(value: Any) -> list[dict[str, Any]]:
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
        name = METHOD_ALIASES.get(name, name)
        entries.append({"name": name, "enabled": enabled, "options": body})
    if not entries:
        raise ValueError("no method listed")
    return entries


def with_method_option(values: dict[str, Any], path: list[str], value: Any, source: str):
    """``values`` with ``methods.<name>.<option>=value`` (``enabled`` switches a method)."""
    if len(path) != 3:
        raise ValueError(f"{source}: use methods.<method>.<option>=VALUE")
    _, name, option = path
    methods = method_entries(values.get("methods", list(DEFAULT_METHODS)))
    target = next((m for m in methods if m["name"] == name), None)
    if target is None:
        target = {"name": name, "enabled": True, "options": {}}
        methods.append(target)
    if option == "enabled":
        target["enabled"] = value
    else:
        target["options"][option] = value
    return {**values, "methods": methods}
