"""Result files -> rows that never mix settings, each with its calibration and its paired
top-1 difference to a baseline.

Files are pooled into one row (their runs together) only when every setting that changes a
number is equal (:data:`KEY`): the dataset's name, split and data root, the model spec and its
weights' sha256, the method and its options, the crops (strategy, pool, N, alpha, effective
alpha, beta), the protocol, runs and seed, the precision and views path, the texts' sha256 and
the image list's (:func:`wca.inputs.images_sha256`): the result schema's identity
(:data:`wca.results.IDENTITY`) and the method's options.
Rows that share the columns shown (``group_by``, and the method) are labelled by the settings
in which they differ, e.g. ``zero [rrc]`` and ``zero [random]``. A setting a schema-1 file did
not record is unknown, and an unknown value equals nothing, not even another file's unknown.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wca.errors import SettingError
from wca.paired import PairedDifference, per_image
from wca.passes import ViewCounts
from wca.report import DEFAULT_BASELINE, DEFAULT_GROUP_BY, GROUP_COLUMNS, KEY
from wca.report.baseline import compare_to_baseline
from wca.results import NotAResult, ResultFile, read_result
from wca.specs import label
from wca.tails import expected_tail, tail_is_worst_run

TASK = "zeroshot_classification"
ABBREVIATIONS = {
    "patch_n": "N", "n_crops": "pool", "n_run": "runs", "data_root": "root",
    "model_sha256": "weights", "descriptions_sha256": "texts", "images_sha256": "images",
}  # fmt: skip


SINCE_SCHEMA_2 = ("aux_model",)  # settings that came later: None in a schema-1 file is none


@dataclass(frozen=True)
class Unknown:
    """A setting the file did not record: equal to nothing but itself (one file's)."""

    file: str

    def __str__(self) -> str:
        return "?"


@dataclass
class Row:
    """One set of settings (:data:`KEY`): accuracies (%) and calibration of every run of its
    files, each image's correctness per run, and the paired difference to the baseline."""

    dataset: str
    model: str
    pretrained: str
    method: str
    settings: dict[str, Any]
    label: str = ""
    top1: list[float] = field(default_factory=list)
    top5: list[float] = field(default_factory=list)
    ece: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    brier: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)  # mean per-class recall per file (%)
    correct: list[np.ndarray | None] = field(default_factory=list)  # bool [runs, images] a file
    images: int = 0
    views: list[ViewCounts] = field(default_factory=list)  # encoder passes per image, a file
    seconds: list[float] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    baseline: str | None = None  # the method the difference is to
    delta: PairedDifference | None = None
    delta_note: str | None = None  # why there is no paired difference

    @staticmethod
    def _mean_std(values: Sequence[float]) -> tuple[float, float]:
        array = np.asarray(values, dtype=np.float64)
        return float(array.mean()), float(array.std())

    @property
    def key(self) -> tuple[Any, ...]:
        return tuple(self.settings[name] for name in KEY)

    @property
    def model_label(self) -> str:
        """The model, short: clip_benchmark's name and tag, or a weights file's stem (no path)."""
        return short_model(self.model, self.pretrained)

    @property
    def name(self) -> str:
        """The method and, when rows share it, the settings that tell them apart."""
        return f"{self.method} [{self.label}]" if self.label else self.method

    def column(self, name: str) -> str:
        return self.model_label if name == "model" else str(self.settings[name])

    def passes(self) -> ViewCounts:
        """The encoder passes per image of every file's images together."""
        return ViewCounts.pooled(self.views)

    def per_image(self) -> np.ndarray | str:
        """Each image's share of correct runs over every file's runs, or why there is none."""
        if not self.correct or any(c is None for c in self.correct):
            return "no per-image correctness (a schema-1 file)"
        if len({c.shape[1] for c in self.correct}) > 1:
            return "its files' images differ"
        return per_image(np.concatenate(self.correct))

    def record(self) -> dict[str, Any]:
        """The CSV row (accuracies of clip_benchmark's columns as fractions in [0, 1])."""
        (m1, s1), (m5, s5) = self._mean_std(self.top1), self._mean_std(self.top5)
        calibration = {
            name: self._mean_std(values)[0] if values else None
            for name, values in (("ece", self.ece), ("nll", self.nll), ("brier", self.brier))
        }
        delta, passes = self.delta, self.passes()
        return {
            "dataset": self.dataset,
            "model": self.model,
            "model_label": self.model_label,
            "pretrained": self.pretrained,
            "model_fullname": self.model_label,  # clip_benchmark's, without paths
            "task": TASK,
            "method": self.method,
            "label": self.label,
            "name": self.name,
            "acc1": m1 / 100,
            "acc5": m5 / 100,
            "mean_per_class_recall": self._mean_std(self.recall)[0] / 100 if self.recall else None,
            "top1_mean": m1,
            "top1_std": s1,
            "top1_tail": expected_tail(self.top1),  # the worst 10 % of the pooled runs
            "top1_tail_worst_run": tail_is_worst_run(len(self.top1)),  # below 10 runs
            "top5_mean": m5,
            "top5_std": s5,
            **calibration,
            "baseline": self.baseline,
            "delta_top1": None if delta is None else delta.diff,
            "delta_low": None if delta is None else delta.low,
            "delta_high": None if delta is None else delta.high,
            "delta_excludes_zero": None if delta is None else delta.excludes_zero,
            "delta_note": self.delta_note,
            "runs": len(self.top1),
            "images": self.images,
            "views_per_image": passes.mean,  # encoder passes, the full view included
            "views_min": passes.min,
            **{f"views_p{q}": value for q, value in passes.quantiles.items()},
            "views_max": passes.max,
            "views_histogram": json.dumps(passes.histogram),  # {passes: images}
            "seconds": self._mean_std(self.seconds)[0] if self.seconds else None,
            "files": len(self.files),
            **{name: _plain(value) for name, value in self.settings.items() if name in KEY},
        }


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Unknown) else value


