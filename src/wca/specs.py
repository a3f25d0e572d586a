"""Model specs: the one grammar every command and the API read, the names results give them,
and the local weights file they load, told without a network or a model library.

A spec is any of:

- ``BACKEND:MODEL`` (``open_clip:ViT-B-32/openai``, ``open_clip:hf-hub:ORG/NAME``,
  ``open_clip:ARCH@/path/weights.pt``, ``open_clip:/path/file.pt``, ``hf:ORG/NAME``, ``hf:DIR``);
- open_clip's own ``ARCH/TAG`` (``ViT-B-32/openai``), read as ``open_clip:ARCH/TAG``;
- clip_benchmark's ``--model ARCH --pretrained TAG`` (or a weights file), joined by
  :func:`with_pretrained`;
- a path to a checkpoint file or a model folder (its backend told by what is on disk);
- a named model (``demo``: the shipped demo model).

:func:`resolve` turns any of them into ``BACKEND:MODEL`` with local paths absolute (the same
model from any folder); :func:`model_fields` gives clip_benchmark's ``model`` and ``pretrained``
and :func:`label` the short name tables and file names use (``ViT-B-32 openai``, a weights
file by its stem, never a path).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from wca import defaults
from wca.registry import Registry

OPEN_CLIP_BIN = "open_clip_pytorch_model.bin"
# The backends' prefixes; wca.encoders.registry adds any other it registers (a test checks
# that the two agree), so that reading a spec imports no model library.
PREFIXES = {"open_clip", "hf"}
IMAGE_PREFIXES = {"timm"}  # backends of image-only models (wca.encoders.vision)
IMAGE_EXAMPLES = "hf:facebook/dinov2-small, a model folder, timm:NAME or timm:NAME@/path/weights"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
CHECKPOINT_FILES = ".pt/.pth/.bin/.ckpt/.safetensors"
# The spec forms, written out here so that help texts import no model library; a test checks
# them against wca.encoders.registry (SPEC_FORMS).
MODEL_FORMS = (
    "open_clip:ARCH/TAG",
    "open_clip:hf-hub:ORG/NAME",
    "open_clip:ARCH@/path/weights.pt",
    "open_clip:/path/file.pt",
    "open_clip:local-dir:/path/folder",
    "hf:ORG/NAME",
    "hf:/path/folder",
)
# Named models: name -> (what it is, a function giving its BACKEND:MODEL spec).
NAMED: Registry[tuple[str, Callable[[], str]]] = Registry("named model")
NAMED.register("demo", ("the shipped demo model", lambda: f"open_clip:{defaults.demo_model()}"))
NAMED_MODELS = {name: what for name, (what, _) in NAMED.items()}
EXAMPLES = (
    "ViT-B-32/openai, open_clip:/path/to/ViT-B-32.pt, hf:openai/clip-vit-base-patch32, "
    "a path to a .pt/.safetensors file or a model folder, or demo"
)
GRAMMAR = (
    f"open_clip's ARCH/TAG, {', '.join(MODEL_FORMS)}, a bare path to a {CHECKPOINT_FILES} "
    "file or a model folder (backend inferred), or "
    + ", ".join(f"{name} ({what})" for name, what in NAMED_MODELS.items())
)
_PAIR = re.compile(r"[A-Za-z0-9][\w.+-]*/[\w.+-]+")  # ARCH/TAG: one slash, no scheme


def with_pretrained(model: str, pretrained: str | None) -> str:
    """clip_benchmark's ``--model ARCH --pretrained TAG`` as one spec: ``ARCH/TAG``, or
    ``open_clip:ARCH@FILE`` when ``pretrained`` is a weights file."""
    if not pretrained:
        return model
    if ":" in model or "/" in model or Path(model).suffix.lower() in CHECKPOINT_SUFFIXES:
        raise ValueError(
            f"pretrained {pretrained!r} goes with an architecture (model ViT-B-32, pretrained "
            f"openai), not with the model spec {model!r}"
        )
    looks_like_file = Path(pretrained).suffix.lower() in CHECKPOINT_SUFFIXES
    if looks_like_file or "/" in pretrained or Path(pretrained).expanduser().is_file():
        return f"open_clip:{model}@{_absolute(pretrained)}"
    return f"open_clip:{model}/{pretrained}"


def _absolute(path: str) -> str:
    return os.path.abspath(Path(path).expanduser())


def _local(path: str) -> Path | None:
    """``path`` made absolute when it names something that exists (a file or a folder)."""
    candidate = Path(path).expanduser()
    return candidate.resolve() if candidate.exists() else None


def absolute_spec(spec: str) -> str:
    """``BACKEND:MODEL`` with a relative local path in it made absolute: ``open_clip:ARCH@FILE``,
    ``open_clip:FILE``, ``open_clip:local-dir:DIR`` and ``hf:DIR``."""
    prefix, _, model = spec.partition(":")
    if prefix == "open_clip" and "@" in model and not model.startswith("hf-hub:"):
        arch, path = model.split("@", 1)
        local = _local(path)
        return f"{prefix}:{arch}@{local}" if local else spec
    if prefix == "open_clip" and model.startswith("local-dir:"):
        local = _local(model.removeprefix("local-dir:"))
        return f"{prefix}:local-dir:{local}" if local else spec
    local = _local(model) if model and ("/" in model or "." in model) else None
    if prefix in PREFIXES and local is not None:
        return f"{prefix}:{local}"
    return spec


def resolve(spec: str) -> tuple[str, str | None]:
    """The ``BACKEND:MODEL`` spec that ``spec`` stands for (local paths absolute) and what was
    inferred (None when ``spec`` already was one). Raises a one-line error for a path that is
    missing, a folder whose backend cannot be told or a malformed spec (an unknown backend is
    the registry's to tell: :func:`wca.encoders.registry.split_spec`)."""
    if not isinstance(spec, str):
        raise ValueError(f"model spec {spec!r} is not a string, e.g. {EXAMPLES}")
    if spec in NAMED:
        what, named = NAMED[spec]
        return named(), what
    prefix, colon, model = spec.partition(":")
    if colon and prefix in PREFIXES:
        if not model.strip() or model != model.strip():
            raise ValueError(
                f"model spec {spec!r} is malformed: no model after {prefix!r} or surrounding "
                f"spaces, e.g. {EXAMPLES}"
            )
        return absolute_spec(spec), None
    if spec.strip() and Path(spec).expanduser().exists():
        return _local_spec(Path(_absolute(spec)))
    if not colon and (
        spec.startswith(("/", ".", "~")) or spec.lower().endswith(CHECKPOINT_SUFFIXES)
    ):
        raise FileNotFoundError(f"model {spec}: no such checkpoint file or model folder")
    if not colon and _PAIR.fullmatch(spec):
        return f"open_clip:{spec}", "open_clip's ARCH/TAG pair (a Hugging Face model: hf:ORG/NAME)"
    if colon and re.fullmatch(r"[a-z_][\w-]*", prefix):
        return spec, None  # another backend's: the registry knows it, or says it does not
    raise ValueError(
        f"model spec {spec!r} is malformed: expected ARCH/TAG, BACKEND:MODEL, a path or a named "
        f"model (an architecture takes its weights as ARCH/TAG or with pretrained), e.g. {EXAMPLES}"
    )


def image_spec(spec: str) -> str:
    """An image model's spec (a second encoder, :mod:`wca.encoders.vision`) as ``BACKEND:MODEL``:
    any model spec, or ``timm:NAME`` / ``timm:NAME@WEIGHTS`` (the weights' path absolute).
    Raises a one-line ValueError for a malformed spec, a missing path or an unknown backend."""
    try:
        resolved, _ = resolve(spec)
    except FileNotFoundError as error:
        raise ValueError(str(error)) from None
    prefix, _, model = resolved.partition(":")
    known = PREFIXES | IMAGE_PREFIXES
    if prefix not in known:
        raise ValueError(
            f"image model spec {spec!r}: unknown backend {prefix!r} (known: "
            f"{', '.join(sorted(known))}), e.g. {IMAGE_EXAMPLES}"
        )
    if not model.strip() or model != model.strip():
        raise ValueError(f"image model spec {spec!r} is malformed: no model after {prefix!r}")
    name, at, weights = model.partition("@")
    if prefix == "timm" and at:
        return f"timm:{name}@{_absolute(weights)}"
    return resolved


def _local_spec(path: Path) -> tuple[str, str]:
    """The spec of a local file or folder, by what is on disk, and what it was taken for."""
    folder = path if path.is_dir() else path.parent
    if (folder / "config.json").is_file():
        return f"hf:{folder}", "a transformers model folder (config.json)"
    if (folder / "open_clip_config.json").is_file():
        return f"open_clip:local-dir:{folder}", "an open_clip model folder (open_clip_config.json)"
    if path.is_dir():
        raise ValueError(
            f"model {path}: the folder has neither config.json (a transformers model) nor "
            "open_clip_config.json (an open_clip model)"
        )
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return f"open_clip:{path}", "an OpenAI-format CLIP checkpoint (architecture inferred)"
    raise ValueError(
        f"model {path}: cannot tell which backend loads a {path.suffix or 'suffix-less'} file "
        f"(a bare path is a {', '.join(CHECKPOINT_SUFFIXES)} file or a model folder; "
        "else give BACKEND:MODEL, see `wca models`)"
    )


def canonical(spec: str) -> str:
    """``spec`` resolved (:func:`resolve`); a spec that does not resolve stays as it is
    (loading it fails, with its own error, in its own cell)."""
    try:
        return resolve(spec)[0]
    except (ValueError, FileNotFoundError):
        return spec


def model_fields(spec: str) -> dict[str, str | None]:
    """clip_benchmark's ``model`` and ``pretrained`` for a spec (never a path: a weights file
    by its name), and the local ``file`` of the weights when the spec names one.

    ``ARCH/TAG`` -> (ARCH, TAG); ``open_clip:ARCH@FILE`` -> (ARCH, file name);
    ``open_clip:FILE`` (an OpenAI-format checkpoint) -> (file stem, file name); a model folder
    -> (its name, ""); hub repositories (``open_clip:hf-hub:ORG/NAME``, ``hf:ORG/NAME``) ->
    (the spec without its backend, ``hf-hub``).
    """
    prefix, _, model = canonical(spec).partition(":")
    if prefix == "open_clip" and model.startswith("hf-hub:"):
        return {"model": model, "pretrained": "hf-hub", "file": None}
    if prefix == "open_clip" and "@" in model:
        arch, path = model.split("@", 1)
        return {"model": arch, "pretrained": Path(path).name, "file": path}
    local = _local(model.removeprefix("local-dir:"))
    if local is not None:
        if local.is_file():
            return {"model": local.stem, "pretrained": local.name, "file": str(local)}
        return {"model": local.name, "pretrained": "", "file": str(local)}
    if prefix == "open_clip" and "/" in model:
        arch, tag = model.split("/", 1)
        return {"model": arch, "pretrained": tag, "file": None}
    return {"model": model, "pretrained": "hf-hub" if prefix == "hf" else "", "file": None}


def label(model: str, pretrained: str | None) -> str:
    """The short name of a model in tables and file names (clip_benchmark's ``model_fullname``
    without paths): ``ViT-B-32 openai``; a weights file by its stem (``ViT-B-16 (tuned)``, or
    the stem alone when it is the model's name); a hub repository by its name."""
    model = model.removeprefix("hf-hub:")
    if not pretrained or pretrained == "hf-hub":
        return model
    if "/" in pretrained or "\\" in pretrained or Path(pretrained).suffix in CHECKPOINT_SUFFIXES:
        stem = Path(pretrained.replace("\\", "/")).stem
        return model if stem == model else f"{model} ({stem})"
    return f"{model} {pretrained}"


def model_label(spec: str) -> str:
    """:func:`label` of a spec."""
    fields = model_fields(spec)
    return label(str(fields["model"]), fields["pretrained"])


# The WCA authors' CLIP model names (their configs' model_size) -> open_clip's architecture.
OPENAI_MODELS = {
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
    "RN50": "RN50",
    "RN101": "RN101",
}


def from_model_size(model_size: str) -> str:
    """The spec of the authors' ``model_size`` (``ViT-B/32``: OpenAI's ViT-B-32 weights)."""
    if model_size not in OPENAI_MODELS:
        raise ValueError(
            f"model_size {model_size!r} is not one of the authors' CLIP models "
            f"({', '.join(OPENAI_MODELS)}); give model: a model spec instead"
        )
    return f"open_clip:{OPENAI_MODELS[model_size]}/openai"


def weights_file(spec: str) -> str | None:
    """The local file (or folder) of the weights that ``spec`` loads, when it can be told
    without a network: the path in the spec, else open_clip's or the Hugging Face cache entry
    of a pretrained tag or hub repository; None when it is not cached."""
    fields = model_fields(spec)
    if fields["file"]:
        return fields["file"]
    from huggingface_hub import try_to_load_from_cache

    prefix, _, model = canonical(spec).partition(":")
    if prefix == "open_clip" and not model.startswith("hf-hub:") and "/" in model:
        import open_clip

        arch, tag = model.split("/", 1)
        repo = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "").strip("/")
        name = ""
        if repo.count("/") > 1:  # ORG/NAME/FILE
            repo, _, name = repo.rpartition("/")
        candidates = [name] if name else ["open_clip_model.safetensors", OPEN_CLIP_BIN]
    else:
        repo = model.removeprefix("hf-hub:")
        candidates = ["open_clip_model.safetensors", "model.safetensors", "pytorch_model.bin"]
    for candidate in candidates:
        try:
            found = try_to_load_from_cache(repo, candidate) if repo else None
        except ValueError:  # not a valid repository name
            return None
        if isinstance(found, str):
            return found
    return None
