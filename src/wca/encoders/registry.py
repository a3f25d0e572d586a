"""Model specs (``BACKEND:MODEL``) to encoders, through a registry of backends by prefix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from wca.encoders.base import Encoder, resolve_batch_size, resolve_device, resolve_precision


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


BACKENDS: dict[str, BackendLoader] = {}
# Per backend: (form, what it names, one example), for `wca models`.
SPEC_FORMS: dict[str, tuple[tuple[str, str, str], ...]] = {}
EXAMPLES = (
    "open_clip:ViT-B-32/openai, open_clip:/path/to/ViT-B-32.pt, hf:openai/clip-vit-base-patch32"
)


def register_backend(
    prefix: str, forms: tuple[tuple[str, str, str], ...] = ()
) -> Callable[[BackendLoader], BackendLoader]:
    """Register a loader for specs ``prefix:MODEL``, with the spec ``forms`` it accepts
    (``(form, what it names, example)`` each, listed by `wca models`)."""

    def register(loader: BackendLoader) -> BackendLoader:
        if prefix in BACKENDS:
            raise ValueError(f"a model backend {prefix!r} is already registered")
        BACKENDS[prefix] = loader
        SPEC_FORMS[prefix] = tuple(forms)
        return loader

    return register


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
    device: str | torch.device = "auto",
    precision: str = "fp32",
    batch_size: int | None = None,
) -> Encoder:
    """Load the model named by ``spec`` as an :class:`Encoder` (spec forms: ``wca models``).

    ``device`` is ``auto`` (cuda, then mps, then cpu) or a torch device; ``precision`` is fp32,
    fp16 (not on the CPU) or bf16; ``batch_size`` defaults to a per-device value.
    """
    prefix, model = split_spec(spec)
    resolved = resolve_device(device)
    resolve_precision(precision, resolved)
    size = resolve_batch_size(batch_size, resolved)
    return BACKENDS[prefix](spec, model, device=resolved, precision=precision, batch_size=size)
