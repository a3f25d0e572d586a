"""Where each description matches: heat-maps over the image built from the crops.

At a pixel, a description's map is the crop-weighted mean of cos(crop_i, desc_j) over the
crops covering that pixel (weights w_i); the weight map is the sum of w_i over those crops.
Pixels no crop covers have weight 0 and no match value (blank).
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from torch import Tensor

from wca.classifier import Prediction, WCAClassifier
from wca.explain.evidence import ImageLike, as_image, class_scores, similarities

MIN_SIDE = 512  # the image's long side on screen is at least this many pixels
SHOWN_SIDE = 560  # the image's long side in the figure
HEAT_SIDE = 280  # the heat-maps' long side (drawn stretched over the image)
DPI = 100
HEAVY_BOXES = 3  # crop boxes drawn on the image (one colour each)


def display_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """``(width, height)`` with the long side ``long_side``, aspect kept."""
    width, height = size
    factor = long_side / max(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def coverage_maps(
    boxes: Tensor, weights: Tensor, values: Tensor, size: tuple[int, int], grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The weight map ``[h, w]`` and the weighted-mean maps ``[K, h, w]`` of ``values [N, K]``
    on a ``grid = (w, h)`` laid over an image of ``size = (width, height)`` with crop
    ``boxes [N, 4]`` and weights ``[N]``. Grid cells no crop covers get NaN in the mean maps.
    """
    (width, height), (cols, rows) = size, grid
    corners = boxes.double().numpy() * np.array([cols / width, rows / height] * 2)
    left, top = np.floor(corners[:, :2]).astype(int).T
    right = np.clip(np.ceil(corners[:, 2]).astype(int), left + 1, cols)
    bottom = np.clip(np.ceil(corners[:, 3]).astype(int), top + 1, rows)
    w = weights.double().numpy()
    amounts = np.concatenate([w[:, None], w[:, None] * values.double().numpy()], axis=1)
    sums = np.zeros((amounts.shape[1], rows, cols))
    for i in range(len(amounts)):  # a few dozen crops: direct sums, no cancellation error
        sums[:, top[i] : bottom[i], left[i] : right[i]] += amounts[i][:, None, None]
    weight_map = sums[0]
    covered = weight_map > 0
    means = np.full(sums[1:].shape, np.nan)
    means[:, covered] = sums[1:, covered] / weight_map[covered]
    return weight_map, means


def top_descriptions(
    prediction: Prediction, classifier: WCAClassifier, count: int
) -> tuple[int, list[int]]:
    """The predicted class and its ``count`` descriptions with the largest contribution
    v_j * sum_i w_i cos(crop_i, desc_j) to its score."""
    index = int(class_scores(prediction, classifier)[0].argmax())
    local = prediction.crop_weights.float() @ similarities(prediction, classifier, index)
    v = classifier.head.description_weights()[index, : local.shape[0]]
    order = (v * local).argsort(descending=True)
    return index, order[:count].tolist()


def where_maps(
    prediction: Prediction,
    classifier: WCAClassifier,
    top: int = 3,
    grid: tuple[int, int] | None = None,
) -> tuple[int, list[int], np.ndarray, np.ndarray]:
    """The predicted class, its top descriptions, the weight map and their match maps on
    ``grid = (w, h)`` (default: long side HEAT_SIDE)."""
    grid = grid or display_size(prediction.image_size, HEAT_SIDE)
    index, chosen = top_descriptions(prediction, classifier, top)
    values = similarities(prediction, classifier, index)[:, chosen]
    weight_map, means = coverage_maps(
        prediction.boxes, prediction.crop_weights, values, prediction.image_size, grid
    )
    return index, chosen, weight_map, means


def colour_limits(weight_map: np.ndarray, heat: np.ndarray) -> tuple[float, float]:
    """A match map's colour range: its values where the crops carry weight (at least a tenth
    of the largest), so pixels seen only by negligible crops do not stretch it."""
    values = heat[(weight_map >= 0.1 * weight_map.max()) & ~np.isnan(heat)]
    low, high = float(values.min()), float(values.max())
    return low, max(high, low + 1e-6)


def where_figure(
    image: ImageLike, prediction: Prediction, classifier: WCAClassifier, top_descriptions: int = 3
) -> Figure:
    """The image large with its heaviest crops, the crop-weight map, and one match map per top
    description of the predicted class, each over the image with its colour bar."""
    picture = as_image(image)
    if picture.size != tuple(prediction.image_size):
        raise ValueError(
            f"image is {picture.size[0]}x{picture.size[1]} but the prediction was made on "
            f"{prediction.image_size[0]}x{prediction.image_size[1]}"
        )
    grid = display_size(picture.size, SHOWN_SIDE)
    shown = np.asarray(picture.resize(grid, Image.Resampling.LANCZOS))
    index, chosen, weight_map, means = where_maps(prediction, classifier, top_descriptions)
    panels = 2 + len(chosen)
    columns = min(3, panels)
    rows = math.ceil(panels / columns)
    aspect = grid[0] / grid[1]
    side = SHOWN_SIDE / DPI + 0.3
    panel_w, panel_h = side * min(1.0, aspect) + 1.5, side * min(1.0, 1 / aspect) + 1.0
    figure = Figure(figsize=(columns * panel_w, rows * panel_h), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax in axes:
        ax.set_axis_off()
    name = classifier.classnames[index]
    figure.suptitle(f"Where the descriptions of '{name}' (the prediction) match", fontsize=15)
    _image_panel(axes[0], shown, prediction, grid)
    _heat_panel(
        figure,
        axes[1],
        shown,
        weight_map,
        "Crop weights: where WCA looks",
        "weight (sum of w over the crops covering a pixel)",
        "Greens",
        (0.0, float(weight_map.max())),
    )
    texts = classifier.descriptions[index]
    for k, (j, heat) in enumerate(zip(chosen, means, strict=True)):
        title = textwrap.fill(f'"{texts[j]}"', 48, max_lines=3, placeholder=" ...")
        _heat_panel(
            figure, axes[2 + k], shown, heat, title, "local match (cosine)", "viridis",
            colour_limits(weight_map, heat),
        )
    return figure


def _image_panel(ax, shown: np.ndarray, prediction: Prediction, grid: tuple[int, int]) -> None:
    ax.imshow(shown)
    factor = grid[0] / prediction.image_size[0]
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
                linewidth=3.5 - rank,
                label=f"crop {rank + 1}: w = {float(weights[i]):.3f}",
            )
        )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=len(heavy), fontsize=10)
    ax.set_title(f"The image and its {len(heavy)} heaviest of {len(weights)} crops", fontsize=12)


def _heat_panel(figure, ax, shown, heat, title, label, cmap, limits) -> None:
    ax.imshow(shown)
    height, width = shown.shape[:2]
    drawn = ax.imshow(
        heat,
        cmap=cmap,
        alpha=0.6,
        vmin=limits[0],
        vmax=limits[1],
        extent=(-0.5, width - 0.5, height - 0.5, -0.5),
        interpolation="nearest",
    )
    ax.set_title(title, fontsize=12)
    clipped = np.nanmin(heat) < limits[0] or np.nanmax(heat) > limits[1]
    bar = figure.colorbar(drawn, ax=ax, shrink=0.85, pad=0.02, extend="both" if clipped else None)
    bar.set_label(label, fontsize=10)
