"""The Python API: an encoder, class names and descriptions in; predictions with their evidence out.

>>> encoder = wca.load_encoder("open_clip:ViT-B-32/openai")
>>> classifier = wca.WCAClassifier(encoder, classnames, "cupl.json")
>>> classifier("bird.jpg")          # like the Hugging Face zero-shot pipeline
[{"label": "Laysan Albatross", "score": 0.91}, ...]
>>> prediction = classifier.predict(["bird.jpg"])[0]
>>> prediction.crop_weights, prediction.descriptions["Laysan Albatross"][0]

An image's crops are drawn from ``(seed, image key)``, the key a hash of its decoded pixels
(:func:`image_key`), so the same image gets the same crops and the same answer alone, in a
list or in another order. (``wca eval`` keys crops on the image's index in the dataset instead,
as the authors' protocol does.) Views of several images are packed into encoder batches of
``encoder.batch_size`` views, as feature extraction packs them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Protocol

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import Tensor
from tqdm.auto import tqdm

from wca.crops import (
    DEFAULT_BETA,
    Preprocessing,
    crop_boxes,
    fidelity_views,
    load_image,
    normalize_pixels,
    uint8_views,
)
from wca.descriptions.io import load_descriptions, match_descriptions, validate_descriptions
from wca.methods import TextSources, WCAHead, build_head
from wca.scoring import crop_weights, require_finite

ImageInput = str | Path | Image.Image
PROGRESS_MIN_IMAGES = 8  # predict shows a progress bar from this many images on
CLIP_PROMPT = "a photo of a {}."  # the descriptions when none are given


class ImageTextEncoder(Protocol):
    """What the classifier needs of an encoder (``wca.load_encoder`` returns one)."""

    preprocessing: Preprocessing
    logit_scale: float

    def preprocess(self, image: Image.Image) -> Tensor: ...
    def encode_images(self, pixels: Tensor) -> Tensor: ...
    def encode_texts(self, texts: list[str]) -> Tensor: ...


@dataclass
class DescriptionScore:
    """One description of a class: its weight v_j and its crop-weighted similarity
    sum_i w_i cos(crop_i, desc_j), so that the paper-form score is sum_j weight * similarity."""

    description: str
    weight: float
    similarity: float


@dataclass
class Prediction:
    """The top-k classes of one image and the evidence behind them."""

    labels: list[str]
    scores: list[float]  # softmax probabilities over all classes
    indices: list[int]
    boxes: Tensor  # [N, 4] crop boxes (left, top, right, bottom) in image pixels
    crop_weights: Tensor  # [N] w_i
    descriptions: dict[str, list[DescriptionScore]]  # per top-k label, by decreasing contribution
    image_size: tuple[int, int]  # (width, height)
    image_emb: Tensor  # [D] the full view's embedding (L2-normalised), for other heads
    crop_emb: Tensor  # [N, D] the crops' embeddings, for per-crop evidence

    def as_pipeline(self) -> list[dict[str, float | str]]:
        """The Hugging Face zero-shot-image-classification output shape."""
        return [{"label": lab, "score": s} for lab, s in zip(self.labels, self.scores, strict=True)]


class ClassifierSettings(BaseModel):
    """The crop settings of a :class:`WCAClassifier`, checked as the evaluation config checks
    its own (finite numbers, ranges); the head's options are checked by ``build_head``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    n_crops: Annotated[int, Field(ge=1)] = 60
    alpha: Annotated[float, Field(gt=0, le=1)] = 0.5
    beta: Annotated[float, Field(gt=0, le=1)] = DEFAULT_BETA
    seed: Annotated[int, Field(ge=0)] = 0
    fidelity: bool = False

    @model_validator(mode="after")
    def _alpha_below_beta(self) -> ClassifierSettings:
        if self.alpha > self.beta:
            raise ValueError(f"need alpha <= beta, got alpha={self.alpha}, beta={self.beta}")
        return self


