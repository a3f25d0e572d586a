"""Image-only encoders: a second model of the same views (COSMIC's fine-grained graph reads it).

:func:`load_image_encoder` reads the model spec grammar of :mod:`wca.specs`, with one more form:

- ``hf:ORG/NAME`` or ``hf:/path/folder`` (or a bare folder with ``config.json``): a
  transformers image model (``AutoModel``: DINOv2, DINOv2 with registers, ViT, ConvNeXt, ...)
  with its ``AutoImageProcessor``. Its embedding is the CLS token of ``last_hidden_state``
  (after the model's final layer norm: DINOv2's ``x_norm_clstoken``, which the COSMIC authors
  read, ``clip/flex_clip.py`` ``get_image_features_aux``), or for a model without a token
  sequence (a CNN) its ``pooler_output``. A transformers dual encoder (CLIP, SigLIP, ...)
  gives its projected image features, as :mod:`wca.encoders.hf_backend` loads it.
- ``timm:NAME`` (its pretrained weights, Hugging Face cache first) or
  ``timm:NAME@/path/weights.safetensors``: a timm model without its classifier, its pooled
  pre-logits features, with timm's evaluation preprocessing for that model.
- any other spec (``open_clip:...``, ``demo``): that dual encoder's image tower.

Each brings its own :class:`~wca.preprocessing.Preprocessing` (the model's processor or timm's
data config), so its views are cut from the same boxes but resized and normalised its way. The
COSMIC authors feed DINOv2 CLIP's 224-pixel pixels, normalised with CLIP's mean and std; here
each model gets the preprocessing it was trained with.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

from wca import defaults
from wca.encoders.base import (
    PRECISIONS,
    ImageEncoder,
    resolve_batch_size,
    resolve_device,
    resolve_precision,
)
from wca.encoders.hub import cached_commit, file_fingerprint, hf_cache_hint, load_from_hub
from wca.preprocessing import Preprocessing

IMAGE_FORMS = (
    ("hf:ORG/NAME", "a transformers image model (DINOv2, ViT, ...): its CLS token",
     "hf:facebook/dinov2-small"),
    ("hf:/path/folder", "a save_pretrained folder (model + image processor)", "hf:./my-dinov2"),
    ("timm:NAME", "a timm model's pooled features (its pretrained weights)",
     "timm:vit_small_patch14_dinov2.lvd142m"),
    ("timm:NAME@/path/weights", "a timm architecture with local weights",
     "timm:resnet50@./resnet50.safetensors"),
)  # fmt: skip


class HFImageEncoder(ImageEncoder):
    """A transformers image model: the CLS token of its last hidden state (or its pooled
    output, for a model without a token sequence), preprocessed by its image processor."""

    def __init__(self, model, image_processor, *, name: str, identity: str, device, dtype,
                 batch_size: int) -> None:  # fmt: skip
        from wca.encoders.hf_families import PIXEL_VALUES

        self.model = model.eval()
        self.device = device  # the probe below runs before ImageEncoder.__init__ sets it
        processor = SimpleNamespace(image_processor=image_processor)  # the families' reading
        preprocessing = PIXEL_VALUES.preprocessing(processor, name)
        size = preprocessing.image_size
        with torch.inference_mode():
            probe = torch.zeros(1, 3, size, size, device=device, dtype=dtype)
            embed_dim = int(self._image_features(probe).shape[-1])
        super().__init__(
            name=name,
            identity=identity,
            embed_dim=embed_dim,
            device=device,
            dtype=dtype,
            preprocessing=preprocessing,
            batch_size=batch_size,
            transform=PIXEL_VALUES.transform(image_processor, preprocessing),
        )

    def _image_features(self, pixels: Tensor) -> Tensor:
        output = self.model(pixel_values=pixels)
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is not None and hidden.ndim == 3:
            return hidden[:, 0]
        pooled = getattr(output, "pooler_output", None)
        if pooled is None:
            raise ValueError(f"{self.name}: the model returns neither tokens nor a pooled output")
        return pooled.flatten(1)


class TimmImageEncoder(ImageEncoder):
    """A timm model without its classifier (``num_classes=0``): its pooled pre-logits
    features, with timm's evaluation transform for its data config."""

    def __init__(self, model, *, name: str, identity: str, device, dtype, batch_size: int) -> None:
        import timm.data

        self.model = model.eval()
        config = timm.data.resolve_model_data_config(model)
        preprocessing = timm_preprocessing(config, name)
        super().__init__(
            name=name,
            identity=identity,
            embed_dim=int(model.num_features),
            device=device,
            dtype=dtype,
            preprocessing=preprocessing,
            batch_size=batch_size,
            transform=timm.data.create_transform(**config, is_training=False),
        )

    def _image_features(self, pixels: Tensor) -> Tensor:
        return self.model(pixels)


