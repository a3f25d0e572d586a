"""Result files of `wca eval` -> one row per (dataset, model, method): tables, CSV, a plot, and
the paper's published numbers beside ours.

Several files of the same (dataset, model, method), e.g. runs with other seeds, make one row
whose mean and std are over all their runs pooled. The CSV has clip_benchmark's ``build``
columns (``acc1, acc5, mean_per_class_recall, dataset, model, pretrained, task,
model_fullname``) so their tools read it, one row per method rather than per file.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from wca.sweep import model_fields

TASK = "zeroshot_classification"
CSV_COLUMNS = (
    "dataset", "model", "pretrained", "model_fullname", "task", "method",
    "acc1", "acc5", "mean_per_class_recall", "top1_mean", "top1_std", "top5_mean", "top5_std",
    "runs", "images", "views_per_image", "seconds", "files",
)  # fmt: skip
PAPER_COLUMNS = ("paper_top1", "diff_top1")


@dataclass
class Row:
    """One (dataset, model, method): accuracies in percent over every run of its files."""

    dataset: str
    model: str
    pretrained: str
    method: str
    top1: list[float] = field(default_factory=list)
    top5: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)  # mean per-class recall per file (%)
    images: int = 0
    views_per_image: int = 1
    seconds: list[float] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @staticmethod
    def _mean_std(values: Sequence[float]) -> tuple[float, float]:
        mean = sum(values) / len(values)
        return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.dataset, self.model, self.pretrained, self.method

    def record(self) -> dict[str, Any]:
        """The CSV row (accuracies of clip_benchmark's columns as fractions in [0, 1])."""
        (m1, s1), (m5, s5) = self._mean_std(self.top1), self._mean_std(self.top5)
        return {
            "dataset": self.dataset,
            "model": self.model,
            "pretrained": self.pretrained,
            "model_fullname": f"{self.model} {self.pretrained}",
            "task": TASK,
            "method": self.method,
            "acc1": m1 / 100,
            "acc5": m5 / 100,
            "mean_per_class_recall": self._mean_std(self.recall)[0] / 100,
            "top1_mean": m1,
            "top1_std": s1,
            "top5_mean": m5,
            "top5_std": s5,
            "runs": len(self.top1),
            "images": self.images,
            "views_per_image": self.views_per_image,
            "seconds": self._mean_std(self.seconds)[0] if self.seconds else None,
            "files": len(self.files),
        }


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """The JSON files named, and those under the folders named (recursively), sorted."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.rglob("*.json"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


def read_result(path: Path) -> dict[str, Any] | None:
    """A `wca eval` result file as a dict; None for JSON that is not one. Unreadable -> error."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(document, dict) or "methods" not in document.get("results", {}):
        return None
    return document


def rows_of(documents: Iterable[tuple[Path, dict[str, Any]]]) -> list[Row]:
    """One :class:`Row` per (dataset, model, pretrained, method), in first-seen order."""
    rows: dict[tuple[str, str, str, str], Row] = {}
    for path, document in documents:
        config = document.get("config", {})
        results = document["results"]
        names = model_fields(str(config.get("model", "")))
        dataset = document.get("dataset") or config.get("dataset_info", {}).get("name", "?")
        model = document.get("model") or names["model"]
        pretrained = document.get("pretrained", names["pretrained"]) or ""
        recalls = document.get("metrics_by_method", {})
        seconds = sum(config.get("seconds", {}).values()) if config.get("seconds") else None
        for method, result in results["methods"].items():
            row = rows.setdefault(
                (dataset, model, pretrained, method), Row(dataset, model, pretrained, method)
            )
            row.top1 += result["top1"]["runs"]
            row.top5 += result["top5"]["runs"]
            if method in recalls:
                row.recall.append(100 * recalls[method]["mean_per_class_recall"])
            row.images = results["n_images"]
            row.views_per_image = 1 + results["patch_n"] if result["uses_crops"] else 1
            if seconds is not None:
                row.seconds.append(seconds)
            row.files.append(str(path))
    return list(rows.values())


def load_rows(paths: Iterable[str | Path]) -> list[Row]:
    """Rows of every result file under ``paths`` (other JSON files are passed over)."""
    documents = []
    for path in result_files(paths):
        document = read_result(path)
        if document is not None:
            documents.append((path, document))
    if not documents:
        raise ValueError(f"no wca result files in {', '.join(map(str, paths))}")
    return rows_of(documents)


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


def _cells(record: dict[str, Any], paper: bool) -> list[str]:
    seconds = record["seconds"]
    cells = [
        record["dataset"],
        record["model_fullname"].strip(),
        record["method"],
        f"{record['top1_mean']:.2f} ± {record['top1_std']:.2f}",
        f"{record['top5_mean']:.2f} ± {record['top5_std']:.2f}",
        str(record["views_per_image"]),
        "-" if seconds is None else f"{seconds:.1f}",
    ]
    if paper:
        published, diff = record["paper_top1"], record["diff_top1"]
        cells += ["-" if published is None else f"{published:.2f}"]
        cells += ["-" if diff is None else f"{diff:+.2f}"]
    return cells


def table(records: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """Records as a markdown table, or as aligned plain-text columns."""
    paper = bool(records) and "paper_top1" in records[0]
    header = ["dataset", "model", "method", "top-1 (%)", "top-5 (%)", "views/img", "seconds"]
    header += ["paper top-1", "diff"] if paper else []
    body = [_cells(record, paper) for record in records]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *body]
    )


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


def plot(rows: Sequence[Row], path: str | Path) -> Path:
    """A grouped bar chart of top-1 per dataset (groups) and method (bars), error bars the
    std over runs; one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(f"{r.model} {r.pretrained}".strip() for r in rows))
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    width = 0.8 / len(methods)
    figure, axes = plt.subplots(
        len(models), 1, figsize=(max(6, 1.4 * len(datasets) * max(1, len(methods) / 3)),
                                 3.2 * len(models)),
        squeeze=False,
    )  # fmt: skip
    for ax, model in zip(axes[:, 0], models, strict=True):
        mine = {
            (r.dataset, r.method): r for r in rows if f"{r.model} {r.pretrained}".strip() == model
        }
        for m, method in enumerate(methods):
            xs, heights, errors = [], [], []
            for d, dataset in enumerate(datasets):
                if (dataset, method) in mine:
                    mean, std = Row._mean_std(mine[dataset, method].top1)
                    xs.append(d + (m - (len(methods) - 1) / 2) * width)
                    heights.append(mean)
                    errors.append(std)
            ax.bar(xs, heights, width, yerr=errors, capsize=2, label=method)
        ax.set_xticks(range(len(datasets)), datasets)
        ax.set_xlim(-0.5, len(datasets) - 0.5)
        ax.set_ylim(0, min(100, max(10, 1.15 * max(Row._mean_std(r.top1)[0] for r in rows))))
        ax.set_ylabel("top-1 (%)")
        ax.set_title(model, fontsize=9)
        ax.legend(fontsize=7, ncols=min(len(methods), 6))
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
