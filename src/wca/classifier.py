"""The Python API: an encoder, class names and descriptions in; predictions with their evidence out.

>>> encoder = wca.load_encoder("open_clip:ViT-B-32/openai")
>>> classifier = wca.WCAClassifier(encoder, classnames, "cupl.json")
>>> classifier("bird.jpg")          # like the Hugging Face zero-shot pipeline
[{"label": "Laysan Albatross", "score": 0.91}, ...]
>>> prediction = classifier.predict(["bird.jpg"])[0]
>>> prediction.crop_weights, prediction.descriptions["Laysan Albatross"][0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image
from torch import Tensor

from wca.crops import (
    DEFAULT_BETA,
    Preprocessing,
    crop_boxes,
    fast_views,
    fidelity_views,
    load_image,
)
from wca.descriptions.io import load_descriptions, match_descriptions
from wca.methods import TextSources, WCAHead, build_head
from wca.scoring import crop_weights

ImageInput = str | Path | Image.Image


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


class WCAClassifier:
    """Zero-shot classification by weighted visual-text cross alignment.

    ``descriptions`` is ``{class: [sentence, ...]}`` or a JSON file of that shape (CuPL sets or
    ``wca describe`` output). Crops are drawn from ``(seed, position of the image in the call)``.
    ``fidelity=True`` preprocesses every crop with the model's own transform (the authors' way)
    instead of the fast tensor path.
    """

    def __init__(
        self,
        encoder: ImageTextEncoder,
        classnames: Sequence[str],
        descriptions: dict[str, list[str]] | str | Path,
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
        if not isinstance(descriptions, dict):
            descriptions = load_descriptions(descriptions)
        self.encoder = encoder
        self.classnames = list(classnames)
        self.descriptions = match_descriptions(self.classnames, descriptions)
        self.n_crops, self.alpha, self.beta, self.seed = n_crops, alpha, beta, seed
        self.fidelity = fidelity
        sources = TextSources(
            self.classnames, sentences=dict(zip(self.classnames, self.descriptions, strict=True))
        )
        self.head: WCAHead = build_head(
            "wca",
            encoder.encode_texts,
            sources,
            allow_duplicates=allow_duplicates,
            image_scale=image_scale,
            text_scale=text_scale,
            form=form,
        )

    def views(self, image: Image.Image, index: int) -> tuple[Tensor, Tensor]:
        """Crop boxes ``[N, 4]`` and preprocessed views ``[N+1, 3, S, S]`` (full view first)."""
        boxes = crop_boxes(
            image.height, image.width, self.n_crops, self.alpha, self.beta, self.seed, index
        )
        if self.fidelity:
            return boxes, fidelity_views(image, boxes, self.encoder.preprocess)
        return boxes, fast_views(image, boxes, self.encoder.preprocessing)

    def predict(
        self, images: ImageInput | Sequence[ImageInput], top_k: int = 5
    ) -> list[Prediction]:
        """Top-k classes of every image, with crop boxes, crop weights and description scores."""
        images = [images] if isinstance(images, str | Path | Image.Image) else list(images)
        top_k = min(top_k, len(self.classnames))
        v = self.head.description_weights()
        predictions = []
        for index, source in enumerate(images):
            image = load_image(source)
            boxes, views = self.views(image, index)
            embeddings = self.encoder.encode_images(views)
            image_emb, crop_emb = embeddings[:1], embeddings[1:].unsqueeze(0)
            scores = self.head.logits(image_emb, crop_emb)[0]
            probabilities = torch.softmax(self.encoder.logit_scale * scores, dim=-1)
            top = probabilities.topk(top_k)
            w = crop_weights(crop_emb, image_emb, self.head.image_scale)[0]
            weighted_crop = w @ crop_emb[0]
            evidence = {}
            for c in top.indices.tolist():
                count = len(self.descriptions[c])
                similarity = self.head.desc_emb[c, :count] @ weighted_crop
                rows = [
                    DescriptionScore(text, float(v[c, j]), float(similarity[j]))
                    for j, text in enumerate(self.descriptions[c])
                ]
                evidence[self.classnames[c]] = sorted(rows, key=lambda r: -r.weight * r.similarity)
            predictions.append(
                Prediction(
                    labels=[self.classnames[c] for c in top.indices.tolist()],
                    scores=top.values.tolist(),
                    indices=top.indices.tolist(),
                    boxes=boxes,
                    crop_weights=w,
                    descriptions=evidence,
                    image_size=image.size,
                    image_emb=image_emb[0].float(),
                    crop_emb=crop_emb[0].float(),
                )
            )
        return predictions

    def __call__(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5):
        """Hugging Face pipeline-shaped output: a list of ``{"label", "score"}`` for one image,
        a list of such lists for several."""
        predictions = [p.as_pipeline() for p in self.predict(images, top_k)]
        return predictions[0] if isinstance(images, str | Path | Image.Image) else predictions
