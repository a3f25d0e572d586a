"""``wca.zero_shot_pipeline``: transformers' ``pipeline("zero-shot-image-classification",
model=...)`` as wca builds it, a model spec in, a classifier that takes the pipeline's call out.

>>> classify = wca.zero_shot_pipeline(model="ViT-B-32/openai")      # WCA, the paper's crops
>>> classify("bird.jpg", candidate_labels=["albatross", "gull"])   # every label, best first
[{"label": "albatross", "score": 0.93}, {"label": "gull", "score": 0.07}]

Named ``zero_shot_pipeline`` because ``wca.pipeline`` is the module of one evaluation cell
(:mod:`wca.pipeline`); the task is the only one wca does, so it is not an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wca import defaults


def zero_shot_pipeline(
    model: str = "demo",
    *,
    descriptions: dict[str, list[str]] | str | Path | None = None,
    candidate_labels: Sequence[str] | None = None,
    method: str = "wca",
    device: str = defaults.DEVICE,
    precision: str = defaults.PRECISION,
    **options: Any,
):
    """A :class:`wca.WCAClassifier` of ``model`` (any spec of :mod:`wca.specs`: ``ARCH/TAG``,
    ``hf:ORG/NAME``, a path, ``demo``), called as the pipeline is: an image (path, http(s)
    URL, PIL image, array) or a list of them, ``candidate_labels`` (here, or at each call),
    ``top_k`` (None: every label) and, with ``method="clip"``, ``hypothesis_template``.
    ``descriptions`` describe the labels for WCA (labels without them: the CLIP prompt);
    ``options`` are the classifier's (crops, ``max_image_pixels``, the method's options)."""
    from wca.classifier import WCAClassifier
    from wca.encoders import load_encoder

    encoder = load_encoder(model, device=device, precision=precision)
    return WCAClassifier(encoder, candidate_labels, descriptions, method=method, **options)
