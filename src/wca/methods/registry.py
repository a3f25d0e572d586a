"""The method registry: ``register_method(name)`` binds a head builder to a name (as timm's
model registry does), ``build_head(name, encoder, sources, **options)`` builds one.

A builder takes ``encode_texts`` (a list of strings -> L2-normalised ``[T, D]``), the task's
:class:`~wca.methods.sources.TextSources` and its own keyword options, and returns a
:class:`Head`. ``build_head`` takes the encoder itself (or its ``encode_texts``), so that the
heads with a temperature (``logit_scale``: zero, mta, awt) get the model's own.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from wca.compat import RENAMED_SETTINGS, renamed
from wca.dataset_names import dataset_key
from wca.descriptions.io import duplicate_names
from wca.methods.base import Head
from wca.methods.sources import TextSources
from wca.registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

EncodeTexts = Callable[[list[str]], "Tensor"]


class TextEncoder(Protocol):
    """What ``build_head`` reads of an encoder (:class:`wca.encoders.Encoder` is one)."""

    logit_scale: float

    def encode_texts(self, texts: list[str]) -> Tensor: ...


class MissingTextSource(ValueError):
    """A method needs a text file (templates, descriptors, a word list) the task lacks;
    ``what`` names it."""

    what: str = "texts"


class DuplicateClassNames(ValueError):
    """Two classes share a name; ``setting`` is the option that allows it (front ends name
    their own flag for it)."""

    setting = "allow_duplicate_classes"


def require(value, method: str, what: str):
    if value is None:
        error = MissingTextSource(
            f"method {method!r} needs {what}, which this description source lacks"
        )
        error.what = what
        raise error
    return value


MethodBuilder = Callable[..., Head]
METHODS: Registry[MethodBuilder] = Registry("method")


@dataclass(frozen=True)
class PerDataset:
    """A method whose options default per dataset (its ``dataset`` option): the datasets its
    authors gave values for, and whose values run elsewhere. Called with a task's dataset, it
    names the dataset whose values run (what results record: ``dataset=imagenet`` is
    ImageNet's values, whatever the images). ``on_texts``: the values of an option that acts
    on the texts alone, ``{option: {dataset: value}}`` (the head keeps no such value: the
    methods guide reads them here)."""

    tuned: tuple[str, ...]
    fallback: str = "imagenet"
    on_texts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, compare=False)

    def __call__(self, dataset: str | None) -> str:
        key = dataset_key((dataset or self.fallback).rsplit("/", 1)[-1])  # wds/vtab/dtd: dtd
        return key if key in self.tuned else self.fallback

    def describe(self) -> str:
        return f"the authors' values for {', '.join(self.tuned)}; {self.fallback}'s elsewhere"


# The methods with per-dataset values (registered with them), by name.
PER_DATASET: dict[str, PerDataset] = {}
# Each method's one-line summary (`wca methods`), by name.
SUMMARIES: dict[str, str] = {}


def register_method(
    name: str, per_dataset: PerDataset | None = None, summary: str = ""
) -> Callable[[MethodBuilder], MethodBuilder]:
    """Register a head builder under ``name`` (a name is registered once) with its one-line
    ``summary``; ``per_dataset``: its options default per dataset (a ``dataset`` option)."""

    def add(builder: MethodBuilder) -> MethodBuilder:
        METHODS.register(name, builder)
        SUMMARIES[name] = summary or (builder.__doc__ or name).strip().splitlines()[0]
        if per_dataset is not None:
            PER_DATASET[name] = per_dataset
        return builder

    return add


def head_class(name: str) -> type[Head]:
    """The head class method ``name``'s builder returns (its return annotation, evaluated
    alone: the other annotations may name torch types, imported for type checkers only)."""
    builder = METHODS[name]
    returned = inspect.signature(builder).return_annotation
    namespace = types.SimpleNamespace(__annotations__={"return": returned})
    return typing.get_type_hints(namespace, inspect.unwrap(builder).__globals__)["return"]


def build_head(
    method: str,
    encoder: TextEncoder | EncodeTexts,
    sources: TextSources,
    allow_duplicate_classes: bool = False,
    **options,
) -> Head:
    """Build the text side of ``method`` (a name in :data:`METHODS`) for the given classes.

    ``encoder``: an encoder (``encode_texts`` and ``logit_scale``), its bound ``encode_texts``,
    or any function from texts to unit vectors. The heads that take a ``logit_scale`` get the
    encoder's unless ``options`` give one; a plain function has none, and they keep CLIP's 100.
    Duplicate class names are an error unless ``allow_duplicate_classes`` (such classes can
    never be told apart: the published ImageNet names have "missile" and "sunglasses" twice).
    """
    options = renamed(options, RENAMED_SETTINGS, "build_head")
    allow_duplicate_classes = options.pop("allow_duplicate_classes", allow_duplicate_classes)
    METHODS.get_entry(method)  # an unknown name: one line listing the known ones
    duplicates = duplicate_names(sources.names(method))
    if duplicates and not allow_duplicate_classes:
        raise DuplicateClassNames(
            f"duplicate class names for {method}: {', '.join(map(repr, duplicates))} (such "
            "classes can never be told apart; allow them explicitly with allow_duplicate_classes)"
        )
    encode_texts, scale = unpack_encoder(encoder)
    if scale is not None and "logit_scale" in options_model(method).model_fields:
        options.setdefault("logit_scale", scale)
    try:
        options = options_model(method).model_validate(options).model_dump(exclude_unset=True)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(map(str, first["loc"]))
        if first["type"] == "extra_forbidden":
            takes = ", ".join(options_model(method).model_fields) or "none"
            raise ValueError(f"method {method!r} has no option {where}; it takes {takes}") from None
        got = first["input"]
        raise ValueError(f"method {method!r}: {where}: {first['msg']}, got {got!r}") from None
    return METHODS[method](encode_texts, sources, **options)


def unpack_encoder(encoder: TextEncoder | EncodeTexts) -> tuple[EncodeTexts, float | None]:
    """``(encode_texts, logit_scale)`` of an encoder or of its bound ``encode_texts``; a plain
    function has no scale (None)."""
    if hasattr(encoder, "encode_texts"):
        owner, encode_texts = encoder, encoder.encode_texts
    else:
        owner, encode_texts = getattr(encoder, "__self__", None), encoder
    scale = getattr(owner, "logit_scale", None)
    return encode_texts, None if scale is None else float(scale)


def option_annotations(builder: MethodBuilder) -> dict[str, tuple[Any, Any]]:
    """``{option: (type, default)}`` of a builder: every parameter after ``encode_texts`` and
    ``sources``, its annotation evaluated in the builder's own module. Only the options' are
    evaluated: the others may name torch types, imported for type checkers alone, so that
    the options are known without torch."""
    parameters = {
        name: parameter
        for name, parameter in inspect.signature(builder).parameters.items()
        if name not in ("encode_texts", "sources")
    }
    annotations = {
        name: p.annotation for name, p in parameters.items() if p.annotation is not p.empty
    }
    module = inspect.unwrap(builder).__globals__
    hints = typing.get_type_hints(
        types.SimpleNamespace(__annotations__=annotations), module, include_extras=True
    )
    return {name: (hints.get(name, Any), p.default) for name, p in parameters.items()}


@functools.cache
def options_model(name: str) -> type[BaseModel]:
    """A pydantic model of method ``name``'s options, from its builder's typed signature
    (:func:`option_annotations`): options from the API, a config file, ``--set`` or a flag
    are all checked by it."""
    config = ConfigDict(extra="forbid", allow_inf_nan=False)
    return create_model(f"{name}-options", __config__=config, **option_annotations(METHODS[name]))
