"""The paper's description figure: for the predicted class, the runner-up and (given a label)
the true class, each description's local match (WCA: sum_i w_i cos(crop_i, desc_j)) beside
its whole-image similarity (CLIP-D: cos(image, desc_j)), all on one axis."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from PIL import Image

from wca.classifier import Prediction, WCAClassifier
from wca.explain.evidence import (
    ClassEvidence,
    DescriptionEvidence,
    ImageLike,
    as_image,
    explained_classes,
)
from wca.files import write_atomic

LOCAL_COLOUR, WHOLE_COLOUR = "#d95f02", "#7570b3"
LOCAL_NAME, WHOLE_NAME = "local match (WCA)", "whole image (CLIP-D)"
MAX_ROWS = 12  # descriptions drawn per class: those of largest weight v_j
ROW_INCHES = 0.42


def descriptions_figure(
    image: ImageLike,
    prediction: Prediction,
    classifier: WCAClassifier,
    label: str | None = None,
    max_rows: int = MAX_ROWS,
) -> Figure:
    """The image beside one panel per explained class: a bar pair per description (WCA's local
    match and CLIP-D's whole-image similarity), dashed class means, v_j beside each row."""
    classes = explained_classes(prediction, classifier, label)
    return _figure(as_image(image), classes, max_rows, label)


def render_explanation(
    image: ImageLike,
    prediction: Prediction,
    path: str | Path,
    classifier: WCAClassifier | None = None,
    label: str | None = None,
) -> Path:
    """Write the description figure for ``prediction`` to ``path`` (PNG) and return the path.

    Without ``classifier`` only the prediction's own evidence is drawn: the local match of the
    descriptions of its two top classes (the whole-image similarity needs the classifier's
    description embeddings).
    """
    if classifier is not None:
        figure = descriptions_figure(image, prediction, classifier, label)
    else:
        figure = _figure(as_image(image), _from_prediction(prediction), MAX_ROWS, label)
    return save_png(figure, path)


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a 256-colour palette PNG at its own size, atomically: a fraction of
    the bytes of a full-colour PNG (the figures are flat colours, text and small images)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    pixels = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba())
    palette = pixels.convert("RGB").quantize(
        256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
    )
    return write_atomic(path, lambda tmp: palette.save(tmp, format="png", optimize=True))


def _from_prediction(prediction: Prediction) -> list[ClassEvidence]:
    roles = ("prediction", "runner-up")
    return [
        ClassEvidence(
            name,
            index,
            rank + 1,
            float("nan"),
            probability,
            role,
            [DescriptionEvidence(r.description, r.weight, r.similarity, None) for r in rows],
        )
        for rank, (name, index, probability, role, rows) in enumerate(
            zip(
                prediction.labels,
                prediction.indices,
                prediction.scores,
                roles,
                [prediction.descriptions[name] for name in prediction.labels],
                strict=False,
            )
        )
    ]


def _figure(picture, classes: list[ClassEvidence], max_rows: int, label: str | None) -> Figure:
    shown = [c.by_weight(max_rows) for c in classes]
    values = [
        x for c in classes for d in c.descriptions for x in (d.local, d.whole) if x is not None
    ]
    low, high = min(values), max(values)
    pad = 0.08 * (high - low) + 1e-3
    low, high = low - pad, high + pad
    heights = [len(rows) * ROW_INCHES + 0.9 for rows in shown]
    figure = Figure(figsize=(17, max(sum(heights) + 1.2, 5.5)), dpi=100, layout="constrained")
    grid = figure.add_gridspec(len(classes), 2, width_ratios=[1, 3.2], height_ratios=heights)
    image_ax = figure.add_subplot(grid[:, 0])
    image_ax.imshow(picture)
    image_ax.set_axis_off()
    caption = "the image" if label is None else f"the image (true class: {label})"
    image_ax.set_title(caption, fontsize=12)
    first = None
    for row, (evidence, rows) in enumerate(zip(classes, shown, strict=True)):
        ax = figure.add_subplot(grid[row, 1], sharex=first)
        first = first or ax
        _class_panel(ax, evidence, rows, low)
        ax.tick_params(axis="x", labelbottom=row == len(classes) - 1)
    first.set_xlim(low, high)
    ax.set_xlabel("similarity of crop(s) or image to the description (cosine)", fontsize=11)
    handles = [Patch(color=LOCAL_COLOUR, label=LOCAL_NAME)]
    if any(d.whole is not None for c in classes for d in c.descriptions):
        handles.append(Patch(color=WHOLE_COLOUR, label=WHOLE_NAME))
    handles.append(Line2D([], [], color="grey", linestyle="--", label="mean over the class"))
    figure.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=11)
    return figure


def _class_panel(ax, evidence: ClassEvidence, rows: list[DescriptionEvidence], low: float) -> None:
    y = np.arange(len(rows))
    has_whole = rows[0].whole is not None
    height = 0.38 if has_whole else 0.7
    local = np.array([d.local for d in rows])
    ax.barh(y - height / 2 * has_whole, local - low, height, left=low, color=LOCAL_COLOUR)
    means = [(np.mean([d.local for d in evidence.descriptions]), LOCAL_COLOUR)]
    if has_whole:
        whole = np.array([d.whole for d in rows])
        ax.barh(y + height / 2, whole - low, height, left=low, color=WHOLE_COLOUR)
        means.append((np.mean([d.whole for d in evidence.descriptions]), WHOLE_COLOUR))
    for mean, colour in means:
        ax.axvline(mean, color=colour, linestyle="--", linewidth=1.6)
    names = [textwrap.fill(d.text, 62, max_lines=2, placeholder=" ...") for d in rows]
    ax.set_yticks(y, names, fontsize=9)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    transform = ax.get_yaxis_transform()
    for j, d in enumerate(rows):
        ax.text(1.01, j, f"{d.weight:.3f}", transform=transform, va="center", fontsize=9)
    ax.text(1.01, -0.75, "weight", transform=transform, va="bottom", fontsize=9, weight="bold")
    ax.grid(axis="x", alpha=0.3)
    score = "" if np.isnan(evidence.score) else f"score {evidence.score:.3f}, "
    more = len(evidence.descriptions) - len(rows)
    shown = f" ({len(rows)} of {len(evidence.descriptions)} descriptions)" if more else ""
    ax.set_title(
        f"{evidence.role}: {evidence.name}  -  {score}p = {evidence.probability:.2f}{shown}",
        fontsize=12,
        loc="left",
    )
