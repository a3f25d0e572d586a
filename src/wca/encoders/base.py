"""The encoder interface every backend implements, and where text embeddings are kept.

An :class:`Encoder` wraps one CLIP-style model: its own image preprocessing, batched image and
text encoding on its device and precision, and L2-normalised float32 CPU outputs. Text
embeddings are looked up in memory, then in the on-disk text cache
(:mod:`wca.encoders.text_cache`, shared by every command and process using the same model), and
only the texts found in neither are encoded. The encoder also counts the tokens a text takes in
its tokenizer, so that texts longer than the model's context (cut when encoded) can be named.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from wca import defaults
from wca.checks import require_finite
from wca.encoders.text_cache import TEXTS_PER_SHARD, TextCache
from wca.preprocessing import Preprocessing

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
COUNT_CHUNK = 4096  # texts per tokenizer call when counting tokens
log = logging.getLogger("wca")


class ImageEncoder(ABC):
    """An image model behind the interface the feature pass reads: its own preprocessing
    (``preprocessing`` for the fast path, ``preprocess`` for one PIL image) and batched,
    L2-normalised float32 CPU embeddings of pixels on its device and precision.

    Backends implement :meth:`_image_features` (a batch already on the device, raw features).
    A dual encoder (:class:`Encoder`) adds the text side; an image-only model (DINOv2, a timm
    backbone: :mod:`wca.encoders.vision`) is a second encoder of the same views.
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
        batch_size: int,
        transform: Callable[[Image.Image], Tensor],
        progress: bool = True,
    ) -> None:
        self.name = name
        self.identity = identity
        self.embed_dim = embed_dim
        self.device = device
        self.dtype = dtype
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.progress = progress
        self._transform = transform

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, embed_dim={self.embed_dim}, "
            f"device={self.device}, dtype={self.dtype})"
        )

    @abstractmethod
    def _image_features(self, pixels: Tensor) -> Tensor:
        """Raw image features ``[B, D]`` of pixels already on ``device`` in ``dtype``."""

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