def check_settings(**values) -> ClassifierSettings:
    """The validated crop settings (:class:`ClassifierSettings`), or one clear ``ValueError``."""
    try:
        return ClassifierSettings(**values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(map(str, first["loc"])) or "settings"
        got = f", got {first['input']!r}" if first["loc"] else ""
        raise ValueError(f"WCAClassifier: {where}: {first['msg']}{got}") from None


def _classnames(classnames: Sequence[str]) -> list[str]:
    if isinstance(classnames, str) or not isinstance(classnames, Sequence):
        raise ValueError(f"classnames must be a list of strings, got {classnames!r}")
    bad = [name for name in classnames if not isinstance(name, str) or not name.strip()]
    if bad:
        raise ValueError(f"classnames must be non-empty strings, got {bad[0]!r}")
    return list(classnames)


def image_key(image: Image.Image) -> int:
    """A 63-bit key of an image's decoded RGB pixels and size: its crops' random stream."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{image.width}x{image.height}".encode())
    digest.update(np.asarray(image, dtype=np.uint8).tobytes())
    return int.from_bytes(digest.digest(), "big") >> 1


class WCAClassifier:
    """Zero-shot classification by weighted visual-text cross alignment.

    ``descriptions`` is ``{class: [sentence, ...]}`` or a JSON file of that shape (CuPL sets or
    ``wca describe`` output); None uses the CLIP prompt "a photo of a {class}." alone. Crops are
    drawn from ``(seed, image_key(image))`` (see the module doc). ``fidelity=True`` preprocesses
    every crop with the model's own transform (the authors' way) instead of the fast tensor path.
    """

    def __init__(
        self,
        encoder: ImageTextEncoder,
        classnames: Sequence[str],
        descriptions: dict[str, list[str]] | str | Path | None,
        *,
        n_crops: int = 60,
        alpha: float = 0.5,
        beta: float = DEFAULT_BETA,
        image_scale: float = 4.0,
        text_scale: float = 2.0,
        form: str = "reference",
        seed: int = 0,
        fidelity: bool = False,
        allow_duplicates: bool = False,
    ) -> None:
        settings = check_settings(
            n_crops=n_crops, alpha=alpha, beta=beta, seed=seed, fidelity=fidelity
        )
        self.classnames = _classnames(classnames)
        if descriptions is None:
            descriptions = {name: [CLIP_PROMPT.format(name)] for name in self.classnames}
        elif isinstance(descriptions, dict):
            descriptions = validate_descriptions(descriptions)
        elif isinstance(descriptions, str | Path):
            descriptions = load_descriptions(descriptions)
        else:
            raise ValueError(
                "descriptions must be {class: [sentence, ...]} or the path of such a JSON file, "
                f"got a {type(descriptions).__name__}"
            )
        self.encoder = encoder
        self.descriptions = match_descriptions(self.classnames, descriptions)
        self.n_crops, self.alpha, self.beta = settings.n_crops, settings.alpha, settings.beta
        self.seed, self.fidelity = settings.seed, settings.fidelity
        sources = TextSources(
            self.classnames, sentences=dict(zip(self.classnames, self.descriptions, strict=True))
        )
        self.head: WCAHead = build_head(
            "wca",
            encoder,
            sources,
            allow_duplicates=allow_duplicates,
            image_scale=image_scale,
            text_scale=text_scale,
            form=form,
        )
        self._model = str(getattr(encoder, "name", type(encoder).__name__))
        require_finite(self.head.desc_emb, self._model, "description embedding")

    def boxes(self, image: Image.Image) -> Tensor:
        """The image's crop boxes ``[N, 4]``, from ``(seed, image_key(image))``."""
        return crop_boxes(
            image.height, image.width, self.n_crops, self.alpha, self.beta, self.seed,
            image_key(image),
        )  # fmt: skip

    def views(self, image: Image.Image) -> tuple[Tensor, Tensor]:
        """Crop boxes ``[N, 4]`` and preprocessed views ``[N+1, 3, S, S]`` (full view first)."""
        boxes, views = self._raw_views(image)
        return boxes, self._normalised(views)

    def _raw_views(self, image: Image.Image) -> tuple[Tensor, Tensor]:
        """Boxes and views as the loader makes them: ``uint8`` on the fast path (normalised a
        whole batch at a time, on the encoder's device), float on the fidelity path."""
        boxes = self.boxes(image)
        if self.fidelity:
            return boxes, fidelity_views(image, boxes, self.encoder.preprocess)
        return boxes, uint8_views(image, boxes, self.encoder.preprocessing)

    def _normalised(self, views: Tensor) -> Tensor:
        if views.dtype != torch.uint8:
            return views
        views = views.to(getattr(self.encoder, "device", "cpu"))
        return normalize_pixels(views, self.encoder.preprocessing)

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        top_k: int = 5,
        *,
        progress: bool | None = None,
    ) -> list[Prediction]:
        """Top-k classes of every image, with crop boxes, crop weights and description scores.
        An image that cannot be read raises its error (:meth:`predict_each` goes on past it)."""
        predictions = []
        for _, result in self.predict_each(images, top_k, progress=progress):
            if isinstance(result, Exception):
                raise result
            predictions.append(result)
        return predictions

    def predict_each(
        self,
        images: ImageInput | Sequence[ImageInput],
        top_k: int = 5,
        *,
        progress: bool | None = None,
    ) -> Iterator[tuple[int, Prediction | ValueError]]:
        """``(position, prediction)`` for every image in order, each as soon as its encoder
        batch is done; an unreadable image gives ``(position, ValueError)`` and the rest go on.
        ``progress``: a bar on stderr (default: from :data:`PROGRESS_MIN_IMAGES` images on).
        Non-finite embeddings or scores (a corrupt model) raise."""
        images = [images] if isinstance(images, str | Path | Image.Image) else list(images)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        top_k = min(top_k, len(self.classnames))
        show = len(images) >= PROGRESS_MIN_IMAGES if progress is None else progress
        packer = _ViewPacker(self._encode, int(getattr(self.encoder, "batch_size", 256)))
        with tqdm(total=len(images), unit="img", desc="classify", disable=not show) as bar:
            for position, source in enumerate(images):
                try:
                    image = load_image(source)
                    boxes, views = self._raw_views(image)
                except ValueError as error:
                    yield from self._score(*packer.flush(), top_k, bar)
                    bar.update(1)
                    yield position, error
                    continue
                done = packer.add((position, image.size, boxes), views)
                yield from self._score(*done, top_k, bar)
            yield from self._score(*packer.flush(), top_k, bar)

    def _encode(self, views: Tensor) -> Tensor:
        with torch.inference_mode():
            return require_finite(self.encoder.encode_images(self._normalised(views)), self._model)

    def _score(
        self, done: list[tuple[int, tuple[int, int], Tensor]], embeddings: Tensor, top_k: int, bar
    ) -> Iterator[tuple[int, Prediction]]:
        """Predictions of the images ``done`` (position, size, boxes) from their embeddings
        ``[len(done) * (N+1), D]``, scored together."""
        if not done:
            return
        embeddings = embeddings.view(len(done), self.n_crops + 1, -1)
        image_emb, crop_emb = embeddings[:, 0], embeddings[:, 1:]
        scores = require_finite(self.head.logits(image_emb, crop_emb), self._model, "score")
        probabilities = torch.softmax(self.encoder.logit_scale * scores, dim=-1)
        top = probabilities.topk(top_k, dim=-1)
        weights = crop_weights(crop_emb, image_emb, self.head.image_scale)
        v = self.head.description_weights()
        for row, (position, size, boxes) in enumerate(done):
            weighted_crop = weights[row] @ crop_emb[row]
            indices = top.indices[row].tolist()
            evidence = {}
            for c in indices:
                similarity = self.head.desc_emb[c, : len(self.descriptions[c])] @ weighted_crop
                rows = [
                    DescriptionScore(text, float(v[c, j]), float(similarity[j]))
                    for j, text in enumerate(self.descriptions[c])
                ]
                evidence[self.classnames[c]] = sorted(rows, key=lambda r: -r.weight * r.similarity)
            bar.update(1)
            yield (
                position,
                Prediction(
                    labels=[self.classnames[c] for c in indices],
                    scores=top.values[row].tolist(),
                    indices=indices,
                    boxes=boxes,
                    crop_weights=weights[row],
                    descriptions=evidence,
                    image_size=size,
                    image_emb=image_emb[row].float(),
                    crop_emb=crop_emb[row].float(),
                ),
            )

    def __call__(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5):
        """Hugging Face pipeline-shaped output: a list of ``{"label", "score"}`` for one image,
        a list of such lists for several."""
        predictions = [p.as_pipeline() for p in self.predict(images, top_k)]
        return predictions[0] if isinstance(images, str | Path | Image.Image) else predictions


