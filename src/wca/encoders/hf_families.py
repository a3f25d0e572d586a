"""The transformers dual-encoder families the ``hf:`` backend loads, keyed by ``model_type``.

A family says what differs between checkpoints of one kind: how pixels reach
``get_image_features`` (a ``[B, 3, S, S]`` batch, or SigLIP 2's NaFlex patches), how its
tokenizer pads and truncates, and where the model keeps its logit scale (and bias). The image
processor's own settings (size, resize mode, interpolation, centre crop, rescale, offset, mean,
std) become the :class:`~wca.preprocessing.Preprocessing` the fast crop path reproduces, so
fast views equal the processor's ``pixel_values``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode

from wca.preprocessing import Preprocessing
from wca.registry import Registry


def image_option(processor, key: str, default=None):
    """An image setting as ``processor(images=...)`` applies it: the processor's declared
    ``images_kwargs`` first (SigLIP 2 declares its patch budget there), then the image
    processor's own attribute."""
    declared = getattr(processor, "images_kwargs", None) or {}
    if key in declared:
        return declared[key]
    return getattr(processor.image_processor, key, default)


def _interpolation(processor) -> str:
    """The torchvision interpolation transformers resizes with (PIL NEAREST is nearest-exact)."""
    from transformers.image_utils import PILImageResampling, pil_torch_interpolation_mapping

    resample = image_option(processor, "resample")
    if isinstance(resample, InterpolationMode):
        return resample.value
    return pil_torch_interpolation_mapping[PILImageResampling(int(resample))].value


def _normalisation(processor, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The processor's rescale (with EfficientNet's ``rescale_offset``), mean/std and
    EfficientNet's ``include_top`` second division, folded into one mean and std on [0, 1]
    pixels: ``(x * r - o - m) / (s * t)`` is ``(x / 255 - mean) / std``."""
    rescale = image_option(processor, "rescale_factor", 1 / 255)
    r = rescale if image_option(processor, "do_rescale", True) else 1.0
    offset = 1.0 if r != 1.0 and image_option(processor, "rescale_offset", False) else 0.0
    normalise = image_option(processor, "do_normalize", True)
    mean = image_option(processor, "image_mean") if normalise else (0.0, 0.0, 0.0)
    std = image_option(processor, "image_std") if normalise else (1.0, 1.0, 1.0)
    mean, std = _triple(mean, name, "image_mean"), _triple(std, name, "image_std")
    top = std if image_option(processor, "include_top", False) else (1.0, 1.0, 1.0)
    return (
        tuple((offset + m) / (255.0 * r) for m in mean),
        tuple(s * t / (255.0 * r) for s, t in zip(std, top, strict=True)),
    )


def _triple(value, name: str, what: str) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"{name}: image processor {what} {value} is not one value per RGB channel")
    return tuple(values)


def _side(size, key: str) -> int | None:
    """One entry of a transformers size (``SizeDict``, dict or int), or ``None``."""
    if isinstance(size, int):
        return size if key in ("height", "width") else None
    return size.get(key) if hasattr(size, "get") else None


def processor_preprocessing(processor, name: str) -> Preprocessing:
    """A ``[3, S, S]`` image processor (resize, optional centre crop, rescale, normalise) as
    :class:`Preprocessing`; a processor whose output is not a fixed square is refused."""
    if not image_option(processor, "do_resize", True):
        raise ValueError(f"{name}: the image processor does not resize, so its inputs are not "
                         "a fixed size, which wca needs")
    if image_option(processor, "do_pad", False):
        raise ValueError(f"{name}: the image processor pads images, which wca does not support")
    size = image_option(processor, "size")
    if _side(size, "shortest_edge") and not _side(size, "longest_edge"):
        resize_mode, resize = "shortest", int(_side(size, "shortest_edge"))
    elif _side(size, "height") and _side(size, "height") == _side(size, "width"):
        resize_mode, resize = "squash", int(_side(size, "height"))
    else:
        raise ValueError(f"{name}: image processor size {dict(size)} is neither a shortest edge "
                         "nor a square, which wca does not support")
    side = resize
    if image_option(processor, "do_center_crop", False):
        crop = image_option(processor, "crop_size")
        side = _side(crop, "height")
        if side is None or side != _side(crop, "width") or side > resize:
            raise ValueError(f"{name}: image processor crop {dict(crop)} is not a square within "
                             f"the resize to {resize}, which wca does not support")
    elif resize_mode == "shortest":
        raise ValueError(f"{name}: the image processor resizes the short side to {resize} and "
                         "does not crop, so its inputs are not square, which wca needs")
    mean, std = _normalisation(processor, name)
    return Preprocessing(
        image_size=int(side),
        mean=mean,
        std=std,
        interpolation=_interpolation(processor),
        resize_mode=resize_mode,
        resize_size=None if resize == side else resize,
        crop_rounding="floor",
    )


@dataclass(frozen=True)
class VisionInput:
    """How a family's image processor defines its views and how pixels reach the model.

    ``preprocessing(processor, name)`` is the fast path's :class:`Preprocessing`;
    ``transform(processor, prep)`` the model's own preprocessing of one PIL image to
    ``[3, S, S]`` (the fidelity path); ``inputs(model, pixels)`` the keyword arguments of
    ``get_image_features`` for a ``[B, 3, S, S]`` batch.
    """

    preprocessing: Callable[..., Preprocessing]
    transform: Callable[..., Callable[[Image.Image], Tensor]]
    inputs: Callable[..., dict[str, Tensor]]


def _processor_transform(processor, prep: Preprocessing) -> Callable[[Image.Image], Tensor]:
    return lambda image: processor(images=image, return_tensors="pt")["pixel_values"][0]


PIXEL_VALUES = VisionInput(
    preprocessing=processor_preprocessing,
    transform=_processor_transform,
    inputs=lambda model, pixels: {"pixel_values": pixels},
)


def _naflex_grid(processor) -> tuple[int, int]:
    """(patch size, patches per side) of the square view within SigLIP 2's patch budget."""
    patch = int(image_option(processor, "patch_size"))
    return patch, math.isqrt(int(image_option(processor, "max_num_patches")))


