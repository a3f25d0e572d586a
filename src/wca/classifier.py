"""The Python API: an encoder, class names and descriptions in; predictions with their evidence out.

>>> encoder = wca.load_encoder("open_clip:ViT-B-32/openai")
>>> classifier = wca.WCAClassifier(encoder, classnames, "cupl.json")
>>> classifier("bird.jpg")          # like the Hugging Face zero-shot pipeline: every label
[{"label": "Laysan Albatross", "score": 0.91}, ...]
>>> classifier("https://example.com/bird.jpg", candidate_labels=["albatross", "gull"])
>>> wca.zero_shot_pipeline(model="ViT-B-32/openai")(image, candidate_labels=[...])  # as HF
>>> prediction = classifier.predict(["bird.jpg"])[0]
>>> prediction.crop_weights, prediction.descriptions["Laysan Albatross"][0]

An image's crops are drawn from ``(seed, image key)``, the key a hash of its decoded pixels
(:func:`image_key`), so the same image gets the same crops and the same answer alone, in a
list or in another order. (``wca eval`` keys crops on the image's index in the dataset instead,
as the authors' protocol does.) Images are decoded and cut in a background thread and their
views packed into encoder batches of ``encoder.batch_size`` views, as feature extraction does
(:mod:`wca.features.views`).
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from wca import defaults
from wca.budget import BUDGET_SETTINGS, BudgetSpec
from wca.checks import require_finite
from wca.classified import predict_in_rounds, predictions
from wca.compat import RENAMED_SETTINGS, renamed
from wca.crops import CropSpec
from wca.descriptions.io import (
    class_key,
    load_descriptions,
    match_descriptions,
    validate_descriptions,
)
from wca.errors import SettingError
from wca.features.views import BadImage, ViewBatcher, ViewItems, encode_views, iterate_views
from wca.images import as_image, image_key
from wca.methods import Head, TextSources, build_head
from wca.prediction import Prediction
from wca.preprocessing import Preprocessing, fidelity_views, normalize_pixels, uint8_views
from wca.progress import progress_bar

log = logging.getLogger("wca")
ImageInput = str | Path | Image.Image | np.ndarray
PROGRESS_MIN_IMAGES = 8  # predict shows a progress bar from this many images on
LABEL_SETS = 8  # label sets whose text side is kept (calls with candidate_labels)


class ImageTextEncoder(Protocol):
    """What the classifier needs of an encoder (``wca.load_encoder`` returns one)."""

    preprocessing: Preprocessing
    logit_scale: float

    def preprocess(self, image: Image.Image) -> Tensor: ...
    def encode_images(self, pixels: Tensor) -> Tensor: ...
    def encode_texts(self, texts: list[str]) -> Tensor: ...


@dataclass(frozen=True)
class _LabelSet:
    """The classes of one call and their text side."""

    classnames: list[str]
    descriptions: list[list[str]]
    head: Head


def _classnames(classnames: Sequence[str]) -> list[str]:
    if isinstance(classnames, str) or not isinstance(classnames, Sequence):
        raise ValueError(f"classnames must be a list of strings, got {classnames!r}")
    bad = [name for name in classnames if not isinstance(name, str) or not name.strip()]
    if bad:
        raise ValueError(f"classnames must be non-empty strings, got {bad[0]!r}")
    if len(classnames) < 2:
        raise ValueError(f"give at least two classes, got {list(classnames)!r}")
    return list(classnames)


class _Inputs:
    """The caller's images as a dataset: ``inputs[i] -> (RGB image, no label)``."""

    def __init__(self, images: list[ImageInput], max_pixels: int) -> None:
        self.images, self.max_pixels = images, max_pixels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return as_image(self.images[index], self.max_pixels), -1


