"""The encoder interface every backend implements, and the text-embedding cache.

An :class:`Encoder` wraps one CLIP-style model: its own image preprocessing, batched image and
text encoding on its device and precision, and L2-normalised float32 CPU outputs. Text
embeddings are cached per encoder (one model) and text, so re-running methods over the same
prompts does not re-encode them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from wca.crops import Preprocessing
from wca.scoring import require_finite

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Images per forward pass when the caller gives no batch size.
DEFAULT_BATCH_SIZE = {"cuda": 256, "mps": 64, "cpu": 32}


class Encoder(ABC):
    """A CLIP-style model behind one small interface, the one every backend fills.

    Backends implement :meth:`_image_features` and :meth:`_text_features`, which take a batch
    already on the model's device (pixels) or raw strings (texts) and return raw features.
    """

    def __init__(
        self,
        *,
        name: str,
        identity: str,
        embed_dim: int,
        device: torch.device,
        dtype: torch.dtype,
        preprocessing: Preprocessing,
        logit_scale: float,
        batch_size: int,
        transform: Callable[[Image.Image], Tensor],
        logit_bias: float = 0.0,
    ) -> None:
        self.name = name
        self.identity = identity
        self.embed_dim = embed_dim
        self.device = device
        self.dtype = dtype
        self.preprocessing = preprocessing
        self.logit_scale = logit_scale
        # The model's logit bias (SigLIP's sigmoid loss; 0 otherwise): sigmoid probabilities
        # are sigmoid(logit_scale * cosine + logit_bias); a softmax over classes ignores it.
        self.logit_bias = logit_bias
        self.batch_size = batch_size
        self._transform = transform
        self._text_cache: dict[str, Tensor] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, embed_dim={self.embed_dim}, "
            f"device={self.device}, dtype={self.dtype})"
        )

    @abstractmethod
    def _image_features(self, pixels: Tensor) -> Tensor:
        """Raw image features ``[B, D]`` of pixels already on ``device`` in ``dtype``."""

    @abstractmethod
    def _text_features(self, texts: list[str]) -> Tensor:
        """Raw text features ``[T, D]``, tokenised by the model's own tokenizer (truncating)."""

    def preprocess(self, image: Image.Image) -> Tensor:
        """The model's own preprocessing of one PIL image: float ``[3, S, S]``."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"preprocess expects a PIL image, got {type(image).__name__}")
        return self._transform(image.convert("RGB") if image.mode != "RGB" else image)

    def encode_images(self, pixels: Tensor) -> Tensor:
        """L2-normalised float32 CPU embeddings ``[B, D]`` of pixels ``[B, 3, S, S]``."""
        size = self.preprocessing.image_size
        if (
            not isinstance(pixels, Tensor)
            or pixels.ndim != 4
            or pixels.shape[1:] != (3, size, size)
        ):
            shape = tuple(pixels.shape) if isinstance(pixels, Tensor) else type(pixels).__name__
            raise ValueError(
                f"{self.name}: encode_images expects pixels [B, 3, {size}, {size}], got {shape}"
            )
        outputs = [torch.zeros(0, self.embed_dim)]
        with torch.inference_mode():
            for start in range(0, pixels.shape[0], self.batch_size):
                batch = pixels[start : start + self.batch_size].to(self.device, self.dtype)
                outputs.append(require_finite(_normalise(self._image_features(batch)), self.name))
        return torch.cat(outputs)

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """L2-normalised float32 CPU embeddings ``[T, D]``; known texts come from the cache."""
        if isinstance(texts, str):
            raise TypeError(f"{self.name}: encode_texts expects a list of strings, not one string")
        texts = list(texts)
        if not all(isinstance(text, str) for text in texts):
            raise TypeError(f"{self.name}: encode_texts expects a list of strings")
        missing = [text for text in dict.fromkeys(texts) if text not in self._text_cache]
        with torch.inference_mode():
            for start in range(0, len(missing), self.batch_size):
                batch = missing[start : start + self.batch_size]
                features = require_finite(_normalise(self._text_features(batch)), self.name, "text")
                self._text_cache.update(zip(batch, features, strict=True))
        if not texts:
            return torch.zeros(0, self.embed_dim)
        return torch.stack([self._text_cache[text] for text in texts])

    def clear_text_cache(self) -> None:
        """Forget the cached text embeddings (to free memory; results do not change)."""
        self._text_cache.clear()


def _normalise(features: Tensor) -> Tensor:
    """Features as float32 on the CPU with unit L2 norm per row."""
    return F.normalize(features.float(), dim=-1).cpu()


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; an explicit device must be available."""
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device {device!r} is not a torch device (auto, cpu, cuda, cuda:1, mps)"
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available here (use auto or cpu)")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available here (use auto or cpu)")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype for ``fp32`` / ``fp16`` / ``bf16``, refusing fp16 where it is not run."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 is not supported on the CPU: use bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16 is not supported on {device}: use fp16 or fp32")
    return PRECISIONS[precision]


def resolve_batch_size(batch_size: int | None, device: torch.device) -> int:
    """The given batch size (a positive integer), or the default for the device type."""
    if batch_size is None:
        return DEFAULT_BATCH_SIZE.get(device.type, 32)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size
