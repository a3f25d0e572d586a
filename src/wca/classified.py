"""The classifier's images scored: the predictions of encoded images (:func:`predictions`), and
the images read under the adaptive crop budget (:func:`predict_in_rounds`).

Under the adaptive budget (:class:`wca.budget.BudgetSpec`) each image reads its crops in rounds
(:mod:`wca.features.rounds`, the loop feature extraction runs) with the classifier's head as the
stopping head, and is scored by that head on its own prefix, exactly as the fixed classifier
with ``n_crops`` = its crop count would score it (its crops are that spec's). Images settle in
any order; their predictions come out in the order of the images.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from wca.checks import require_finite
from wca.features.judge import StoppingHead
from wca.features.rounds import Source, read_in_rounds, whole_image
from wca.features.views import BadImage, ViewItems, encode_views, iterate_views
from wca.images import image_key
from wca.prediction import Prediction, description_evidence
from wca.preprocessing import fidelity_views, image_to_tensor, uint8_views

if TYPE_CHECKING:
    from wca.classifier import WCAClassifier


def predictions(
    done: list, labels: Any, top_k: int, images: list, bar: Any, model: str, logit_scale: float
) -> Iterator[tuple[int, Prediction]]:
    """Predictions of the encoded images ``done`` (``(ImageViews, embeddings [1 + k, D])``, the
    same k), scored together by the label set's head."""
    if not done:
        return
    embeddings = torch.stack([emb for _, emb in done])
    image_emb, crop_emb = embeddings[:, 0], embeddings[:, 1:]
    head = labels.head
    scores = head.logits(image_emb, crop_emb if head.uses_crops else None)
    require_finite(scores, model, "score")
    probabilities = head.probabilities(scores, logit_scale)
    top = probabilities.topk(top_k, dim=-1)
    weights = head.crop_weights(image_emb, crop_emb) if head.evidence else None
    for row, (item, _) in enumerate(done):
        indices = top.indices[row].tolist()
        evidence = {}
        if weights is not None:
            weighted = weights[row] @ crop_emb[row].float()
            scores_of = head.description_scores(indices, weighted)
            evidence = description_evidence(labels.classnames, labels.descriptions, indices,
                                            scores_of)  # fmt: skip
        source = images[item.index]
        bar.update(1)
        yield (
            item.index,
            Prediction(
                labels=[labels.classnames[c] for c in indices],
                scores=top.values[row].tolist(),
                indices=indices,
                boxes=item.boxes[: crop_emb.shape[1]],
                crop_weights=weights[row] if weights is not None else torch.zeros(0),
                descriptions=evidence,
                image_size=item.size,
                image_emb=image_emb[row].float(),
                crop_emb=crop_emb[row].float(),
                source=str(source) if isinstance(source, str | Path) else None,
            ),
        )


def predict_in_rounds(
    classifier: WCAClassifier,
    inputs: Any,
    labels: Any,
    top_k: int,
    images: list,
    bar: Any,
    batch_size: int,
) -> Iterator[tuple[int, Prediction | Exception]]:
    """``(position, prediction or error)`` of every image of ``inputs`` in order, each image
    read in rounds under the classifier's budget with its label set's head stopping it; an
    unreadable image gives its ValueError (another error is raised)."""
    encoder = classifier.encoder
    head = labels.head
    budget = classifier.budget.stopping(classifier.crops.n_crops)
    stopping = StoppingHead(head, budget, float(encoder.logit_scale))
    loader = (
        whole_image
        if classifier.fidelity
        else lambda image, boxes, flips=None: image_to_tensor(image)
    )
    items = ViewItems(
        inputs, range(len(images)), loader, classifier.crops, key=lambda _, image: image_key(image)
    )
    finished: dict[int, Prediction | Exception] = {}

    def sources() -> Iterator[Source]:
        for item in iterate_views(items, 0):
            if isinstance(item, BadImage):
                if not isinstance(item.error, ValueError):
                    raise item.error
                bar.update(1)
                finished[item.index] = item.error
                continue
            yield Source(item, item.views, item.boxes, item.flips)

    def cut(pixels: Any, boxes: Any, flips: Any, full: bool) -> Any:  # as the fixed views
        if classifier.fidelity:
            return fidelity_views(pixels, boxes, encoder.preprocess, full=full)
        return uint8_views(pixels, boxes, encoder.preprocessing, full=full)

    encode = functools.partial(encode_views, encoder)
    settled = read_in_rounds(sources(), stopping, encode, batch_size, cut)
    model = str(getattr(encoder, "name", type(encoder).__name__))
    scale = float(encoder.logit_scale)
    following = 0
    for item, embeddings in settled:
        finished.update(predictions([(item, embeddings)], labels, top_k, images, bar, model,
                                    scale))  # fmt: skip
        while following in finished:
            yield following, finished.pop(following)
            following += 1
    for position in sorted(finished):
        yield position, finished.pop(position)
