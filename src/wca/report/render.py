"""Rows as a table (plain or markdown) with the notes under it, as CSV, and beside the WCA
paper's published numbers.

The CSV has clip_benchmark's ``build`` columns (``acc1, acc5, mean_per_class_recall, dataset,
model, pretrained, task, model_fullname``) beside ours, one row per row of the table.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from wca.passes import QUANTILES
from wca.report import DEFAULT_BASELINE, DEFAULT_GROUP_BY, KEY
from wca.report.rows import Row, Unknown
from wca.results import per_dataset_note
from wca.tails import TAIL_PERCENT, tail_text

CSV_COLUMNS = (
    "dataset", "model", "pretrained", "model_fullname", "task", "method", "label",
    "acc1", "acc5", "mean_per_class_recall", "top1_mean", "top1_std", "top1_tail",
    "top1_tail_worst_run", "top5_mean", "top5_std",
    "ece", "nll", "brier", "baseline", "delta_top1", "delta_low", "delta_high",
    "runs", "images", "views_per_image", "views_min", *(f"views_p{q}" for q in QUANTILES),
    "views_max", "views_histogram", "seconds", "files",
    *(name for name in KEY if name not in ("dataset", "method")),
)  # fmt: skip
PAPER_COLUMNS = ("paper_top1", "diff_top1")


def paper_numbers() -> dict[tuple[str, str, str], float]:
    """The published top-1 (%) by (dataset, model, method), from the package's data."""
    text = resources.files("wca").joinpath("data/paper_results.json").read_text("utf-8")
    data = json.loads(text)
    return {
        (dataset, model, method): value
        for model, methods in data["top1"].items()
        for method, values in methods.items()
        for dataset, value in zip(data["datasets"], values, strict=True)
    }


def paper_key(row: Row) -> tuple[str, str, str]:
    """The key of ``row`` among the published numbers: the OpenAI weights of the same
    architecture, as a pretrained tag ``openai`` or OpenAI's own file ``<ARCH>.pt``."""
    model = row.model.replace("/", "-")
    openai = row.pretrained == "openai" or Path(row.pretrained).name == f"{model}.pt"
    return row.dataset.lower(), model if openai else "", row.method


def with_paper(rows: Sequence[Row]) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """CSV records with the published top-1 and our difference to it (None where the paper
    has no number), and the published cells no row matches."""
    published = paper_numbers()
    records, matched = [], set()
    for row in rows:
        record = row.record()
        paper = published.get(paper_key(row))
        if paper is not None:
            matched.add(paper_key(row))
        record["paper_top1"] = paper
        record["diff_top1"] = None if paper is None else record["top1_mean"] - paper
        records.append(record)
    return records, [key for key in published if key not in matched]


def write_csv(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Records as CSV (see :data:`CSV_COLUMNS`; the paper's columns when present)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(CSV_COLUMNS) + [c for c in PAPER_COLUMNS if records and c in records[0]]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    return path


def _delta_cell(record: dict[str, Any]) -> str:
    if record["delta_top1"] is None:
        return "(baseline)" if record["delta_note"] == "the baseline" else "n/a"
    mark = " *" if record["delta_excludes_zero"] else ""
    low, high = record["delta_low"], record["delta_high"]
    return f"{record['delta_top1']:+.2f} [{low:+.2f}, {high:+.2f}]{mark}"


def _number(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if value is None else f"{scale * value:.{digits}f}"


def table(
    records: Sequence[dict[str, Any]],
    markdown: bool = False,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
) -> str:
    """Records as a markdown table, or as aligned plain-text columns: the ``group_by`` columns,
    the method (labelled), top-1, its expected tail (the worst 10 % of runs, "(worst run)"
    below 10 runs) and its paired difference to the baseline, top-5, ECE (%),
    NLL, Brier, the mean encoder passes per image (views/img: the full view and the crops read),
    seconds when any record has them (and the paper's columns when present)."""
    paper = bool(records) and "paper_top1" in records[0]
    baseline = (records[0]["baseline"] if records else None) or DEFAULT_BASELINE
    group_by = [name for name in group_by if name != "method"]  # always shown, once
    header = [*group_by, "method", "top-1 (%)", "tail top-1 (%)"]
    header += [f"Δ top-1 vs {baseline} [95% CI]", "top-5 (%)"]
    timed = any(record["seconds"] is not None for record in records)
    header += ["ECE (%)", "NLL", "Brier", "views/img"] + (["seconds"] if timed else [])
    header += ["paper top-1", "diff"] if paper else []
    body = []
    for record in records:
        seconds = record["seconds"]
        cells = [str(record["model_label" if name == "model" else name]) for name in group_by]
        cells += [
            record["name"],
            f"{record['top1_mean']:.2f} ± {record['top1_std']:.2f}",
            tail_text(record["top1_tail"], record["runs"]),
            _delta_cell(record),
            f"{record['top5_mean']:.2f} ± {record['top5_std']:.2f}",
            _number(record["ece"], 100, 2),
            _number(record["nll"]),
            _number(record["brier"]),
            f"{record['views_per_image']:.1f}",
        ]
        if timed:
            cells.append("-" if seconds is None else f"{seconds:.1f}")
        if paper:
            published, diff = record["paper_top1"], record["diff_top1"]
            cells += ["-" if published is None else f"{published:.2f}"]
            cells += ["-" if diff is None else f"{diff:+.2f}"]
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *body]
    )


def notes(rows: Sequence[Row]) -> list[str]:
    """The lines under the table: how the differences were made, and the rows without one."""
    if not rows:
        return []
    baseline = rows[0].baseline or DEFAULT_BASELINE
    lines = [
        f"Δ: top-1 minus {baseline}'s on the same images and settings, in points; 95% interval "
        "of a paired bootstrap over images (1000 resamples, seed 0) of each image's correctness "
        "averaged over runs; * the interval excludes 0.",
        f"tail: mean top-1 of the worst {TAIL_PERCENT} % of runs (OGA's expected tail accuracy); "
        f"with fewer than {100 // TAIL_PERCENT} runs, the worst run, marked (worst run).",
        "views/img: mean encoder passes per image (the full view and the crops read); the CSV "
        "adds their quantiles and histogram.",
    ]
    datasets = {row.name: options["dataset"] for row in rows
                if isinstance(options := json.loads(row.settings["options"]), dict)
                and isinstance(options.get("dataset"), str)}  # fmt: skip
    lines += filter(None, [per_dataset_note(datasets)])
    missing = [row for row in rows if row.delta is None and row.delta_note != "the baseline"]
    for row in missing:
        lines.append(f"no Δ for {row.dataset} {row.model_label} {row.name}: {row.delta_note}")
    unknown = sorted(
        {name for row in rows for name in KEY if isinstance(row.settings[name], Unknown)}
    )
    if unknown:
        lines.append(
            "schema-1 files do not record " + ", ".join(unknown) + ": their rows are never "
            "pooled with other files (regenerate them with wca eval to pool them)"
        )
    return lines
