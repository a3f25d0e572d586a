"""Model specs as results name them: made absolute (the same model from any folder), resolved
(``demo``, a bare path), split into clip_benchmark's ``model`` and ``pretrained``, and the
local weights file they load, told without a network."""

from __future__ import annotations

from pathlib import Path

OPEN_CLIP_BIN = "open_clip_pytorch_model.bin"
# The spec forms, written out here so that help texts import no model library; a test checks
# them against wca.encoders.registry (SPEC_FORMS, CHECKPOINT_SUFFIXES, NAMED_MODELS).
MODEL_FORMS = (
    "open_clip:ARCH/TAG",
    "open_clip:hf-hub:ORG/NAME",
    "open_clip:ARCH@/path/weights.pt",
    "open_clip:/path/file.pt",
    "open_clip:local-dir:/path/folder",
    "hf:ORG/NAME",
    "hf:/path/folder",
)
CHECKPOINT_FILES = ".pt/.pth/.bin/.ckpt/.safetensors"
NAMED_MODELS = {"demo": "the shipped demo model"}


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
