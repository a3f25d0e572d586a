"""The numbers every explanation shows, computed from a prediction's embeddings and the
classifier's WCA head: class scores, crop weights w_i, description weights v_j and, per
description, WCA's local match sum_i w_i cos(crop_i, desc_j) beside CLIP-D's whole-image
cos(image, desc_j)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from wca.classifier import Prediction, WCAClassifier
from wca.defaults import MAX_IMAGE_PIXELS
from wca.images import load_image

ImageLike = str | Path | Image.Image | Tensor


def as_image(image: ImageLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """An RGB PIL image from a file path, a PIL image or a tensor (``[3, H, W]`` or
    ``[H, W, 3]``; uint8, or float in [0, 1]); a file above ``max_pixels`` is refused (0: no
    limit)."""
    if isinstance(image, Tensor):
        from torchvision.transforms.functional import to_pil_image

        pixels = image.detach().cpu()
        if pixels.ndim == 3 and pixels.shape[-1] in (1, 3) and pixels.shape[0] not in (1, 3):
            pixels = pixels.permute(2, 0, 1)
        if pixels.ndim != 3 or pixels.shape[0] not in (1, 3):
            shape = list(image.shape)
            raise ValueError(f"image tensor must be [3, H, W] or [H, W, 3], not {shape}")
        if pixels.is_floating_point():
            pixels = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)
        return to_pil_image(pixels).convert("RGB")
    return load_image(image, max_pixels)


@dataclass
class DescriptionEvidence:
    """One description of a class and the two similarities the figure compares."""

    text: str
    weight: float  # v_j
    local: float  # sum_i w_i cos(crop_i, desc_j): what WCA scores
    whole: float | None  # cos(full image, desc_j): what CLIP-D scores (None: unknown)


@dataclass
class ClassEvidence:
    """A class, its place in the ranking and its descriptions' evidence (in file order)."""

    name: str
    index: int
    rank: int  # 1 = the prediction
    score: float  # WCA's class score before the softmax
    probability: float
    role: str  # "prediction", "runner-up", "true class" or "class"
    descriptions: list[DescriptionEvidence]

    def by_weight(self, limit: int | None = None) -> list[DescriptionEvidence]:
        """The descriptions by decreasing weight v_j (the ones that move the score most first)."""
        return sorted(self.descriptions, key=lambda d: -d.weight)[:limit]


def class_scores(prediction: Prediction, classifier: WCAClassifier) -> tuple[Tensor, Tensor]:
    """WCA's score and probability of every class ``[C]``, as ``predict`` computes them."""
    image_emb, crop_emb = prediction.image_emb[None], prediction.crop_emb[None]
    scores = classifier.head.logits(image_emb, crop_emb)[0]
    return scores, torch.softmax(classifier.encoder.logit_scale * scores, dim=-1)


def similarities(prediction: Prediction, classifier: WCAClassifier, index: int) -> Tensor:
    """cos(crop_i, desc_j) of every crop and description of class ``index``: ``[N, M_c]``."""
    count = len(classifier.descriptions[index])
    return prediction.crop_emb @ classifier.head.desc_emb[index, :count].float().T


def class_evidence(
    prediction: Prediction,
    classifier: WCAClassifier,
    index: int,
    role: str = "class",
    scores: tuple[Tensor, Tensor] | None = None,
) -> ClassEvidence:
    """The evidence of class ``index`` for one predicted image."""
    score, probability = scores if scores is not None else class_scores(prediction, classifier)
    texts = classifier.descriptions[index]
    desc_emb = classifier.head.desc_emb[index, : len(texts)].float()
    v = classifier.head.description_weights()[index]
    local = desc_emb @ (prediction.crop_weights.float() @ prediction.crop_emb)
    whole = desc_emb @ prediction.image_emb
    rows = [
        DescriptionEvidence(text, float(v[j]), float(local[j]), float(whole[j]))
        for j, text in enumerate(texts)
    ]
    rank = int((score > score[index]).sum()) + 1
    return ClassEvidence(
        classifier.classnames[index],
        index,
        rank,
        float(score[index]),
        float(probability[index]),
        role,
        rows,
    )


def explained_classes(
    prediction: Prediction, classifier: WCAClassifier, label: str | None = None
) -> list[ClassEvidence]:
    """The prediction, the runner-up and, when ``label`` is given and differs, the true class."""
    scores = class_scores(prediction, classifier)
    order = scores[0].argsort(descending=True).tolist()
    chosen = [(order[0], "prediction")]
    if len(order) > 1:
        chosen.append((order[1], "runner-up"))
    if label is not None:
        index = class_index(classifier, label)
        if index not in order[:2]:
            chosen.append((index, "true class"))
    return [class_evidence(prediction, classifier, c, role, scores) for c, role in chosen]


def class_index(classifier: WCAClassifier, label: str) -> int:
    """The position of class ``label``, or a ValueError naming the label."""
    if label not in classifier.classnames:
        raise ValueError(f"label {label!r} is not one of the {len(classifier.classnames)} classes")
    return classifier.classnames.index(label)
