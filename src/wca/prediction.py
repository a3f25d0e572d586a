"""What the classifier answers: an image's top classes and the evidence behind them."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class DescriptionScore:
    """One description of a class: its weight v_j and its crop-weighted similarity
    sum_i w_i cos(crop_i, desc_j), so that the paper-form score is sum_j weight * similarity."""

    description: str
    weight: float
    similarity: float


@dataclass(repr=False)
class Prediction:
    """The top-k classes of one image and the evidence behind them (WCA's; other methods
    leave ``crop_weights`` and ``descriptions`` empty)."""

    labels: list[str]
    scores: list[float]  # softmax probabilities over all classes
    indices: list[int]
    boxes: Tensor  # [N, 4] crop boxes (left, top, right, bottom) in image pixels
    crop_weights: Tensor  # [N] w_i
    descriptions: dict[str, list[DescriptionScore]]  # per top-k label, by decreasing contribution
    image_size: tuple[int, int]  # (width, height)
    image_emb: Tensor  # [D] the full view's embedding (L2-normalised), for other heads
    crop_emb: Tensor  # [N, D] the crops' embeddings, for per-crop evidence
    source: str | None = None  # the image's file, when it was given as a path

    def __repr__(self) -> str:
        image = self.source or "{}x{} image".format(*self.image_size)
        return f"Prediction(label={self.labels[0]!r}, score={self.scores[0]:.4f}, image={image!r})"

    def as_pipeline(self) -> list[dict[str, float | str]]:
        """The Hugging Face zero-shot-image-classification output shape."""
        return [{"label": lab, "score": s} for lab, s in zip(self.labels, self.scores, strict=True)]


def description_evidence(
    classnames: list[str],
    descriptions: list[list[str]],
    indices: list[int],
    scores: list[tuple[Tensor, Tensor]],
) -> dict[str, list[DescriptionScore]]:
    """Each class of ``indices``: its descriptions with their weight v_j and similarity
    sum_i w_i cos(crop_i, desc_j) (``scores``, a head's ``description_scores``), by decreasing
    contribution."""
    evidence = {}
    for c, (weights, similarities) in zip(indices, scores, strict=True):
        rows = [
            DescriptionScore(text, float(weight), float(similarity))
            for text, weight, similarity in zip(
                descriptions[c], weights.tolist(), similarities.tolist(), strict=True
            )
        ]
        evidence[classnames[c]] = sorted(rows, key=lambda r: -r.weight * r.similarity)
    return evidence