def short_model(model: str, pretrained: str) -> str:
    """``ViT-B-32 openai``; a weights file or folder by its name's stem, never its path
    (:func:`wca.specs.label`, the name file names use too)."""
    return label(model, pretrained)


def result_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """The JSON files named, and those under the folders named (recursively), sorted; and a
    line for each path that does not exist."""
    files: list[Path] = []
    missing: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.rglob("*.json"))
        elif path.is_file():
            files.append(path)
        else:
            missing.append(f"{path}: no such file or folder")
    return files, missing


def read_results(paths: Iterable[str | Path]) -> tuple[list[tuple[Path, ResultFile]], list[str]]:
    """Every result file under ``paths``, and one line per file skipped (unreadable, not a
    result file, a schema this version cannot read), naming the file and why."""
    files, skipped = result_files(paths)
    results = []
    for path in files:
        try:
            result = read_result(path)
        except NotAResult as error:
            skipped.append(str(error))
            continue
        except OSError as error:
            skipped.append(f"{path}: unreadable ({error.strerror or error})")
            continue
        problem = _problem(result)
        if problem:
            skipped.append(f"{path}: {problem} (regenerate it with the command that wrote it)")
        else:
            results.append((path, result))
    return results, skipped


def _problem(result: ResultFile) -> str | None:
    """What makes a valid file unusable for a row: no methods, a method without runs, stored
    correctness that is not ``n_run x n_images`` bits, passes of other images (the images of
    one run, or of every run when the runs read different crops: the adaptive budget's)."""
    scored = result.results
    if not scored.methods:
        return "results.methods: no methods"
    if scored.n_images < 1:
        return "results.n_images: no images"
    for name, method in scored.methods.items():
        if not method.top1.runs or not method.top5.runs:
            return f"results.methods.{name}.top1: no runs"
        try:
            method.correct_matrix(scored.n_run, scored.n_images)
        except (ValueError, zlib.error) as error:
            shape = f"{scored.n_run} x {scored.n_images}"
            return f"results.methods.{name}.correct: not {shape} bits ({error})"
        per_run = (scored.n_images, scored.n_images * scored.n_run)  # adaptive: every run's
        if method.views is not None and method.views.n_images not in per_run:
            images = f"{method.views.n_images} images, not {' or '.join(map(str, per_run))}"
            return f"results.methods.{name}.views: passes of {images}"
    return None


def settings_of(result: ResultFile, method: str, path: Path) -> dict[str, Any]:
    """The :data:`KEY` settings of one method of one file; unrecorded ones :class:`Unknown`."""
    config, results = result.config, result.results
    split = ((config.model_extra or {}).get("dataset_info") or {}).get("split", config.split)
    values = {"model_spec" if name == "model" else name: value
              for name, value in config.identity().items()}  # fmt: skip
    values.update(
        dataset=result.dataset,
        split=split,
        method=method,
        options=json.dumps(results.methods[method].options, sort_keys=True),
        n_crops=results.n_crops,
        patch_n=results.patch_n,
        protocol=results.protocol,
        n_run=results.n_run,
        seed=results.seed,
    )
    if result.schema_version == 1:  # None there means "not recorded", never "none"
        values = {k: Unknown(str(path)) if v is None and k not in SINCE_SCHEMA_2 else v
                  for k, v in values.items()}  # fmt: skip
    return {name: values[name] for name in KEY}


