"""Where each description matches, and where WCA's crop weights lie: evidence maps over the image.

Every map contrasts the crops covering a place with the crops that do not
(:mod:`wca.explain.contrast`), so coverage cancels: a place seen by few crops (the border) is
not favoured. The crops are explanation windows (:mod:`wca.explain.windows`: small views encoded
for the maps only; WCA's own crops are too large to point at small parts), or WCA's crops with
``windows=None``. The values contrasted are, per crop,

- for a description j of the class: cos(crop, desc_j) - cos(crop, mean description), its match
  beyond what the crop shares with every description of every class;
- for the crop weights: cos(crop, full view), what WCA's weights w_i reward.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from torch import Tensor

from wca.classifier import Prediction, WCAClassifier
from wca.explain.contrast import Contrast, contrast, cover_masks
from wca.explain.evidence import ImageLike, as_image, class_scores, similarities
from wca.explain.windows import Windows, window_embeddings

WINDOWS = Windows()  # the default explanation crops
MAP_SIDE = 128  # the maps' long side in cells, at most (one cell per pixel below it)
SHOWN_SIDE = 384  # images larger than this are drawn from a copy of this long side
PANEL_INCHES = 3.9  # a panel's width
DPI = 100
HEAVY_BOXES = 3  # crop boxes drawn on the image (one colour each)
CMAP = "RdBu_r"  # red: matches more where the crops cover, blue: less


def display_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """``(width, height)`` with the long side at most ``long_side``, aspect kept."""
    width, height = size
    factor = min(1.0, long_side / max(width, height))
    return max(1, round(width * factor)), max(1, round(height * factor))


@dataclass
class WhereMaps:
    """The evidence maps of one image: ``maps.t[0]`` for the crop weights, ``maps.t[1 + k]``
    for description ``descriptions[k]`` of class ``class_index`` (see :class:`Contrast`)."""

    class_index: int
    descriptions: list[int]
    boxes: Tensor  # [N, 4] the crops the maps are made of
    windows: Windows | None  # None: WCA's own crops
    maps: Contrast


def top_descriptions(
    prediction: Prediction, classifier: WCAClassifier, index: int, count: int
) -> list[int]:
    """The ``count`` descriptions of class ``index`` with the largest contribution
    v_j * sum_i w_i cos(crop_i, desc_j) to its score."""
    local = prediction.crop_weights.float() @ similarities(prediction, classifier, index)
    v = classifier.head.description_weights()[index, : local.shape[0]]
    return (v * local).argsort(descending=True)[:count].tolist()


def mean_description(classifier: WCAClassifier) -> Tensor:
    """The mean embedding ``[D]`` of every description of every class."""
    rows = [
        classifier.head.desc_emb[c, : len(texts)].float()
        for c, texts in enumerate(classifier.descriptions)
    ]
    return torch.cat(rows).mean(0)


def where_maps(
    image: ImageLike,
    prediction: Prediction,
    classifier: WCAClassifier,
    *,
    class_index: int | None = None,
    descriptions: list[int] | None = None,
    top: int = 3,
    windows: Windows | None = WINDOWS,
    cache: bool = True,
    grid: tuple[int, int] | None = None,
) -> WhereMaps:
    """The evidence maps of ``image`` for class ``class_index`` (default: the prediction) and
    its ``descriptions`` (default: the ``top`` that add most to its score), on ``grid = (w, h)``
    cells (default: the image, long side at most :data:`MAP_SIDE`). ``windows``: the
    explanation crops (encoded, or read from the cache when ``cache``); None: WCA's crops."""
    picture = _checked(image, prediction)
    if class_index is None:
        class_index = int(class_scores(prediction, classifier)[0].argmax())
    if descriptions is None:
        descriptions = top_descriptions(prediction, classifier, class_index, top)
    if windows is None:
        boxes, crops = prediction.boxes, prediction.crop_emb.float()
    else:
        boxes, crops = window_embeddings(classifier.encoder, picture, windows, cache)
    desc = classifier.head.desc_emb[class_index, descriptions].float()
    matches = crops @ desc.T - (crops @ mean_description(classifier))[:, None]
    values = torch.cat([(crops @ prediction.image_emb.float())[:, None], matches], 1)
    grid = grid or display_size(picture.size, MAP_SIDE)
    maps = contrast(cover_masks(boxes, picture.size, grid), values.T)
    return WhereMaps(class_index, list(descriptions), boxes, windows, maps)


def _checked(image: ImageLike, prediction: Prediction) -> Image.Image:
    picture = as_image(image)
    if picture.size != tuple(prediction.image_size):
        raise ValueError(
            f"image is {picture.size[0]}x{picture.size[1]} but the prediction was made on "
            f"{prediction.image_size[0]}x{prediction.image_size[1]}"
        )
    return picture