class Encoder(ImageEncoder):
    """A CLIP-style model behind one small interface, the one every backend fills.

    Backends implement :meth:`_image_features` and :meth:`_text_features`, which take a batch
    already on the model's device (pixels) or raw strings (texts) and return raw features, and
    may implement :meth:`_count_tokens` (with ``context_length``) so over-long texts are found.

    ``text_cache`` is ``True`` (the user cache folder, ``wca.defaults.cache_dir("texts")``), a
    folder, or ``False`` (memory only); ``progress`` shows a bar on stderr, on a terminal only,
    while more than one batch of texts is encoded or counted.
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
        context_length: int | None = None,
        text_cache: bool | str | Path = True,
        progress: bool = True,
    ) -> None:
        super().__init__(
            name=name,
            identity=identity,
            embed_dim=embed_dim,
            device=device,
            dtype=dtype,
            preprocessing=preprocessing,
            batch_size=batch_size,
            transform=transform,
            progress=progress,
        )
        self.logit_scale = logit_scale
        # The model's logit bias (SigLIP's sigmoid loss; 0 otherwise): sigmoid probabilities
        # are sigmoid(logit_scale * cosine + logit_bias); a softmax over classes ignores it.
        self.logit_bias = logit_bias
        # The most tokens a text keeps (specials included); longer texts are cut.
        self.context_length = context_length
        self._text_cache: dict[str, Tensor] = {}
        self._token_counts: dict[str, int] = {}
        self._text_lock = threading.RLock()
        self._disk: TextCache | None = None
        self.text_cache_dir = text_cache  # type: ignore[assignment]

    @property
    def text_cache_dir(self) -> Path | None:
        """The folder of the on-disk text-embedding cache (this model's entries are in a
        subfolder), or ``None`` when text embeddings are kept in memory only."""
        return None if self._disk is None else self._disk.root

    @text_cache_dir.setter
    def text_cache_dir(self, folder: bool | str | Path | None) -> None:
        if folder is True:
            folder = defaults.cache_dir("texts")
        self._disk = None
        if folder not in (None, False):
            self._disk = TextCache(Path(folder).expanduser(), self.identity, self.dtype)

    @abstractmethod
    def _text_features(self, texts: list[str]) -> Tensor:
        """Raw text features ``[T, D]``, tokenised by the model's own tokenizer (truncating)."""

    def _count_tokens(self, texts: list[str]) -> list[int] | None:
        """Tokens each text takes in the model's tokenizer before truncation (specials
        included), or ``None`` when this backend cannot tell."""
        return None

    def encode_texts(self, texts: Sequence[str], progress: bool | None = None) -> Tensor:
        """L2-normalised float32 CPU embeddings ``[T, D]``: from memory, else from the text
        cache on disk, else encoded (and then stored in both). ``progress`` overrides the
        encoder's ``progress`` for this call."""
        texts = self._texts(texts, "encode_texts")
        with self._text_lock:
            missing = self._missing(texts, self._text_cache)
            pending: list[str] = []
            with self._bar(len(missing), "encoding texts", progress) as bar:
                for start in range(0, len(missing), self.batch_size):
                    batch = missing[start : start + self.batch_size]
                    with torch.inference_mode():
                        raw = self._text_features(batch)
                        features = require_finite(_normalise(raw), self.name, "text")
                    self._text_cache.update(zip(batch, features, strict=True))
                    pending += batch
                    if len(pending) >= TEXTS_PER_SHARD:
                        self._store(pending)
                        pending = []
                    bar.update(len(batch))
            self._store(pending)
            if not texts:
                return torch.zeros(0, self.embed_dim)
            return torch.stack([self._text_cache[text] for text in texts])

    def token_counts(self, texts: Sequence[str], progress: bool | None = None) -> list[int] | None:
        """Tokens each text takes in the model's tokenizer before truncation (specials
        included; more than ``context_length`` means the text is cut when encoded), or
        ``None`` when this backend cannot count. Counts are kept with the text cache."""
        texts = self._texts(texts, "token_counts")
        with self._text_lock:
            missing = self._missing(texts, self._token_counts)
            with self._bar(len(missing), "counting tokens", progress, COUNT_CHUNK) as bar:
                for start in range(0, len(missing), COUNT_CHUNK):
                    chunk = missing[start : start + COUNT_CHUNK]
                    counts = self._count_tokens(chunk)
                    if counts is None:
                        return None
                    self._token_counts.update(zip(chunk, counts, strict=True))
                    bar.update(len(chunk))
            return [self._token_counts[text] for text in texts]

    def clear_text_cache(self) -> None:
        """Forget the text embeddings held in memory (to free memory; results do not change,
        and the cache on disk is kept)."""
        with self._text_lock:
            self._text_cache.clear()
            self._token_counts.clear()

    def _texts(self, texts: Sequence[str], what: str) -> list[str]:
        if isinstance(texts, str):
            raise TypeError(f"{self.name}: {what} expects a list of strings, not one string")
        texts = list(texts)
        if not all(isinstance(text, str) for text in texts):
            raise TypeError(f"{self.name}: {what} expects a list of strings")
        return texts

    def _missing(self, texts: list[str], held: dict) -> list[str]:
        """The distinct texts not in ``held`` after consulting the cache on disk."""
        missing = [text for text in dict.fromkeys(texts) if text not in held]
        if missing and self._disk is not None:
            for text, (embedding, count) in self._disk.lookup(missing).items():
                self._text_cache.setdefault(text, embedding)
                if count >= 0:
                    self._token_counts.setdefault(text, count)
            missing = [text for text in missing if text not in held]
        return missing

    def _store(self, texts: list[str]) -> None:
        """Write newly encoded texts to the cache on disk; a cache that cannot be written
        (disk full, no permission) is turned off with one warning, losing no result."""
        if not texts or self._disk is None:
            return
        embeddings = torch.stack([self._text_cache[text] for text in texts])
        counts = [self._token_counts.get(text, -1) for text in texts]
        try:
            self._disk.store(texts, embeddings, counts)
        except OSError as error:
            log.warning(
                "text cache: cannot write to %s (%s); text embeddings are not cached",
                self._disk.folder,
                error.strerror or error,
            )
            self._disk = None

    @contextmanager
    def _bar(
        self, total: int, what: str, progress: bool | None, step: int | None = None
    ) -> Iterator:
        """A progress bar (:func:`wca.progress.progress_bar`) when ``total`` spans more than
        one step, else a no-op with the same ``update``."""
        from wca.progress import progress_bar

        show = self.progress if progress is None else progress
        enabled = bool(show) and total > (step or self.batch_size)
        with progress_bar(total=total, desc=what, unit="text", enabled=enabled, leave=False) as bar:
            yield bar


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


def resolve_batch_size(batch_size: int | None) -> int:
    """The given batch size (a positive integer), or ``wca.defaults.BATCH_SIZE``, the CLI's
    default too."""
    if batch_size is None:
        return defaults.BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size
