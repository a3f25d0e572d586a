"""The Hugging Face transformers backend: CLIP and SigLIP-family models by Hub id or folder.

Specs (after ``hf:``): a Hub id such as ``openai/clip-vit-base-patch32`` or
``google/siglip-base-patch16-224``, or a local folder written by ``save_pretrained`` (model and
processor). Features come from the model's own ``get_image_features`` / ``get_text_features``,
pixels from its own image processor, tokens from its own tokenizer (padded to and truncated at
the model's text length, as SigLIP requires).
"""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from PIL import Image
from torch import Tensor
from transformers import AutoModel, AutoProcessor

from wca.crops import Preprocessing
from wca.encoders.base import PRECISIONS, Encoder
from wca.encoders.hub import cached_commit, file_fingerprint, hf_cache_hint, load_from_hub
from wca.encoders.registry import register_backend


class HFEncoder(Encoder):
    """A transformers model with ``get_image_features``/``get_text_features`` and a processor."""

    def __init__(
        self,
        model,
        processor,
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
                    f"{name}: {type(model).__name__} is not a CLIP-style model "
                    f"(it has no {method}); use a CLIP or SigLIP model"
                )
        self.model = model.eval()
        self.image_processor = processor.image_processor
        self.tokenizer = processor.tokenizer
        self.max_length = int(model.config.text_config.max_position_embeddings)
        self.device = device  # the probe below runs before Encoder.__init__ sets it
        with torch.inference_mode():
            embed_dim = int(self._text_features(["a"]).shape[-1])
        super().__init__(
            name=name,
            identity=identity,
            embed_dim=embed_dim,
            device=device,
            dtype=dtype,
            preprocessing=_preprocessing(self.image_processor, name),
            logit_scale=float(model.logit_scale.detach().float().exp().item()),
            batch_size=batch_size,
            transform=self._pixels,
        )

    def _pixels(self, image: Image.Image) -> Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def _image_features(self, pixels: Tensor) -> Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))

    def _text_features(self, texts: list[str]) -> Tensor:
        tokens = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return _features(self.model.get_text_features(**tokens.to(self.device)))


def _features(output) -> Tensor:
    """Projected features from a tensor or a model output (transformers 5 returns the latter)."""
    return output if isinstance(output, Tensor) else output.pooler_output


def _side(size, key: str) -> int | None:
    """One entry of a transformers size dict (``SizeDict`` or plain dict), or ``None``."""
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _preprocessing(processor, name: str) -> Preprocessing:
    """The image processor's resize, crop and normalisation as :class:`Preprocessing`."""
    size, crop = processor.size, getattr(processor, "crop_size", None)
    if getattr(processor, "do_center_crop", False) and crop is not None:
        side, resize_mode = (_side(crop, "height"), _side(crop, "width")), "shortest"
        if _side(size, "shortest_edge") != side[0]:
            raise ValueError(
                f"{name}: resize to {_side(size, 'shortest_edge')} then crop "
                f"{side[0]} is not supported (wca needs resize size == crop size)"
            )
    else:
        side, resize_mode = (_side(size, "height"), _side(size, "width")), "squash"
    if side[0] is None or side[0] != side[1]:
        raise ValueError(
            f"{name}: image processor size {size} is not a square input, which wca does not support"
        )
    normalise = getattr(processor, "do_normalize", True)
    return Preprocessing(
        image_size=int(side[0]),
        mean=tuple(float(v) for v in processor.image_mean) if normalise else (0.0, 0.0, 0.0),
        std=tuple(float(v) for v in processor.image_std) if normalise else (1.0, 1.0, 1.0),
        interpolation=Image.Resampling(int(processor.resample)).name.lower(),
        resize_mode=resize_mode,
    )


@register_backend("hf")
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
        try:
            clip, processor = _load(str(folder), dtype, device)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ValueError(
                f"{spec}: {folder} is not a loadable transformers CLIP-style model "
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
        clip, processor = load_from_hub(spec, lambda: _load(model, dtype, device), how)
        commit = cached_commit(model, "config.json")
        identity = f"{spec}@{commit}" if commit else spec
    return HFEncoder(
        clip,
        processor,
        name=spec,
        identity=identity,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
    )


def _load(source: str, dtype: torch.dtype, device: torch.device):
    processor = AutoProcessor.from_pretrained(source)
    model = AutoModel.from_pretrained(source, dtype=dtype).to(device)
    return model, processor
