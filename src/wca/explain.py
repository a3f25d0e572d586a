"""Explanations to look at: the image with its weighted crops, and the descriptions that decided.

Left: the image with every crop box, drawn more opaque the larger its weight w_i (the five
heaviest numbered). Right: for each top class, its descriptions' weights v_j and crop-weighted
similarities sum_i w_i cos(crop_i, desc_j), the two factors of the WCA score.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from wca.classifier import Prediction  # noqa: E402


def render_explanation(
    image: Image.Image,
    prediction: Prediction,
    path: str | Path,
    top_classes: int = 3,
    top_descriptions: int = 5,
) -> Path:
    """Write a PNG explaining ``prediction`` for ``image`` to ``path`` and return the path."""
    classes = prediction.labels[:top_classes]
    figure = plt.figure(figsize=(13, 1.6 + 1.9 * len(classes)), dpi=100)
    grid = figure.add_gridspec(len(classes), 2, width_ratios=[1, 1.5])
    ax = figure.add_subplot(grid[:, 0])
    ax.imshow(image)
    weights = prediction.crop_weights
    order = weights.argsort(descending=True).tolist()
    for rank, i in enumerate(reversed(order)):
        left, top, right, bottom = prediction.boxes[i].tolist()
        strength = float(weights[i] / weights.max())
        heavy = rank >= len(order) - 5
        ax.add_patch(
            Rectangle(
                (left - 0.5, top - 0.5),
                right - left,
                bottom - top,
                fill=False,
                edgecolor="orangered" if heavy else "deepskyblue",
                alpha=0.15 + 0.85 * strength,
                linewidth=2.5 if heavy else 1,
            )
        )
        if heavy:
            ax.text(
                left + 2,
                top + 2,
                str(len(order) - rank),
                color="white",
                fontsize=8,
                va="top",
                bbox={"facecolor": "orangered", "pad": 1, "linewidth": 0},
            )
    ax.set_title(f"{len(order)} crops, heaviest numbered (max w = {float(weights.max()):.2f})")
    ax.axis("off")
    for row, label in enumerate(classes):
        rows = prediction.descriptions[label][:top_descriptions]
        bar_ax = figure.add_subplot(grid[row, 1])
        contributions = [r.weight * r.similarity for r in rows]
        names = [textwrap.shorten(r.description, 70, placeholder="...") for r in rows]
        bars = bar_ax.barh(range(len(rows)), contributions, color="seagreen")
        bar_ax.bar_label(
            bars, [f"v={r.weight:.2f} sim={r.similarity:.3f}" for r in rows], fontsize=7, padding=3
        )
        bar_ax.set_yticks(range(len(rows)), names, fontsize=8)
        bar_ax.invert_yaxis()
        bar_ax.margins(x=0.35)
        score = prediction.scores[prediction.labels.index(label)]
        bar_ax.set_title(f"{row + 1}. {label}  (p = {score:.2f}): v_j x sim_j", fontsize=10)
        bar_ax.tick_params(axis="x", labelsize=7)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
