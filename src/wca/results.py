"""The result file of an evaluation cell: one pydantic schema, written by ``wca eval``,
``wca demo`` and ``wca reproduce``, read and validated by ``wca report``.

It keeps LAION clip_benchmark's fields at the top level (``dataset, model, pretrained, task,
metrics{acc1, acc5, mean_per_class_recall}``), so ``clip_benchmark build`` reads it, and adds
every setting that changes a number (:class:`Settings`), each method's accuracies and
calibration per run, its encoder passes per image (:class:`wca.passes.ViewCounts`) and,
compactly, its top-1 correctness per image and run (:func:`wca.correctness.pack_correct`),
enough for paired statistics between methods.

The schema owns which settings identify a result (:data:`IDENTITY`): a file is reused for a
run, or pooled with another by ``wca report``, only when they are all equal
(:meth:`ResultFile.reusable_for`, :meth:`Settings.identity`).

Versions: 1 is wca 0.2's file (no ``schema_version`` field); it is read with the settings it
did not record left unknown (None). 2 is wca 0.3's (settings under their old names, read as
today's). 3 is this one; its files written before the passes record (``views``) read as a
fixed budget's (:meth:`Results.views_of`), and a setting declared after them as its default
(:data:`ADDED_SETTINGS`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from wca.correctness import unpack_correct
from wca.files import write_atomic
from wca.passes import ViewCounts
from wca.result_versions import as_current
from wca.tails import TAIL_PERCENT, expected_tail, tail_text

SCHEMA_VERSION = 3
TASK = "zeroshot_classification"


def per_dataset_note(values: dict[str, str]) -> str | None:
    """``{method: dataset}`` of the methods with per-dataset values, as one line saying whose
    values ran (``dataset=imagenet (tda, dmn)``), or None."""
    if not values:
        return None
    by_dataset: dict[str, list[str]] = {}
    for method, dataset in values.items():
        by_dataset.setdefault(dataset, []).append(method)
    ran = ", ".join(f"dataset={data} ({', '.join(names)})" for data, names in by_dataset.items())
    return f"per-dataset values that ran: {ran}; methods.NAME.dataset chooses."


class RunStats(BaseModel):
    """One number per run, with its mean and population std (as the authors report) and, for
    accuracies, the mean of the worst 10 % of runs (:func:`expected_tail`; None in files
    written before it, and for numbers where lower is better)."""

    mean: float
    std: float
    runs: list[float]
    tail: float | None = None

    @classmethod
    def of(cls, runs: list[float], tail: bool = False) -> RunStats:
        """The stats of ``runs``; ``tail``: an accuracy, whose worst runs are its lowest."""
        values = np.asarray(runs, dtype=np.float64)
        return cls(
            mean=float(values.mean()),
            std=float(values.std()),
            runs=list(map(float, runs)),
            tail=expected_tail(values) if tail else None,
        )


class Calibration(BaseModel):
    """Per run: expected calibration error (15 equal-width bins over the top-1 confidence; a
    fraction in [0, 1] here and in :class:`Metrics`, shown in % in every table), negative
    log-likelihood and Brier score of the method's class probabilities."""

    ece: RunStats
    nll: RunStats
    brier: RunStats


class MethodResult(BaseModel):
    """One method's numbers: accuracies in percent, calibration, correctness per image."""

    model_config = ConfigDict(extra="allow")

    options: dict[str, Any] = Field(default_factory=dict)
    uses_crops: bool
    online: bool = False
    top1: RunStats
    top5: RunStats
    per_class_top1: list[float | None]
    calibration: Calibration | None = None  # None in version 1 files
    correct: str | None = None  # wca.correctness.ENCODING; None in version 1 files
    views: ViewCounts | None = None  # encoder passes per image; None in files before it

    def correct_matrix(self, n_run: int, n_images: int) -> np.ndarray | None:
        """Top-1 correctness ``bool [n_run, n_images]`` (None when not stored)."""
        return None if self.correct is None else unpack_correct(self.correct, n_run, n_images)


class Results(BaseModel):
    """The protocol of the cell and every method's result, in the order they were scored."""

    model_config = ConfigDict(extra="allow")

    n_images: int
    protocol: str
    n_run: int
    patch_n: int
    n_crops: int
    seed: int
    class_subset: list[int] | None = None
    stream_order: str | None = None  # how online methods order the images of each run
    methods: dict[str, MethodResult]

    def views_of(self, name: str) -> ViewCounts:
        """Method ``name``'s encoder passes per image: as recorded, else (files before the
        record, all of a fixed budget) ``1 + patch_n`` for a method reading crops, 1 for one
        that does not."""
        method = self.methods[name]
        if method.views is not None:
            return method.views
        return ViewCounts.constant(1 + self.patch_n if method.uses_crops else 1, self.n_images)


class Metrics(BaseModel):
    """clip_benchmark's metrics (fractions in [0, 1]) and the calibration of one method."""

    model_config = ConfigDict(extra="allow")

    acc1: float
    acc5: float
    mean_per_class_recall: float
    ece: float | None = None
    nll: float | None = None
    brier: float | None = None


