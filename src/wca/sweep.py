"""Sweeps over models x datasets: names in result files, output paths, finished cells.

A sweep is a list of cells, one per (model, dataset); each writes one result file whose path
comes from a template such as ``results/{dataset}__{model}__{protocol}.json``. This module holds
the pieces that need no model or data: reading name lists, making model specs absolute,
splitting a spec into clip_benchmark's ``model`` and ``pretrained``, filling the template with
path-safe values, and telling whether a result file is already complete.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT = "results/{dataset}__{model}__{protocol}.json"
OUTPUT_FIELDS = ("dataset", "model", "pretrained", "protocol", "split", "n_run", "patch_n", "seed")
SAFE_LENGTH = 80
OPEN_CLIP_BIN = "open_clip_pytorch_model.bin"
# Settings of a result file that must match for --skip-existing to reuse it.
SETTINGS_COMPARED = (
    "dataset", "split", "model", "alpha", "beta", "n_samples", "crop_strategy", "n_run",
    "patch_n", "seed", "protocol", "fidelity", "half", "methods",
)  # fmt: skip


def read_list(path: str | Path) -> list[str]:
    """Names in a text file, one a line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: list file not found") from None
    names = [line.split("#", 1)[0].strip() for line in lines]
    names = [name for name in names if name]
    if not names:
        raise ValueError(f"{path}: no names in the file (one a line, # for comments)")
    return names


def _local(path: str) -> Path | None:
    """``path`` made absolute when it names something that exists (a file or a folder)."""
    candidate = Path(path).expanduser()
    return candidate.resolve() if candidate.exists() else None


def absolute_spec(spec: str) -> str:
    """``spec`` with a relative local path in it made absolute (the same model from any
    folder): ``open_clip:ARCH@FILE``, ``open_clip:FILE`` and ``hf:DIR``."""
    prefix, _, model = spec.partition(":")
    if prefix == "open_clip" and "@" in model and not model.startswith("hf-hub:"):
        arch, path = model.split("@", 1)
        local = _local(path)
        return f"{prefix}:{arch}@{local}" if local else spec
    local = _local(model) if model and ("/" in model or "." in model) else None
    if prefix in ("open_clip", "hf") and local is not None:
        return f"{prefix}:{local}"
    return spec


def model_fields(spec: str) -> dict[str, str | None]:
    """clip_benchmark's ``model`` and ``pretrained`` for a wca model spec, and the local
    ``file`` of the weights when the spec names one.

    ``open_clip:ARCH/TAG`` -> (ARCH, TAG); ``open_clip:ARCH@FILE`` -> (ARCH, FILE);
    ``open_clip:FILE`` (an OpenAI-format checkpoint) -> (file stem, FILE); ``hf:DIR`` ->
    (folder name, DIR); hub repositories (``open_clip:hf-hub:ORG/NAME``, ``hf:ORG/NAME``) ->
    (the spec without its backend, ``hf-hub``).
    """
    spec = absolute_spec(spec)
    prefix, _, model = spec.partition(":")
    if prefix == "open_clip" and model.startswith("hf-hub:"):
        return {"model": model, "pretrained": "hf-hub", "file": None}
    if prefix == "open_clip" and "@" in model:
        arch, path = model.split("@", 1)
        return {"model": arch, "pretrained": path, "file": path}
    local = _local(model)
    if local is not None:
        name = local.stem if local.is_file() else local.name
        return {"model": name, "pretrained": str(local), "file": str(local)}
    if prefix == "open_clip" and "/" in model:
        arch, tag = model.split("/", 1)
        return {"model": arch, "pretrained": tag, "file": None}
    return {"model": model, "pretrained": "hf-hub" if prefix == "hf" else "", "file": None}


def path_safe(text: str) -> str:
    """``text`` as one file-name component: letters, digits, ``-._``; runs of anything else
    become one ``-``. Long values keep their end and gain a short hash (so two checkpoints
    with the same file name in different folders stay apart)."""
    keep = "".join(c if c.isalnum() or c in "-._" else "-" for c in text)
    safe = "-".join(part for part in keep.split("-") if part).strip(".") or "-"
    if len(safe) <= SAFE_LENGTH:
        return safe
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{safe[-(SAFE_LENGTH - 9) :]}-{digest}"


def check_template(template: str) -> list[str]:
    """The fields of an output template, checked against :data:`OUTPUT_FIELDS`."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise ValueError(f"--output {template!r}: {error}") from None
    unknown = sorted(set(fields) - set(OUTPUT_FIELDS))
    if unknown or "" in fields:
        raise ValueError(
            f"--output {template!r}: unknown field {{{(unknown or [''])[0]}}} "
            f"(known: {', '.join('{' + f + '}' for f in OUTPUT_FIELDS)})"
        )
    return fields


def output_path(template: str, values: Mapping[str, Any]) -> Path:
    """The template filled with path-safe values (see :func:`path_safe`); ``{model}`` is
    meant to be the whole model spec, ``{pretrained}`` its weights (:func:`model_fields`)."""
    check_template(template)
    safe = {key: path_safe(str(values.get(key))) for key in OUTPUT_FIELDS}
    return Path(template.format(**safe)).expanduser()


def finished(path: Path, settings: Mapping[str, Any]) -> str | None:
    """Why the result file at ``path`` cannot be reused for ``settings`` (None: it can).

    A file is reused when it is a complete result (clip_benchmark metrics included) with the
    same settings as those compared in :data:`SETTINGS_COMPARED`.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "not there"
    except (OSError, ValueError):
        return "unreadable"
    if not isinstance(document, dict) or "metrics" not in document or "results" not in document:
        return "not a complete result"
    recorded = document.get("config", {})
    for key in SETTINGS_COMPARED:
        if key in settings and recorded.get(key) != settings[key]:
            return f"its {key} differs"
    return None


def weights_file(spec: str) -> str | None:
    """The local file (or folder) of the weights that ``spec`` loads, when it can be told
    without a network: the path in the spec, else open_clip's or the Hugging Face cache entry
    of a pretrained tag or hub repository; None when it is not cached."""
    fields = model_fields(spec)
    if fields["file"]:
        return fields["file"]
    from huggingface_hub import try_to_load_from_cache

    prefix, _, model = absolute_spec(spec).partition(":")
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