def naflex_preprocessing(processor, name: str) -> Preprocessing:
    """SigLIP 2 NaFlex: a square image is resized to the largest square of whole patches within
    ``max_num_patches`` (16 x 16 patches of 16 pixels for 256). wca's views are that square:
    crops are square, so they equal the processor's; the full view of a non-square image is
    squashed to it (the processor would keep the aspect ratio on a non-square patch grid)."""
    patch, per_side = _naflex_grid(processor)
    mean, std = _normalisation(processor, name)
    return Preprocessing(
        image_size=patch * per_side,
        mean=mean,
        std=std,
        interpolation=_interpolation(processor),
        resize_mode="squash",
    )


def _naflex_transform(processor, prep: Preprocessing) -> Callable[[Image.Image], Tensor]:
    """The processor's own resize (to the square) and rescale + normalise of one image."""
    from transformers.image_utils import SizeDict

    image_processor = processor.image_processor
    square = SizeDict(height=prep.image_size, width=prep.image_size)

    def transform(image: Image.Image) -> Tensor:
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()
        pixels = image_processor.resize(pixels, square, image_option(processor, "resample"))
        return image_processor.rescale_and_normalize(
            pixels,
            image_option(processor, "do_rescale", True),
            image_option(processor, "rescale_factor", 1 / 255),
            image_option(processor, "do_normalize", True),
            image_option(processor, "image_mean"),
            image_option(processor, "image_std"),
        )

    return transform