def _declared_identity() -> dict[str, Any]:
    """The settings declared ``identity=True`` on their fields (:class:`wca.config.EvalConfig`,
    :class:`wca.options.RunOptions` and :class:`wca.crops.CropSpec`), in their order, with
    their defaults."""
    from wca.config import EvalConfig
    from wca.crops import CropSpec
    from wca.options import RunOptions

    declared: dict[str, Any] = {}
    for model in (EvalConfig, RunOptions, CropSpec):
        for name, field in model.model_fields.items():
            if (field.json_schema_extra or {}).get("identity"):
                declared.setdefault(name, field.get_default(call_default_factory=True))
    return declared


# The settings that change a number, in the order report labels name them (with the methods
# and their options), then the digests of a cell's inputs: equal identities, interchangeable
# results. A new setting joins by its field's declaration.
DIGESTS = ("model_sha256", "descriptions_sha256", "images_sha256")
_DECLARED = _declared_identity()
IDENTITY = (*_DECLARED, *DIGESTS)
# Compared only where both sides know them (a run checks a file before hashing the weights).
KNOWN_ONLY = DIGESTS
DIFFERS = {
    "model_sha256": "weights differ",
    "descriptions_sha256": "texts differ",
    "images_sha256": "image list differs",
}


class Settings(BaseModel):
    """Every setting that changes a number (the evaluation config and how it ran), under the
    names of :class:`wca.config.EvalConfig` and :class:`wca.options.RunOptions`. Unknown values
    (older files) are None. Extra fields (devices, timings, skipped images) are kept."""

    model_config = ConfigDict(extra="allow")

    dataset: str | None = None
    split: str | None = None
    data_root: str | None = None
    model: str | None = None
    aux_model: str | None = None  # the second image encoder (None: none, as before it existed)
    model_file: str | None = None
    model_sha256: str | None = None  # the first 16 hex digits of the weights file's sha256
    methods: list[dict[str, Any]] | None = None
    crop_strategy: str | None = None
    n_crops: int | None = None
    patch_n: int | None = None
    alpha: float | None = None
    effective_alpha: float | None = None
    beta: float | None = None
    protocol: str | None = None
    n_run: int | None = None
    seed: int | None = None
    precision: str | None = None
    fidelity: bool | None = None
    fp16_cache: bool | None = None
    descriptions: str | None = None
    descriptions_sha256: str | None = None  # the first 16 hex digits
    images_sha256: str | None = None  # of the image list (paths and labels; the demo's pixels)

    def identity(self) -> dict[str, Any]:
        """The settings that change a number (:data:`IDENTITY`), by name; one of
        :data:`ADDED_SETTINGS` that the file does not hold has its default (see there)."""
        recorded = self.model_extra or {}
        return {
            name: ADDED_SETTINGS[name]
            if name in ADDED_SETTINGS and name not in recorded
            else getattr(self, name, None)
            for name in IDENTITY
        }

    def method_options(self) -> dict[str, dict[str, Any]]:
        """Each method's options as recorded (``{name: {option: value}}``)."""
        options = {}
        for entry in self.methods or []:
            ((name, body),) = entry.items()
            options[name] = {k: v for k, v in body.items() if k not in ("name", "enabled")}
        return options

    def differs_from(self, other: Settings) -> str | None:
        """The first setting in which ``other`` differs from these (None: the same identity);
        the digests of :data:`KNOWN_ONLY` are compared where both know them."""
        mine, theirs = self.identity(), other.identity()
        for name in IDENTITY:
            if name in KNOWN_ONLY and (mine[name] is None or theirs[name] is None):
                continue
            if mine[name] != theirs[name]:
                return name
        return None


# The settings of IDENTITY added after the fields above (e.g. the crop budget), with their
# defaults: a file without one was written before it existed, when every run had the default
# (a new setting's default keeps the old behaviour), so it pools and is reused as such.
ADDED_SETTINGS = {
    name: default for name, default in _DECLARED.items() if name not in Settings.model_fields
}