class _ViewPacker:
    """Views of consecutive images packed into encoder calls of exactly ``batch_size`` views
    (images straddle calls, as in feature extraction); an image comes out, in order, once all
    its views are encoded. ``add`` and ``flush`` return ``(items, embeddings)`` of the images
    completed, their views' embeddings concatenated."""

    def __init__(self, encode, batch_size: int) -> None:
        self.encode, self.batch_size = encode, batch_size
        self.items: list[tuple[object, int]] = []  # (item, views) not yet returned
        self.views: list[Tensor] = []  # views not yet encoded
        self.queued = 0
        self.embeddings: list[Tensor] = []  # of the items' views encoded so far
        self.encoded = 0

    def add(self, item, views: Tensor) -> tuple[list, Tensor | None]:
        self.items.append((item, len(views)))
        self.views.append(views)
        self.queued += len(views)
        while self.queued >= self.batch_size:
            self._encode(self.batch_size)
        return self._complete()

    def flush(self) -> tuple[list, Tensor | None]:
        if self.queued:
            self._encode(self.queued)
        return self._complete()

    def _encode(self, count: int) -> None:
        views = torch.cat(self.views) if len(self.views) > 1 else self.views[0]
        self.embeddings.append(self.encode(views[:count]))
        rest = views[count:]
        self.views, self.queued = ([rest] if len(rest) else []), len(rest)
        self.encoded += count

    def _complete(self) -> tuple[list, Tensor | None]:
        done, used = [], 0
        for item, count in self.items:
            if used + count > self.encoded:
                break
            done.append(item)
            used += count
        if not done:
            return [], None
        embeddings = torch.cat(self.embeddings) if len(self.embeddings) > 1 else self.embeddings[0]
        self.embeddings = [embeddings[used:]]
        self.encoded -= used
        self.items = self.items[len(done) :]
        return done, embeddings[:used]
