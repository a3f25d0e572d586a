"""Flags made from the settings' own declarations: one flag per field of
:class:`wca.config.EvalConfig`, :class:`wca.options.RunOptions` or :class:`wca.crops.CropSpec`,
named after the field (``n_crops``: ``--n-crops``), typed by its annotation, listed under its
group, with its description as help and its default (and the authors' per-dataset values) shown
from the field. A flag not given is None, so files and per-dataset defaults still apply.

Old flags (:data:`wca.compat.RENAMED_FLAGS`) are translated before parsing
(:func:`wca.compat.renamed_flags`), with a one-line deprecation notice.
"""

from __future__ import annotations

import argparse
import enum
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

TITLES = {
    "model": "model",
    "data": "data",
    "crops": "crops",
    "protocol": "protocol and methods",
    "run": "model and speed",
    "output": "output",
}


def flag_of(name: str) -> str:
    """The flag of setting ``name`` (``methods.wca.image_scale``: ``--image-scale``)."""
    return "--" + name.rsplit(".", 1)[-1].replace("_", "-")


def _scalar(annotation: Any) -> tuple[Any, tuple | None]:
    """``(type, choices)`` of a field's annotation for argparse: Optional and Annotated
    unwrapped, a Literal as its choices, anything else (lists, models) read as a string."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _scalar(options[0]) if len(options) == 1 else (str, None)
    if origin is Literal:
        return type(typing.get_args(annotation)[0]), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return str, tuple(member.value for member in annotation)
    if annotation in (int, float, bool, str):
        return annotation, None
    return (Path if annotation is Path else str), None


def shown_default(field: Any) -> str:
    """How a field's default reads in help: its ``shown`` text, else the value."""
    extra = field.json_schema_extra or {}
    if "shown" in extra:
        return str(extra["shown"])
    default = field.default
    if default is PydanticUndefined or default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def per_dataset_note(name: str, per_dataset: Mapping[str, Mapping[str, Any]]) -> str:
    """``; imagenet, imagenet-a: 60`` for the datasets whose defaults differ for ``name``."""
    values: dict[Any, list[str]] = {}
    for dataset, settings in per_dataset.items():
        if name in settings:
            values.setdefault(settings[name], []).append(dataset)
    return "".join(f"; {', '.join(names)}: {value}" for value, names in values.items())


def group_of(parser: argparse.ArgumentParser, name: str) -> argparse._ArgumentGroup:
    """The parser's argument group ``name`` (made once; titles: :data:`TITLES`)."""
    groups = parser.__dict__.setdefault("_wca_groups", {})
    if name not in groups:
        groups[name] = parser.add_argument_group(TITLES.get(name, name))
    return groups[name]


def add_settings(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    groups: Iterable[str] | None = None,
    *,
    names: Iterable[str] | None = None,
    repeatable: bool = False,
    per_dataset: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Add a flag for every field of ``model`` in ``groups`` (or of ``names``); ``repeatable``:
    the fields that declare it take the flag several times (a sweep)."""
    groups, names = (set(groups) if groups else None), (set(names) if names else None)
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra or {}
        if (groups is not None and extra.get("group") not in groups) or (
            names is not None and name not in names
        ):
            continue
        kind, choices = _scalar(field.annotation)
        many = repeatable and extra.get("repeatable", False)
        help_text = f"{field.description} (default: {shown_default(field)}"
        help_text += per_dataset_note(name, per_dataset or {}) + ")"
        options: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options.update(type=kind, metavar=extra.get("metavar"), choices=choices)
            if many:
                options["action"] = "append"
                options["help"] = "repeatable; " + help_text
        group_of(parser, extra.get("group", "settings")).add_argument(flag_of(name), **options)


def given(
    args: argparse.Namespace, model: type[BaseModel], names: Iterable[str] | None = None
) -> dict[str, Any]:
    """The settings of ``model`` (or those of ``names``) whose flags were given."""
    return {
        name: getattr(args, name)
        for name in (model.model_fields if names is None else names)
        if getattr(args, name, None) is not None
    }