class ResultFile(BaseModel):
    """A result file (see the module doc)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    dataset: str
    model: str
    pretrained: str
    task: str = TASK
    language: str = "en"
    metrics: Metrics
    primary_method: str | None = None
    metrics_by_method: dict[str, Metrics]  # version 1 files get theirs when read
    results: Results
    config: Settings
    versions: dict[str, str | None] = Field(default_factory=dict)
    _written: Path | None = PrivateAttr(default=None)  # where write() put it

    @property
    def written(self) -> Path | None:
        """The file :meth:`write` wrote this result to (None: not written)."""
        return self._written

    def table(self, title: str | None = None) -> str:
        """A markdown table: top-1 and top-5 as mean +- std over runs, top-1's expected tail
        (the worst 10 % of runs), the ECE and the mean encoder passes per image."""
        results = self.results
        lines = [f"**{title}**", ""] if title else []
        lines += [
            "| method | top-1 (%) | tail top-1 (%) | top-5 (%) | ECE (%) | views/img | runs |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, method in results.methods.items():
            top1, top5, calibration = method.top1, method.top5, method.calibration
            ece = "-" if calibration is None else f"{100 * calibration.ece.mean:.2f}"
            tail = expected_tail(top1.runs) if top1.tail is None else top1.tail
            lines.append(
                f"| {name} | {top1.mean:.2f} ± {top1.std:.2f} | {tail_text(tail, len(top1.runs))} "
                f"| {top5.mean:.2f} ± {top5.std:.2f} | {ece} | {results.views_of(name).mean:.1f} "
                f"| {len(top1.runs)} |"
            )
        lines.append("")
        lines.append(
            f"{results.n_images} images; {self._runs_text()}. "
            f"Tail: mean top-1 of the worst {TAIL_PERCENT} % of runs (the worst run below "
            f"{100 // TAIL_PERCENT} runs)."
        )
        datasets = {name: m.options["dataset"] for name, m in results.methods.items()
                    if isinstance(m.options.get("dataset"), str)}  # fmt: skip
        lines += filter(None, [per_dataset_note(datasets)])
        return "\n".join(lines)

    def _runs_text(self) -> str:
        """What the runs read: draws from the pool, or (adaptive budget) a prefix per crop seed."""
        results = self.results
        if self.config.identity().get("crop_budget") == "adaptive":
            return (
                f"{results.n_run} runs, run r reading each image's adaptive prefix of its "
                f"{results.n_crops} crops of seed {results.seed} + r"
            )
        return (
            f"protocol {results.protocol}: {results.n_run} runs of {results.patch_n} crops from "
            f"a pool of {results.n_crops} (seed {results.seed})"
        )

    def other_cell(self, settings: Settings) -> str | None:
        """Why this is not a result of the cell of ``settings`` (None: it is, whatever its
        methods): a setting of :data:`IDENTITY` that differs."""
        differs = self.config.differs_from(settings)
        return None if differs is None else f"its {DIFFERS.get(differs, differs + ' differs')}"

    def reusable_for(self, settings: Settings) -> str | None:
        """Why this result cannot stand for a run of ``settings`` (None: it can): a setting
        of :data:`IDENTITY` that differs, or a method of the run that the file's settings lack
        or give other options (a method skipped for want of texts is skipped again: the texts'
        digest is compared)."""
        other = self.other_cell(settings)
        if other is not None:
            return other
        mine, wanted = self.config.method_options(), settings.method_options()
        if any(mine.get(name) != options for name, options in wanted.items()):
            return "its methods differ"
        return None

    def write(self, path: str | Path) -> Path:
        """Write the file atomically (no NaN or infinity: they are never a result)."""
        text = json.dumps(self.model_dump(mode="json"), indent=1, allow_nan=False)
        self._written = write_atomic(path, lambda tmp: tmp.write_text(text + "\n", "utf-8"))
        return self._written


class NotAResult(ValueError):
    """A JSON file that is not a wca result file, or one of a schema this version cannot
    read; the message says which and what to do."""


def read_result(path: str | Path) -> ResultFile:
    """A result file, validated; version 1 files are read with their unknown settings as None.
    Unreadable files and other JSON raise :class:`NotAResult` (or ``OSError``) naming the file."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except _NonFinite as error:
        raise NotAResult(
            f"{path}: holds {error} (NaN and infinities are never a result: regenerate it with "
            "the wca eval command that wrote it)"
        ) from None
    except (UnicodeDecodeError, ValueError) as error:
        raise NotAResult(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(document, dict) or "methods" not in document.get("results", {}):
        raise NotAResult(f"{path}: not a wca result file (no results.methods)")
    version = document.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise NotAResult(
            f"{path}: schema_version {version!r} is not a result schema (an integer, 1 to "
            f"{SCHEMA_VERSION})"
        )
    if version > SCHEMA_VERSION:
        raise NotAResult(
            f"{path}: result schema {version!r} is newer than this wca reads ({SCHEMA_VERSION}); "
            "update wca"
        )
    document = as_current(document, version)
    try:
        return ResultFile.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise NotAResult(
            f"{path}: {where}: {first['msg']} (regenerate it with the wca eval command that "
            "wrote it)"
        ) from None


class _NonFinite(ValueError):
    pass


def _no_constant(name: str) -> float:
    """JSON's NaN and Infinity, which a result never holds (it is written without them)."""
    raise _NonFinite(name)


def metrics_of(method: dict[str, Any], calibration: Calibration | None) -> dict[str, Any]:
    """clip_benchmark's metrics of a method result (a dict in the schema's shape)."""
    recalls = [value for value in method["per_class_top1"] if value is not None]
    metrics = {
        "acc1": method["top1"]["mean"] / 100,
        "acc5": method["top5"]["mean"] / 100,
        "mean_per_class_recall": sum(recalls) / len(recalls) / 100 if recalls else 0.0,
    }
    if calibration is not None:
        metrics.update(
            ece=calibration.ece.mean, nll=calibration.nll.mean, brier=calibration.brier.mean
        )
    return metrics