def rows_of(results: Iterable[tuple[Path, ResultFile]]) -> list[Row]:
    """One :class:`Row` per set of settings, in first-seen order (see the module doc)."""
    rows: dict[tuple[Any, ...], Row] = {}
    for path, result in results:
        extra = result.config.model_extra or {}
        seconds = sum(extra["seconds"].values()) if extra.get("seconds") else None
        n_run, n_images = result.results.n_run, result.results.n_images
        for method, scored in result.results.methods.items():
            settings = settings_of(result, method, path)
            key = tuple(settings[name] for name in KEY)
            row = rows.setdefault(
                key, Row(result.dataset, result.model, result.pretrained, method, settings)
            )
            row.top1 += scored.top1.runs
            row.top5 += scored.top5.runs
            if scored.calibration is not None:
                row.ece += scored.calibration.ece.runs
                row.nll += scored.calibration.nll.runs
                row.brier += scored.calibration.brier.runs
            metrics = result.metrics_by_method.get(method)
            if metrics is not None:
                row.recall.append(100 * metrics.mean_per_class_recall)
            row.correct.append(scored.correct_matrix(n_run, n_images))
            row.images = n_images
            row.views.append(result.results.views_of(method))
            if seconds is not None:
                row.seconds.append(seconds)
            row.files.append(str(path))
    return list(rows.values())


def label_rows(rows: Sequence[Row], group_by: Sequence[str] = DEFAULT_GROUP_BY) -> None:
    """Label each row by the settings (not shown as columns) in which it differs from the
    rows that share its columns; rows whose labels would still be equal (settings unknown in
    each) add their first file's name."""
    unknown = sorted(set(group_by) - set(GROUP_COLUMNS))
    if unknown:
        raise SettingError(
            "group_by", f"unknown column {unknown[0]!r} (choose from {', '.join(GROUP_COLUMNS)})"
        )
    shown = [*(name for name in group_by if name != "method"), "method"]
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row.column(name) for name in shown), []).append(row)
    for group in groups.values():
        differing = [
            name
            for name in KEY
            if name not in shown and len({repr(row.settings[name]) for row in group}) > 1
        ]
        shown_options = _differing_options(group)
        for row in group:
            row.label = ", ".join(
                _options_text(row.settings[name], shown_options)
                if name == "options"
                else _setting_text(name, row.settings[name])
                for name in differing
            )
        labels = [row.label for row in group]
        for row in group:
            if labels.count(row.label) > 1:
                row.label = ", ".join(filter(None, [row.label, f"from {Path(row.files[0]).name}"]))


def _differing_options(group: Sequence[Row]) -> set[str]:
    """The method options whose values differ between the rows of ``group``."""
    options = [json.loads(row.settings["options"]) for row in group]
    names = {name for values in options for name in values}
    return {name for name in names if len({repr(values.get(name)) for values in options}) > 1}


def _options_text(value: Any, names: set[str]) -> str:
    """The options ``names`` of a row (those that tell it from its group)."""
    options = json.loads(value) if isinstance(value, str) else {}
    return ", ".join(f"{k}={v}" for k, v in options.items() if k in names) or "default options"


def _setting_text(name: str, value: Any) -> str:
    if name in ("crop_strategy", "precision", "protocol") and value is not None:
        return str(value)
    if name == "fidelity" and isinstance(value, bool):
        return "fidelity views" if value else "fast views"
    if name == "fp16_cache" and isinstance(value, bool):
        return "fp16 cache" if value else "fp32 cache"
    if name.endswith("_sha256") and isinstance(value, str):
        return f"{ABBREVIATIONS[name]} {value[:8]}"
    if name in ("data_root", "model_spec") and isinstance(value, str):
        return f"{ABBREVIATIONS.get(name, 'model')} {Path(value.split(':', 1)[-1]).name}"
    return f"{ABBREVIATIONS.get(name, name)} {value}"


def load_rows(
    paths: Iterable[str | Path],
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    baseline: str = DEFAULT_BASELINE,
    on_skip: Callable[[str], None] | None = None,
) -> list[Row]:
    """Labelled rows of every result file under ``paths``, compared with ``baseline``. Files
    that cannot be read go to ``on_skip`` one line each (without it, the first is an error);
    no result file at all is a ValueError."""
    paths = list(paths)
    results, skipped = read_results(paths)
    for line in skipped:
        if on_skip is None:
            raise ValueError(line)
        on_skip(line)
    if not results:
        raise ValueError(f"no wca result files in {', '.join(map(str, paths))}")
    rows = rows_of(results)
    label_rows(rows, group_by)
    compare_to_baseline(rows, baseline)
    return rows