class WCAClassifier:
    """Zero-shot classification by weighted visual-text cross alignment.

    ``classnames``: the classes of calls without ``candidate_labels`` (None: every call gives
    its labels, as transformers' pipeline). ``descriptions`` is ``{class: [sentence, ...]}`` or
    a JSON file of that shape (CuPL sets or ``wca describe`` output) with every class of
    ``classnames`` (an empty one is an error); None uses the CLIP prompt "a photo of a
    {class}." alone, as do ``candidate_labels`` of a call that have no descriptions. Crops:
    ``crops=CropSpec(...)``, or ``n_crops``, ``alpha``, ``beta``, ``seed``, ``crop_strategy``
    (defaults: the paper's, :mod:`wca.defaults`), drawn per image from
    ``(seed, image_key(image))``. ``method``: any per-image head of :data:`wca.METHODS`
    (default ``wca``), ``options`` its options (``image_scale``, ``text_scale``, ``form`` for
    WCA). ``fidelity=True`` preprocesses every crop with the model's own transform (the authors'
    way) instead of the fast tensor path. ``max_image_pixels``: larger images are refused (0:
    no limit), a guard against decompression bombs. How many crops an image reads:
    ``budget=BudgetSpec(...)``, or ``crop_budget``, ``stop_rule``, ``margin_z``, ``patience``,
    ``min_crops``, ``crops_per_round`` (default: the fixed N; :mod:`wca.budget`).
    """

    def __init__(
        self,
        encoder: ImageTextEncoder,
        classnames: Sequence[str] | None = None,
        descriptions: dict[str, list[str]] | str | Path | None = None,
        *,
        crops: CropSpec | None = None,
        n_crops: int | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        seed: int | None = None,
        crop_strategy: str | None = None,
        method: str = "wca",
        fidelity: bool = False,
        allow_duplicate_classes: bool = False,
        max_image_pixels: int = defaults.MAX_IMAGE_PIXELS,
        budget: BudgetSpec | None = None,
        **options: Any,
    ) -> None:
        options = renamed(options, RENAMED_SETTINGS, "WCAClassifier")
        spent = {name: options.pop(name) for name in BUDGET_SETTINGS if name in options}
        if budget is not None and spent:
            raise ValueError(f"give budget=BudgetSpec(...) or {', '.join(spent)}, not both")
        allow_duplicate_classes = options.pop("allow_duplicate_classes", allow_duplicate_classes)
        loose = {"n_crops": n_crops, "alpha": alpha, "beta": beta, "seed": seed,
                 "crop_strategy": crop_strategy}  # fmt: skip
        loose = {name: value for name, value in loose.items() if value is not None}
        if crops is not None and loose:
            raise ValueError(f"give crops=CropSpec(...) or {', '.join(loose)}, not both")
        self.crops = crops if crops is not None else CropSpec(**loose)
        self.budget = budget if budget is not None else BudgetSpec(**spent)
        self.budget.stopping(self.crops.n_crops)  # min_crops <= n_crops, checked now
        if isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, int):
            raise SettingError("max_image_pixels", f"must be an integer, got {max_image_pixels!r}")
        if max_image_pixels < 0:
            raise SettingError("max_image_pixels", f"must be >= 0, got {max_image_pixels}")
        self.max_image_pixels = max_image_pixels
        source = str(descriptions) if isinstance(descriptions, str | Path) else "descriptions"
        given = descriptions is not None
        if descriptions is None:
            descriptions = {}
        elif isinstance(descriptions, dict):
            descriptions = validate_descriptions(descriptions)
        elif isinstance(descriptions, str | Path):
            descriptions = load_descriptions(descriptions)
        else:
            raise ValueError(
                "descriptions must be {class: [sentence, ...]} or the path of such a JSON file, "
                f"got a {type(descriptions).__name__}"
            )
        if given and not descriptions:  # {}: not "no descriptions", which is None
            raise ValueError(
                f"{source}: no class has descriptions (an empty object); give {{class: "
                "[sentence, ...]}, or no descriptions to score with the CLIP prompt alone"
            )
        self.encoder = encoder
        self.method, self.options, self.fidelity = method, options, bool(fidelity)
        self.allow_duplicate_classes = bool(allow_duplicate_classes)
        self.known = {class_key(name): texts for name, texts in descriptions.items()}
        self._model = str(getattr(encoder, "name", type(encoder).__name__))
        self._label_sets: OrderedDict[tuple[str, ...], _LabelSet] = OrderedDict()
        if descriptions:
            from wca.encoders.tokens import check_texts

            check_texts(encoder, descriptions, source)  # over the text context: one warning
        self.classnames = self.descriptions = self.head = None  # labels at call time only
        if classnames is not None:
            names = _classnames(classnames)
            if descriptions:  # the classifier's own classes: every one needs its descriptions
                match_descriptions(names, descriptions, source)
            default = self._label_set(tuple(names))
            self.classnames, self.descriptions, self.head = (
                default.classnames,
                default.descriptions,
                default.head,
            )

    @property
    def n_crops(self) -> int:
        return self.crops.n_crops

    @property
    def alpha(self) -> float:
        return self.crops.alpha

    @property
    def seed(self) -> int:
        return self.crops.seed

    def _label_set(self, classnames: tuple[str, ...], **options: Any) -> _LabelSet:
        """The text side of ``classnames`` (cached: the last :data:`LABEL_SETS` sets)."""
        key = (*classnames, *sorted(f"{k}={v}" for k, v in options.items()))
        if key in self._label_sets:
            self._label_sets.move_to_end(key)
            return self._label_sets[key]
        names = list(classnames)
        bare = [name for name in names if class_key(name) not in self.known]
        if bare and self.known:  # some texts were given, these classes have none
            log.info(
                f"{len(bare)} of {len(names)} classes have no descriptions "
                f"({', '.join(map(repr, bare[:5]))}{' ...' if len(bare) > 5 else ''}): each is "
                f"described by the CLIP prompt {defaults.LABEL_TEMPLATE.format('{class}')!r}"
            )
        texts = [
            self.known.get(class_key(name)) or [defaults.LABEL_TEMPLATE.format(name)]
            for name in names
        ]
        sources = TextSources(names, sentences=dict(zip(names, texts, strict=True)))
        head = build_head(
            self.method,
            self.encoder,
            sources,
            allow_duplicate_classes=self.allow_duplicate_classes,
            **{**self.options, **options},
        )
        if head.online:
            raise ValueError(f"method {self.method!r} is an online method: use wca eval")
        text = head.text_features()
        if text is not None:
            require_finite(text, self._model, "text side")
        self._label_sets[key] = _LabelSet(names, texts, head)
        if len(self._label_sets) > LABEL_SETS:
            self._label_sets.popitem(last=False)
        return self._label_sets[key]

    def boxes(self, image: Image.Image) -> Tensor:
        """The image's crop boxes ``[N, 4]``, from ``(seed, image_key(image))``."""
        return self.crops.views(image.height, image.width, image_key(image))[0]

    def views(self, image: Image.Image) -> tuple[Tensor, Tensor]:
        """Crop boxes ``[N, 4]`` and preprocessed views ``[N+1, 3, S, S]`` (full view first)."""
        boxes = self.boxes(image)
        views = self._make_views(image, boxes)
        if views.dtype == torch.uint8:
            views = normalize_pixels(views, self.encoder.preprocessing)
        return boxes, views

    def _make_views(self, image: Image.Image, boxes: Tensor, flips: Tensor | None = None, *,
                    head: Head | None = None):  # fmt: skip
        """Views as the loader makes them for ``head`` (default: the classifier's): ``uint8``
        on the fast path (normalised a whole batch at a time, on the encoder's device), float
        on the fidelity path."""
        if not (head or self.head).uses_crops:
            boxes = boxes[:0]
        if self.fidelity:
            return fidelity_views(image, boxes, self.encoder.preprocess)
        return uint8_views(image, boxes, self.encoder.preprocessing)

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        top_k: int | None = 5,
        *,
        candidate_labels: Sequence[str] | None = None,
        progress: bool | None = None,
        **options: Any,
    ) -> list[Prediction]:
        """Top-k classes of every image (all, sorted, with ``top_k=None``), with crop boxes,
        crop weights and description scores. An image that cannot be read raises its error
        (:meth:`predict_each` goes on past it)."""
        each = self.predict_each(
            images, top_k, candidate_labels=candidate_labels, progress=progress, **options
        )
        predictions = []
        for _, result in each:
            if isinstance(result, Exception):
                raise result
            predictions.append(result)
        return predictions

    def predict_each(
        self,
        images: ImageInput | Sequence[ImageInput],
        top_k: int | None = 5,
        *,
        candidate_labels: Sequence[str] | None = None,
        progress: bool | None = None,
        **options: Any,
    ) -> Iterator[tuple[int, Prediction | ValueError]]:
        """``(position, prediction)`` for every image in order, each as soon as its encoder
        batch is done; an unreadable image gives ``(position, ValueError)`` and the rest go on.
        ``candidate_labels``: other classes than the classifier's (their text side is computed
        once and kept). ``progress``: a bar on stderr (default: from :data:`PROGRESS_MIN_IMAGES`
        images on). Non-finite embeddings or scores (a corrupt model) raise."""
        images = list(images) if isinstance(images, list | tuple) else [images]
        if candidate_labels is None and self.classnames is None:
            raise ValueError("no labels: give candidate_labels (this classifier has no classnames)")
        labels = self._label_set(
            tuple(_classnames(candidate_labels))
            if candidate_labels is not None
            else tuple(self.classnames),
            **options,
        )
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1
        ):
            raise ValueError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
        top_k = len(labels.classnames) if top_k is None else min(top_k, len(labels.classnames))
        show = len(images) >= PROGRESS_MIN_IMAGES if progress is None else progress
        items = ViewItems(
            _Inputs(images, self.max_image_pixels),
            range(len(images)),
            functools.partial(self._make_views, head=labels.head),
            self.crops,
            key=lambda _, image: image_key(image),
        )
        batcher = ViewBatcher(functools.partial(encode_views, self.encoder), self._batch_size())
        with progress_bar(total=len(images), unit="img", desc="classify", enabled=show) as bar:
            if self.budget.adaptive and labels.head.uses_crops:
                inputs, size = items.dataset, self._batch_size()
                yield from predict_in_rounds(self, inputs, labels, top_k, images, bar, size)
                return
            for item in iterate_views(items, 0):
                if isinstance(item, BadImage):
                    yield from self._scored(batcher.flush(), labels, top_k, images, bar)
                    error = item.error
                    if not isinstance(error, ValueError):
                        raise error
                    bar.update(1)
                    yield item.index, error
                    continue
                done = batcher.add(item, item.views)
                yield from self._scored(done, labels, top_k, images, bar)
            yield from self._scored(batcher.flush(), labels, top_k, images, bar)

    def _batch_size(self) -> int:
        return int(getattr(self.encoder, "batch_size", None) or defaults.BATCH_SIZE)

    def _scored(self, done: list, labels: _LabelSet, top_k: int, images: list, bar: tqdm):
        scale = float(self.encoder.logit_scale)
        return predictions(done, labels, top_k, images, bar, self._model, scale)

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput],
        candidate_labels: Sequence[str] | None = None,
        top_k: int | None = None,
        hypothesis_template: str | None = None,
    ):
        """Transformers' zero-shot-image-classification pipeline call: a list of ``{"label",
        "score"}`` (highest first; every label, as the pipeline, unless ``top_k``) for one image
        (a path, an http(s) URL, a PIL image, an array), a list of such lists for several.
        ``candidate_labels`` replace the classifier's classes for this call;
        ``hypothesis_template`` (method ``clip``) replaces "a photo of a {}."."""
        options = {} if hypothesis_template is None else {"template": hypothesis_template}
        predictions = self.predict(images, top_k, candidate_labels=candidate_labels, **options)
        pipeline = [prediction.as_pipeline() for prediction in predictions]
        return (
            pipeline[0] if isinstance(images, str | Path | Image.Image | np.ndarray) else pipeline
        )