def where_figure(
    image: ImageLike,
    prediction: Prediction,
    classifier: WCAClassifier,
    top_descriptions: int = 3,
    *,
    windows: Windows | None = WINDOWS,
    cache: bool = True,
) -> Figure:
    """The image with WCA's heaviest crops, the crop-weight map, a key to reading the maps,
    and one map per top description of the predicted class, all on one colour scale (t,
    symmetric around zero). A map without localized evidence says so instead of stretching
    its colours over noise."""
    picture = _checked(image, prediction)
    found = where_maps(
        picture, prediction, classifier, top=top_descriptions, windows=windows, cache=cache
    )
    columns, panels = 3, 3 + len(found.descriptions)
    rows = math.ceil(panels / columns)
    aspect = min(1.3, max(0.6, picture.height / picture.width))
    heights = [PANEL_INCHES * aspect + 1.0] * rows + [0.75]
    figure = Figure(figsize=(columns * PANEL_INCHES, sum(heights)), dpi=DPI, layout="constrained")
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=heights)
    axes = [figure.add_subplot(grid[i // columns, i % columns]) for i in range(rows * columns)]
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
    name = classifier.classnames[found.class_index]
    figure.suptitle(f"Where the descriptions of '{name}' (the prediction) match", fontsize=13)
    shown = np.asarray(picture.resize(display_size(picture.size, SHOWN_SIDE), Image.LANCZOS))
    grey = np.asarray(Image.fromarray(shown).convert("L").convert("RGB"))
    _image_panel(axes[0], shown, prediction, picture.size)
    limit = colour_limit(found.maps)
    _heat_panel(axes[1], grey, found.maps, 0, "Crop weights: where WCA looks", limit)
    _key_panel(axes[2], found, len(prediction.boxes))
    texts = classifier.descriptions[found.class_index]
    for k, j in enumerate(found.descriptions):
        title = textwrap.fill(f'"{texts[j]}"', 44, max_lines=2, placeholder=" ...")
        _heat_panel(axes[3 + k], grey, found.maps, 1 + k, title, limit)
    for ax in axes[panels:]:
        ax.set_axis_off()
    clipped = bool((found.maps.t.nan_to_num(0).abs() > limit).any())
    _colour_bar(figure, figure.add_subplot(grid[rows, :]), limit, clipped)
    return figure


def colour_limit(maps: Contrast) -> float:
    """The colour scale of a figure's maps, -limit to +limit: their largest |t|, at least 1.5 and
    at most 10 times the largest noise level (larger t are drawn at the end of the scale)."""
    largest, noise = float(maps.t.nan_to_num(0).abs().max()), float(maps.noise.max())
    return min(max(largest, 1.5 * noise), 10 * noise)


def _image_panel(ax, shown: np.ndarray, prediction: Prediction, size: tuple[int, int]) -> None:
    ax.imshow(shown, interpolation="nearest")
    factor = shown.shape[1] / size[0]
    weights = prediction.crop_weights.float()
    heavy = weights.argsort(descending=True)[:HEAVY_BOXES].tolist()
    colours = ("orangered", "gold", "deepskyblue")
    for rank, i in enumerate(heavy):
        left, top, right, bottom = (prediction.boxes[i].double() * factor).tolist()
        ax.add_patch(
            Rectangle(
                (left - 0.5, top - 0.5),
                right - left,
                bottom - top,
                fill=False,
                edgecolor=colours[rank],
                linewidth=3 - 0.7 * rank,
            )
        )
    shares = ", ".join(f"{float(weights[i]):.2f}" for i in heavy)
    ax.set_title(
        f"The image and WCA's {len(heavy)} heaviest\nof its {len(weights)} crops", fontsize=10
    )
    ax.set_xlabel(f"their weights w: {shares} (red, gold, blue)", fontsize=9)


def _heat_panel(ax, grey: np.ndarray, maps: Contrast, k: int, title: str, limit: float) -> None:
    ax.imshow(grey, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    largest = float(maps.t[k].nan_to_num(0).abs().max())
    if not bool(maps.localized[k]):
        ax.text(
            0.5,
            0.5,
            "no localized evidence",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=11,
            bbox={"facecolor": "white", "alpha": 0.9, "edgecolor": "grey"},
        )
        chance = float(maps.noise[k])
        ax.set_xlabel(f"largest |t| {largest:.1f}; by chance: {chance:.1f}", fontsize=9)
        return
    height, width = grey.shape[:2]
    ax.imshow(
        maps.t[k].numpy().clip(-limit, limit),
        cmap=CMAP,
        alpha=0.75,
        vmin=-limit,
        vmax=limit,
        extent=(-0.5, width - 0.5, height - 0.5, -0.5),
        interpolation="nearest",
    )
    row, column = maps.peak(k)
    difference = float(maps.difference[k, row, column])
    shown = f"{largest:.1f}" if largest < 1e4 else "> 10^4"
    chance = float(maps.noise[k])
    ax.set_xlabel(
        f"peak: t {shown} (by chance: {chance:.1f}), cosine {difference:+.3f}", fontsize=9
    )


def _colour_bar(figure: Figure, cax, limit: float, clipped: bool) -> None:
    mappable = ScalarMappable(Normalize(-limit, limit), CMAP)
    extend = "both" if clipped else "neither"
    bar = figure.colorbar(mappable, cax=cax, orientation="horizontal", extend=extend)
    bar.set_label(
        "t: (mean cosine of the crops covering a place - that of the others) / its standard "
        "error; 'by chance': the largest |t| of the same cosines dealt to the crops at random "
        "(95 %)",
        fontsize=9,
    )


def _key_panel(ax, found: WhereMaps, wca_crops: int) -> None:
    if found.windows is None:
        crops = f"WCA's own {len(found.boxes)} crops."
    else:
        crops = (
            f"{len(found.boxes)} explanation crops ({found.windows.describe()}), encoded for "
            f"these maps only; the prediction and its scores come from WCA's {wca_crops} crops."
        )
    key = (
        "How to read the maps: each place compares the crops that cover it with the other "
        "crops. Red: they match more there; blue: less. A map whose t stays within what "
        "the same cosines dealt to the crops at random reach says so instead. Descriptions: "
        "cosine to the "
        "description beyond that to the mean description; crop weights: cosine to the whole "
        f"image, which WCA's weights reward. Made from {crops}"
    )
    ax.set_axis_off()
    ax.text(0.0, 1.0, textwrap.fill(key, 46), va="top", fontsize=9, transform=ax.transAxes)