def timm_preprocessing(config: dict, name: str) -> Preprocessing:
    """timm's evaluation transform (resize to ``floor(size / crop_pct)``, the short side or
    both sides, then a centre crop) as :class:`Preprocessing`."""
    _, height, width = config["input_size"]
    mode = config.get("crop_mode", "center")
    if height != width or mode not in ("center", "squash"):
        raise ValueError(
            f"{name}: timm input {height}x{width} with crop mode {mode!r}: wca needs square "
            "views resized by the short side or squashed"
        )
    resize = math.floor(height / config.get("crop_pct", 1.0))
    return Preprocessing(
        image_size=int(height),
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        interpolation=str(config.get("interpolation", "bicubic")),
        resize_mode="shortest" if mode == "center" else "squash",
        resize_size=None if resize == height else resize,
    )


def load_image_encoder(
    spec: str,
    device: str | torch.device = defaults.DEVICE,
    precision: str = defaults.PRECISION,
    batch_size: int | None = None,
) -> ImageEncoder:
    """The image encoder named by ``spec`` (module doc), on ``device`` in ``precision``."""
    from wca.encoders.registry import held_library_logs, load_encoder
    from wca.specs import image_spec

    resolved = image_spec(spec)
    prefix, _, model = resolved.partition(":")
    if prefix not in ("hf", "timm"):
        return load_encoder(resolved, device, precision, batch_size, text_cache=False)
    where = resolve_device(device)
    resolve_precision(precision, where)
    dtype, size = PRECISIONS[precision], resolve_batch_size(batch_size)
    with held_library_logs():
        if prefix == "timm":
            return _load_timm(resolved, model, where, dtype, size)
        return _load_hf(resolved, model, where, dtype, size, precision)


def _load_hf(spec: str, model: str, device, dtype, batch_size: int, precision: str):
    """``hf:FOLDER`` or ``hf:ORG/NAME``: a dual encoder through the hf backend, else an image
    model with its image processor."""
    from wca.encoders.hf_backend import _model_type, load_hf, load_pretrained
    from wca.encoders.hf_families import FAMILIES

    folder = Path(model).expanduser()
    local = model.startswith(("/", ".", "~")) or folder.exists()
    if local:
        if not (folder / "config.json").is_file():
            what = "has no config.json" if folder.is_dir() else "is not a model folder"
            raise FileNotFoundError(f"{spec}: {folder} {what} (write one with save_pretrained)")
        config = folder / "config.json"
        how = ""
    else:
        from huggingface_hub import hf_hub_download

        how = (
            f"Download it where there is network (`hf download {model}`) into "
            f"{hf_cache_hint()}, or save it with save_pretrained and use hf:/path/to/folder"
        )
        config = Path(load_from_hub(spec, lambda: hf_hub_download(model, "config.json"), how))
    model_type = _model_type(spec, config)
    if model_type in FAMILIES:  # a dual encoder: its image tower
        encoder = load_hf(spec, model, device=device, precision=precision, batch_size=batch_size)
        encoder.text_cache_dir = False
        return encoder
    source = str(folder) if local else model
    def load():
        return load_pretrained(source, dtype, device, "AutoImageProcessor")

    try:
        network, processor = load() if local else load_from_hub(spec, load, how)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
        if not local:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ValueError(
            f"{spec}: {folder} is not a loadable transformers {model_type} image model with "
            f"its image processor: {message[:300]}"
        ) from error
    commit = None if local else cached_commit(model, "config.json")
    version = f"#{file_fingerprint(folder)}" if local else (f"@{commit}" if commit else "")
    return HFImageEncoder(
        network,
        processor,
        name=spec,
        identity=f"image:{spec}{version}",
        device=device,
        dtype=dtype,
        batch_size=batch_size,
    )


def _load_timm(spec: str, model: str, device, dtype, batch_size: int) -> TimmImageEncoder:
    """``timm:NAME`` (pretrained, cache first) or ``timm:NAME@WEIGHTS`` (a local file)."""
    try:
        import timm
    except ImportError as error:
        raise ValueError(f"{spec}: timm is not installed (pip install timm)") from error
    name, _, weights = model.partition("@")
    if not timm.is_model(name):
        raise ValueError(f"{spec}: {name!r} is not a timm model (timm.list_models lists them)")
    if weights:
        path = Path(weights).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{spec}: weights file {path} does not exist")
        overlay = {"file": str(path), "num_classes": 0}
        network = timm.create_model(name, pretrained=True, num_classes=0,
                                    pretrained_cfg_overlay=overlay)  # fmt: skip
        identity = f"timm:{name}@{path.name}#{file_fingerprint(path)}"
    else:
        how = f"Download it where there is network into {hf_cache_hint()}, or give NAME@FILE"
        network = load_from_hub(spec, lambda: timm.create_model(name, pretrained=True,
                                                                num_classes=0), how)  # fmt: skip
        identity = f"timm:{name}"
    network = network.to(device, dtype)
    return TimmImageEncoder(network, name=spec, identity=identity, device=device, dtype=dtype,
                            batch_size=batch_size)  # fmt: skip