def _naflex_inputs(model, pixels: Tensor) -> dict[str, Tensor]:
    """``[B, 3, S, S]`` as SigLIP 2's patch sequence, its mask and grid (the processor's
    layout: row-major patches, each flattened as (row, column, channel))."""
    patch = int(model.config.vision_config.patch_size)
    batch, channels, height, width = pixels.shape
    rows, columns = height // patch, width // patch
    patches = pixels.reshape(batch, channels, rows, patch, columns, patch)
    patches = patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * columns, -1)
    mask = torch.ones(batch, rows * columns, dtype=torch.int32, device=pixels.device)
    shapes = torch.tensor([[rows, columns]] * batch, device=pixels.device)
    return {"pixel_values": patches, "pixel_attention_mask": mask, "spatial_shapes": shapes}


NAFLEX_PATCHES = VisionInput(
    preprocessing=naflex_preprocessing, transform=_naflex_transform, inputs=_naflex_inputs
)


def exp_logit_scale(model) -> float:
    """CLIP's learnt temperature: ``logit_scale`` holds its log."""
    return float(model.logit_scale.detach().float().exp().item())


def inverse_temperature(model) -> float:
    """ALIGN divides the similarities by a learnt ``temperature``."""
    return float(1.0 / model.temperature.detach().float().item())


def no_logit_bias(model) -> float:
    """Softmax-trained models have no bias."""
    return 0.0


def logit_bias(model) -> float:
    """SigLIP's learnt bias of its sigmoid loss (a softmax over classes does not depend on it)."""
    return float(model.logit_bias.detach().float().item())


@dataclass(frozen=True)
class Family:
    """One transformers dual-encoder family, as the ``hf:`` backend drives it.

    ``text_padding`` is the tokenizer padding where the processor declares none: ``max_length``
    for models trained on fixed-length text (SigLIP pools the last position), else ``longest``.
    ``position_offset`` counts the text positions a model reserves (RoBERTa-style: 2), so
    truncation stays within its position embeddings.
    """

    model_type: str
    title: str
    example: str
    vision: VisionInput = PIXEL_VALUES
    text_padding: str = "longest"
    position_offset: int = 0
    logit_scale: Callable[..., float] = exp_logit_scale
    logit_bias: Callable[..., float] = no_logit_bias


FAMILIES: Registry[Family] = Registry("model family")


def register_family(family: Family) -> Family:
    """Make checkpoints whose config has ``model_type == family.model_type`` loadable."""
    return FAMILIES.register(family.model_type, family)


def family_for(model_type: object, name: str) -> Family:
    """The family of a checkpoint's ``model_type``, or one clear error naming the known ones."""
    if model_type not in FAMILIES:
        raise ValueError(
            f"{name}: model_type {model_type!r} is not a dual-encoder family the hf backend "
            f"knows (known: {', '.join(FAMILIES.list())}; see `wca models`)"
        )
    return FAMILIES[model_type]


for _family in (
    Family("align", "ALIGN (EfficientNet + BERT)", "kakaobrain/align-base",
           logit_scale=inverse_temperature),
    Family("altclip", "AltCLIP (CLIP ViT + XLM-R)", "BAAI/AltCLIP", position_offset=2),
    Family("chinese_clip", "Chinese-CLIP (ViT + Chinese RoBERTa)",
           "OFA-Sys/chinese-clip-vit-base-patch16"),
    Family("clip", "CLIP (OpenAI and compatible)", "openai/clip-vit-base-patch32"),
    Family("metaclip_2", "MetaCLIP 2 (worldwide, XLM-V tokenizer)",
           "facebook/metaclip-2-worldwide-huge-quickgelu"),
    Family("siglip", "SigLIP and fixed-resolution SigLIP 2", "google/siglip-base-patch16-224",
           text_padding="max_length", logit_bias=logit_bias),
    Family("siglip2", "SigLIP 2 NaFlex (variable resolution)", "google/siglip2-base-patch16-naflex",
           vision=NAFLEX_PATCHES, text_padding="max_length", logit_bias=logit_bias),
):
    register_family(_family)
