"""One figure per dataset: every row of the report on one axis, sorted by top-1.

Each row (a method with its settings label) is a point with its own colour (a palette without
repeats) and its name written beside it on the axis, so no legend is needed. The error bars
are the paired 95% interval of the row's difference to the baseline, drawn around its top-1,
when every row has one; otherwise the std over runs. The axis label says which. Models are
named short (:func:`wca.report.rows.short_model`: a weights file's stem, never its path).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from wca.report import DEFAULT_BASELINE
from wca.report.rows import Row

ROW_INCHES = 0.34
WIDTH_INCHES = 8.0
CAPTION_CHARACTERS = 95


def palette(n: int) -> list[tuple[float, ...]]:
    """``n`` colours, none repeated: tab10, tab20, else evenly spaced hues."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["hsv"](x) for x in np.linspace(0, 1, n, endpoint=False)]


def _interval(row: Row) -> tuple[float, float]:
    """The error bar below and above the row's top-1 (the paired interval or the std)."""
    if row.delta is not None:
        return row.delta.diff - row.delta.low, row.delta.high - row.delta.diff
    std = Row._mean_std(row.top1)[1]
    return std, std


def dataset_figure(rows: Sequence[Row], title: str | None = None) -> Figure:
    """The figure of one dataset's rows (see the module doc)."""
    colour_of = dict(zip(map(id, rows), palette(len(rows)), strict=True))  # by first seen
    rows = sorted(rows, key=lambda row: Row._mean_std(row.top1)[0])  # the best on top
    baseline = (rows[0].baseline if rows else None) or DEFAULT_BASELINE
    models = list(dict.fromkeys(row.model_label for row in rows))
    paired = all(row.delta is not None or row.delta_note == "the baseline" for row in rows)
    paired = paired and any(row.delta is not None for row in rows)
    names = [row.name + (f" · {row.model_label}" if len(models) > 1 else "") for row in rows]
    means = np.array([Row._mean_std(row.top1)[0] for row in rows])
    if paired:
        errors = np.array([_interval(row) if row.delta else (0.0, 0.0) for row in rows]).T
        how = (
            f"error bars: 95% paired bootstrap interval of the difference to {baseline} "
            "(1000 resamples of the images), drawn around each top-1; in brackets: the "
            "difference, * when its interval excludes 0"
        )
    else:
        errors = np.array([_interval(row) for row in rows]).T
        how = "error bars: std of top-1 over runs (no paired interval for every row)"
    figure = Figure(figsize=(WIDTH_INCHES, 1.6 + ROW_INCHES * len(rows)), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ys = np.arange(len(rows))
    colours = [colour_of[id(row)] for row in rows]
    for y, mean, low, high, colour in zip(ys, means, *errors, colours, strict=True):
        ax.errorbar(mean, y, xerr=[[low], [high]], fmt="o", color=colour, capsize=3, ms=6)
    baselines = [row for row in rows if row.delta_note == "the baseline"]
    if len(baselines) == 1:
        ax.axvline(Row._mean_std(baselines[0].top1)[0], color="0.6", ls="--", lw=1, zorder=0)
    ax.set_yticks(ys, names, fontsize=9)
    for tick, colour in zip(ax.get_yticklabels(), colours, strict=True):
        tick.set_color(colour)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    lows, highs = means - errors[0], means + errors[1]
    span = max(float(highs.max() - lows.min()), 1.0) if len(rows) else 1.0
    ax.set_xlim(max(0.0, lows.min() - 0.08 * span), min(100.0, highs.max() + 0.08 * span))
    ax.grid(axis="x", color="0.9")
    beside = blended_transform_factory(ax.transAxes, ax.transData)
    for y, row, mean in zip(ys, rows, means, strict=True):
        text = f"{mean:.2f}"
        if row.delta is not None:
            text += f" ({row.delta.diff:+.2f}{'*' if row.delta.excludes_zero else ''})"
        ax.text(1.02, y, text, transform=beside, va="center", fontsize=8)
    caption = "\n".join(textwrap.wrap(how, CAPTION_CHARACTERS))
    ax.set_xlabel(f"top-1 (%)\n{caption}", fontsize=8)
    heading = title or (rows[0].dataset if rows else "")
    ax.set_title(heading + (f": {models[0]}" if len(models) == 1 else ""), fontsize=10)
    return figure


def plot(rows: Sequence[Row], path: str | Path, dpi: int = 120) -> list[Path]:
    """Write one PNG per dataset: ``path`` itself for one dataset, else ``<stem>-<dataset>``
    beside it. Returns the files written."""
    from wca.sweep import path_safe

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets = list(dict.fromkeys(row.dataset for row in rows))
    written = []
    for dataset in datasets:
        out = path
        if len(datasets) > 1:
            out = path.with_name(f"{path.stem}-{path_safe(dataset)}{path.suffix}")
        figure = dataset_figure([row for row in rows if row.dataset == dataset])
        figure.savefig(out, dpi=dpi)
        written.append(out)
    return written
