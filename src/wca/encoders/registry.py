"""Model specs to encoders, through a registry of backends by prefix.

The spec grammar (``BACKEND:MODEL``, open_clip's ``ARCH/TAG``, a path whose backend is told by
what is on disk, a named model such as ``demo``) is :mod:`wca.specs`; here a resolved
``BACKEND:MODEL`` finds its loader.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import torch

from wca import defaults, specs
from wca.encoders.base import Encoder, resolve_batch_size, resolve_device, resolve_precision
from wca.registry import Registry
from wca.specs import CHECKPOINT_SUFFIXES as CHECKPOINT_SUFFIXES  # re-exported
from wca.specs import EXAMPLES, resolve

log = logging.getLogger("wca")
resolve_spec = resolve  # the grammar's one home is wca.specs
THIRD_PARTY_LOGGERS = ("transformers", "huggingface_hub", "open_clip", "timm")


class BackendLoader(Protocol):
    """Loads the model named by ``model`` (the spec without its prefix) as an :class:`Encoder`."""

    def __call__(
        self,
        spec: str,
        model: str,
        *,
        device: torch.device,
        precision: str,
        batch_size: int,
    ) -> Encoder: ...


BACKENDS: Registry[BackendLoader] = Registry("model backend")
# Per backend: (form, what it names, one example), for `wca models`.
SPEC_FORMS: dict[str, tuple[tuple[str, str, str], ...]] = {}
# Named models: name -> (what it is, a function giving its BACKEND:MODEL spec).
NAMED_MODELS = specs.NAMED
# The forms that need no backend prefix, for `wca models` and the --model help texts.
BARE_FORMS = (
    ("ARCH/TAG", "an open_clip.list_pretrained() pair (open_clip:ARCH/TAG); also "
     "--model ARCH --pretrained TAG", "ViT-B-32/openai"),
    ("/path/file.pt", "a checkpoint file (.pt, .pth, .bin, .ckpt, .safetensors): OpenAI-format "
     "CLIP weights, loaded by open_clip", "~/models/ViT-B-32.pt"),
    ("/path/folder", "a model folder: transformers (config.json) or open_clip "
     "(open_clip_config.json)", "./my-clip"),
)  # fmt: skip


def register_backend(
    prefix: str, forms: tuple[tuple[str, str, str], ...] = ()
) -> Callable[[BackendLoader], BackendLoader]:
    """Register a loader for specs ``prefix:MODEL``, with the spec ``forms`` it accepts
    (``(form, what it names, example)`` each, listed by `wca models`)."""

    def register(loader: BackendLoader) -> BackendLoader:
        BACKENDS.register(prefix, loader)
        specs.PREFIXES.add(prefix)
        SPEC_FORMS[prefix] = tuple(forms)
        return loader

    return register


def register_named_model(name: str, what: str, spec: Callable[[], str]) -> None:
    """Make ``name`` a model spec of its own, standing for ``spec()`` (computed when loaded)."""
    if name in BACKENDS:
        raise ValueError(f"a model name {name!r} is already registered (as a backend)")
    NAMED_MODELS.register(name, (what, spec))


def split_spec(spec: str) -> tuple[str, str]:
    """``"open_clip:ViT-B-32/openai"`` -> ``("open_clip", "ViT-B-32/openai")``, checked."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            f"model spec {spec!r} is malformed: expected BACKEND:MODEL, e.g. {EXAMPLES}"
        )
    prefix, model = spec.split(":", 1)
    if prefix not in BACKENDS:
        raise ValueError(
            f"model spec {spec!r}: unknown backend {prefix!r} "
            f"(known: {', '.join(sorted(BACKENDS))})"
        )
    if not model.strip() or model != model.strip():
        raise ValueError(
            f"model spec {spec!r} is malformed: no model after {prefix!r} "
            f"or surrounding spaces, e.g. {EXAMPLES}"
        )
    return prefix, model


def load_encoder(
    spec: str,
    device: str | torch.device = defaults.DEVICE,
    precision: str = defaults.PRECISION,
    batch_size: int | None = None,
    text_cache: bool | str | Path = True,
) -> Encoder:
    """Load the model named by ``spec`` as an :class:`Encoder` (spec forms: ``wca models``).

    ``device`` is ``auto`` (cuda, then mps, then cpu) or a torch device; ``precision`` is fp32,
    fp16 (not on the CPU) or bf16; ``batch_size`` (images or texts per forward pass) defaults
    to ``wca.defaults.BATCH_SIZE``, as in the CLI; ``text_cache`` is ``True`` (text embeddings
    cached on disk in ``wca.defaults.cache_dir("texts")``), a folder, or ``False`` (memory
    only). Warnings and errors that the model libraries log while loading are not printed:
    a failure's message includes their gist, and a success logs them at debug level.
    """
    resolved_spec, inferred = resolve_spec(spec)
    if inferred:
        log.debug("model %s: %s, loaded as %s", spec, inferred, resolved_spec)
    prefix, model = split_spec(resolved_spec)
    resolved = resolve_device(device)
    resolve_precision(precision, resolved)
    size = resolve_batch_size(batch_size)
    with held_library_logs() as records:
        try:
            encoder = BACKENDS[prefix](
                resolved_spec, model, device=resolved, precision=precision, batch_size=size
            )
        except Exception as error:
            _add_gist(error, records)
            raise
    for record in records:
        log.debug("while loading %s, %s said: %s", resolved_spec, _source(record), _gist(record))
    encoder.text_cache_dir = text_cache
    return encoder


class _Held(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def held_library_logs() -> Iterator[list[logging.LogRecord]]:
    """Hold the warnings and errors that libraries log (open_clip logs through the root logger,
    transformers through its own handler) instead of printing them; yields the records. The
    root logger having a handler also keeps ``logging.error`` from calling ``basicConfig``."""
    records: list[logging.LogRecord] = []
    held = _Held(records)
    loggers = [logging.getLogger()] + [
        logging.getLogger(name) for name in THIRD_PARTY_LOGGERS if logging.getLogger(name).handlers
    ]
    saved = [logger.handlers for logger in loggers]
    for logger in loggers:
        logger.handlers = [held]
    try:
        yield records
    finally:
        for logger, handlers in zip(loggers, saved, strict=True):
            logger.handlers = handlers


def _source(record: logging.LogRecord) -> str:
    """The library that logged ``record``: its logger's top name, else its file's package."""
    if record.name != "root":
        return record.name.split(".")[0]
    return Path(record.pathname).parent.name or "a library"


def _gist(record: logging.LogRecord) -> str:
    """The first sentence of a log message, on one line and at most 200 characters."""
    text = " ".join(record.getMessage().split())
    end = text.find(". ", 20)
    text = text if end < 0 else text[: end + 1]
    return text if len(text) <= 200 else text[:197] + "..."


def _add_gist(error: Exception, records: list[logging.LogRecord]) -> None:
    """Fold the most severe held log line into ``error``'s one-line message (unless the
    message already says it), so the user sees one line, not a library's log and ours."""
    if not records or len(error.args) != 1 or not isinstance(error.args[0], str):
        return
    worst = max(records, key=lambda record: record.levelno)
    gist = _gist(worst)
    if gist[:60] in error.args[0]:
        return
    error.args = (f"{error.args[0]} ({_source(worst)} logged: {gist})",)
