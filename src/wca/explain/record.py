"""The numbers behind the figures, as a JSON-ready dict."""

from __future__ import annotations

from typing import Any

from wca.classifier import Prediction, WCAClassifier
from wca.explain.evidence import class_evidence, class_index, class_scores, explained_classes


def explanation_record(
    prediction: Prediction,
    classifier: WCAClassifier,
    label: str | None = None,
    top_k: int | None = None,
) -> dict[str, Any]:
    """Every class's score and probability (best first), the crops (box, w_i) and, for the
    prediction's top classes (``top_k``, default all of ``prediction.labels``) plus the runner-up
    and the true ``label``, each description's v_j, local match (WCA) and whole-image
    similarity (CLIP-D)."""
    scores, probabilities = class_scores(prediction, classifier)
    order = scores.argsort(descending=True).tolist()
    explained = {c.index: c for c in explained_classes(prediction, classifier, label)}
    for index in order[: top_k or len(prediction.labels)]:
        if index not in explained:
            explained[index] = class_evidence(prediction, classifier, index, "class")
    head = classifier.head
    return {
        "image_size": list(prediction.image_size),
        "label": label,
        "correct": None if label is None else order[0] == class_index(classifier, label),
        "settings": {"image_scale": head.image_scale, "text_scale": head.text_scale,
                     "form": head.form, "n_crops": len(prediction.boxes)},  # fmt: skip
        "classes": [
            {"rank": rank, "name": classifier.classnames[c], "score": float(scores[c]),
             "probability": float(probabilities[c])}  # fmt: skip
            for rank, c in enumerate(order, 1)
        ],
        "crops": [
            {"box": [int(x) for x in box.tolist()], "weight": float(w)}
            for box, w in zip(prediction.boxes, prediction.crop_weights, strict=True)
        ],
        "explained": [
            {
                "name": c.name,
                "rank": c.rank,
                "role": c.role,
                "score": c.score,
                "probability": c.probability,
                "descriptions": [
                    {"text": d.text, "weight": d.weight, "local_match": d.local,
                     "whole_image": d.whole}  # fmt: skip
                    for d in c.descriptions
                ],
            }
            for c in sorted(explained.values(), key=lambda c: c.rank)
        ],
    }
