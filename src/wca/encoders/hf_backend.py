"""The Hugging Face transformers backend: dual encoders by Hub id or save_pretrained folder.

Specs (after ``hf:``): a Hub id such as ``openai/clip-vit-base-patch32`` or
``kakaobrain/align-base``, or a local folder written by ``save_pretrained`` (model and
processor). The family (one of :mod:`wca.encoders.hf_families`) comes from the checkpoint
config's ``model_type``, not from its name.
Features come from the model's own ``get_image_features`` / ``get_text_features``, pixels from
its own processor, tokens from its own tokenizer with the padding and truncation its processor
declares (SigLIP pads to a fixed length).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from torch import Tensor

from wca.encoders.base import PRECISIONS, Encoder
from wca.encoders.hf_families import Family, family_for
from wca.encoders.hub import cached_commit, file_fingerprint, hf_cache_hint, load_from_hub
from wca.encoders.registry import register_backend

# Hub ids and folder forms, for `wca models` and error messages.
SPEC_FORMS = (
    ("hf:ORG/NAME", "a Hub model (cache first)", "hf:openai/clip-vit-base-patch32"),
    ("hf:/path/folder", "a save_pretrained folder (model + processor)", "hf:./my-align"),
)


class HFEncoder(Encoder):
    """A transformers dual encoder of a known :class:`Family` and its processor."""

    def __init__(
        self,
        model,
        processor,
        family: Family,
        *,
        name: str,
        identity: str,
        device: torch.device,
        dtype: torch.dtype,
        batch_size: int,
    ) -> None:
        for method in ("get_image_features", "get_text_features"):
            if not hasattr(model, method):
                raise ValueError(
                    f"{name}: {type(model).__name__} is not a dual encoder (it has no {method})"
                )
        self.model = model.eval()
        self.family = family
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.text_options = _text_options(processor, model.config.text_config, family)
        self.device = device  # the probe below runs before Encoder.__init__ sets it
        with torch.inference_mode():
            embed_dim = int(self._text_features(["a"]).shape[-1])
        preprocessing = family.vision.preprocessing(processor, name)
        super().__init__(
            name=name,
            identity=identity,
            embed_dim=embed_dim,
            device=device,
            dtype=dtype,
            preprocessing=preprocessing,
            logit_scale=family.logit_scale(model),
            logit_bias=family.logit_bias(model),
            batch_size=batch_size,
            transform=family.vision.transform(processor, preprocessing),
            context_length=self.text_options["max_length"],
        )

    def _image_features(self, pixels: Tensor) -> Tensor:
        inputs = self.family.vision.inputs(self.model, pixels)
        return _features(self.model.get_image_features(**inputs))

    def _text_features(self, texts: list[str]) -> Tensor:
        tokens = self.tokenizer(texts, return_tensors="pt", **self.text_options)
        return _features(self.model.get_text_features(**tokens.to(self.device)))

    def _count_tokens(self, texts: list[str]) -> list[int]:
        ids = self.tokenizer(texts, truncation=False, padding=False, verbose=False)["input_ids"]
        return [len(row) for row in ids]


def _text_options(processor, text_config, family: Family) -> dict:
    """Padding and truncation as the processor declares them, else the family's padding; the
    length within the text model's positions and the tokenizer's own limit."""
    declared = dict(getattr(processor, "text_kwargs", None) or {})
    positions = int(text_config.max_position_embeddings) - family.position_offset
    limit = min(positions, int(getattr(processor.tokenizer, "model_max_length", positions)))
    return {
        "padding": declared.get("padding", family.text_padding),
        "truncation": True,
        "max_length": int(declared.get("max_length") or limit),
    }


def _features(output) -> Tensor:
    """Projected features from a tensor or a model output (transformers 5 returns the latter)."""
    return output if isinstance(output, Tensor) else output.pooler_output


@register_backend("hf", forms=SPEC_FORMS)
def load_hf(
    spec: str, model: str, *, device: torch.device, precision: str, batch_size: int
) -> HFEncoder:
    """Load ``hf:ORG/NAME`` (Hub, cache first) or ``hf:/local/folder``."""
    dtype = PRECISIONS[precision]
    folder = Path(model).expanduser()
    if model.startswith(("/", ".", "~")) or folder.exists():
        if not folder.is_dir():
            what = "is a file, not a model folder" if folder.exists() else "does not exist"
            raise FileNotFoundError(f"{spec}: model folder {folder} {what}")
        config = folder / "config.json"
        if not config.is_file():
            raise ValueError(
                f"{spec}: {folder} has no config.json, so it is not a transformers model "
                "folder (write one with save_pretrained)"
            )
        family = family_for(_model_type(spec, config), spec)
        try:
            clip, processor = load_pretrained(str(folder), dtype, device)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ValueError(
                f"{spec}: {folder} is not a loadable transformers {family.model_type} model "
                f"with its processor: {message[:300]}"
            ) from error
        identity = f"{spec}#{file_fingerprint(folder)}"
    else:
        try:
            validate_repo_id(model)
        except HFValidationError as error:
            raise ValueError(
                f"{spec} is malformed: {model!r} is neither an existing folder nor a "
                f"Hub id ORG/NAME ({error})"
            ) from None
        how = (
            f"Download it where there is network (`hf download {model}`) into "
            f"{hf_cache_hint()}, or save it with save_pretrained and use hf:/path/to/folder"
        )
        config = load_from_hub(spec, lambda: hf_hub_download(model, "config.json"), how)
        family = family_for(_model_type(spec, Path(config)), spec)
        clip, processor = load_from_hub(spec, lambda: load_pretrained(model, dtype, device), how)
        commit = cached_commit(model, "config.json")
        identity = f"{spec}@{commit}" if commit else spec
    return HFEncoder(
        clip,
        processor,
        family,
        name=spec,
        identity=identity,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
    )


def _model_type(spec: str, config: Path) -> object:
    """The ``model_type`` of a checkpoint's ``config.json``, with a clear error if unreadable."""
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{spec}: {config} is not a readable JSON config ({error})") from error
    if not isinstance(settings, dict) or "model_type" not in settings:
        raise ValueError(f"{spec}: {config} names no model_type, so its model family is unknown")
    return settings["model_type"]


def load_pretrained(
    source: str, dtype: torch.dtype, device: torch.device, processor: str = "AutoProcessor"
):
    """The model and its processor (transformers' ``processor`` class: AutoImageProcessor for
    an image-only model), without transformers' own "Loading weights" bar (which
    writes frames to stderr even when it is a log file). transformers' model code is imported
    here, not with the module: an open_clip spec never pays for it."""
    import transformers
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        loaded = getattr(transformers, processor).from_pretrained(source)
        model = transformers.AutoModel.from_pretrained(source, dtype=dtype).to(device)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model, loaded
