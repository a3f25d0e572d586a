"""Sweeps over models x datasets x data roots: planning the cells, running them, and the
pieces that need no model or data.

A sweep is a list of cells, one per (model, dataset, data root); each writes one result file
whose path comes from a template such as ``results/{dataset}__{model}__{protocol}.json``.
:func:`plan` resolves and checks every cell's settings before any work; :func:`run` runs them
(:func:`wca.pipeline.run_cell`), loading each model once for consecutive cells, going on past a
failed cell, and under torchrun spreading the cells over the ranks as clip_benchmark's
``--distributed`` does. The rest: reading name lists, filling the template with path-safe values
(model specs named by :mod:`wca.specs`), and telling whether a result file is already complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wca.errors import OutputExists, SettingError
from wca.specs import absolute_spec, full_spec, model_fields

log = logging.getLogger("wca")

DEFAULT_OUTPUT = "results/{dataset}__{model}__{protocol}.json"
OUTPUT_FIELDS = ("dataset", "model", "pretrained", "protocol", "split", "n_run", "patch_n", "seed")
SAFE_LENGTH = 80
# Settings of a result file that must match for --skip-existing to reuse it.
SETTINGS_COMPARED = (
    "dataset", "split", "model", "alpha", "beta", "n_samples", "crop_strategy", "n_run",
    "patch_n", "seed", "protocol", "fidelity", "half", "methods", "dataset_name", "precision",
)  # fmt: skip


def read_list(path: str | Path) -> list[str]:
    """Names in a text file, one a line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: list file not found") from None
    names = [line.split("#", 1)[0].strip() for line in lines]
    names = [name for name in names if name]
    if not names:
        raise ValueError(f"{path}: no names in the file (one a line, # for comments)")
    return names


def path_safe(text: str) -> str:
    """``text`` as one file-name component: letters, digits, ``-._``; runs of anything else
    become one ``-``. Long values keep their end and gain a short hash (so two checkpoints
    with the same file name in different folders stay apart)."""
    keep = "".join(c if c.isalnum() or c in "-._" else "-" for c in text)
    safe = "-".join(part for part in keep.split("-") if part).strip(".") or "-"
    if len(safe) <= SAFE_LENGTH:
        return safe
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{safe[-(SAFE_LENGTH - 9) :]}-{digest}"


def check_template(template: str) -> list[str]:
    """The fields of an output template, checked against :data:`OUTPUT_FIELDS`."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise SettingError("output", f"{template!r}: {error}") from None
    unknown = sorted(set(fields) - set(OUTPUT_FIELDS))
    if unknown or "" in fields:
        raise SettingError(
            "output",
            f"{template!r}: unknown field {{{(unknown or [''])[0]}}} "
            f"(known: {', '.join('{' + f + '}' for f in OUTPUT_FIELDS)})",
        )
    return fields


def output_path(template: str, values: Mapping[str, Any]) -> Path:
    """The template filled with path-safe values (see :func:`path_safe`); ``{model}`` is
    meant to be the whole model spec, ``{pretrained}`` its weights (:func:`model_fields`)."""
    check_template(template)
    safe = {key: path_safe(str(values.get(key))) for key in OUTPUT_FIELDS}
    return Path(template.format(**safe)).expanduser()


def finished(
    path: Path, settings: Mapping[str, Any], digests: Mapping[str, str | None] | None = None
) -> str | None:
    """Why the result file at ``path`` cannot be reused for ``settings`` (None: it can).

    A file is reused when it is a complete result (clip_benchmark metrics included) with the
    same settings as those compared in :data:`SETTINGS_COMPARED` and the same ``digests``
    (``descriptions_sha256``, ``images_sha256``: compared where both sides have one).
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "not there"
    except (OSError, ValueError):
        return "unreadable"
    if not isinstance(document, dict) or "metrics" not in document or "results" not in document:
        return "not a complete result"
    recorded = document.get("config", {})
    for key in SETTINGS_COMPARED:
        if key in settings and recorded.get(key) != settings[key]:
            return f"its {key} differs"
    for key, digest in (digests or {}).items():
        if digest and recorded.get(key) not in (None, digest):
            return f"its {key.removesuffix('_sha256')} differ"
    return None


@dataclass(frozen=True)
class Cell:
    """One (model, dataset, data root) of a sweep: its settings and result file."""

    config: Any  # wca.config.EvalConfig
    output: Path

    @property
    def label(self) -> str:
        from wca.pipeline import dataset_name

        return f"{dataset_name(self.config)} x {self.config.model_spec}"


def cell_settings(config, precision: str) -> dict[str, Any]:
    """The settings a result file records and :func:`finished` compares: the config (no
    model_size when a spec was given, see ``EvalConfig.to_dict``) with the absolute data path,
    and the precision it ran at."""
    settings = config.to_dict()
    settings["data_path"] = str(Path(config.data_path).expanduser().resolve())
    settings["precision"] = precision
    return settings


def _names(given: Sequence[str] | None) -> list[str | None]:
    return list(given or []) or [None]  # None: from the config file or the defaults


def plan(
    models: Sequence[str] | None,
    datasets: Sequence[str] | None,
    data_roots: Sequence[str] | None,
    *,
    template: str = DEFAULT_OUTPUT,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    settings: Sequence[str] = (),
    primary_method: str | None = None,
    flag: Callable[[str], str] = str,
    setting: Callable[[str], str] = str,
) -> list[Cell]:
    """Every cell of models x datasets x data roots (a root may hold ``{dataset}``), settings
    resolved (:func:`wca.config.resolve_config`) and checked before any work starts; two cells
    may not write the same file. ``flag``/``setting`` name where values came from in errors."""
    from wca.config import resolve_config
    from wca.configs import config_path, read_config_file
    from wca.evaluate import run_indices
    from wca.pipeline import dataset_name

    check_template(template)
    datasets, roots = _names(datasets), _names(data_roots)
    if any(r and "{dataset}" not in r for r in roots) and len(set(datasets)) > 1:
        raise SettingError("data_path", f"several datasets need {{dataset}} in {', '.join(roots)}")
    config_file = None if config_file is None else config_path(config_file).resolve()
    cells: list[Cell] = []
    for model in _names(models):
        for dataset in datasets:
            named = dataset or (read_config_file(config_file).get("dataset") if config_file else "")
            for root in roots:
                values = dict(overrides or {})
                values["model"] = model
                if root is not None:
                    path = Path(root.replace("{dataset}", str(named or ""))).expanduser()
                    values["data_path"] = str(path.resolve())
                config = resolve_config(
                    dataset, config_file, values, settings, flag=flag, setting=setting
                )
                if not config.dataset:
                    raise SettingError("dataset", "not set (a name, or dataset: in a config)")
                if not config.data_path:
                    raise SettingError("data_path", "not set (where the dataset is)")
                if not Path(config.data_path).expanduser().is_dir():  # before any model library
                    raise FileNotFoundError(
                        f"{config.data_path}: data root does not exist or is not a folder"
                    )
                if model is not None:
                    config.model = absolute_spec(full_spec(model))
                enabled = [method.name for method in config.enabled_methods()]
                if not enabled:
                    raise SettingError("methods", "every method is disabled (enable one)")
                if primary_method and primary_method not in enabled:
                    raise SettingError(
                        "primary_method",
                        f"{primary_method} is not among the methods ({', '.join(enabled)})",
                    )
                run_indices(
                    config.n_samples, config.n_run, config.patch_n, config.seed, config.protocol
                )
                fields = {**config.model_dump(), **model_fields(config.model_spec)}
                fields["model"] = config.model_spec  # the whole spec: two checkpoints stay apart
                fields["dataset"] = dataset_name(config)
                cells.append(Cell(config, output_path(template, fields).resolve()))
    seen: dict[Path, Cell] = {}
    for cell in cells:
        if cell.output.is_dir():
            raise SettingError("output", f"{cell.output} is a folder; the result is a file")
        if cell.output in seen:
            raise SettingError(
                "output",
                f"{template}: {seen[cell.output].label} and {cell.label} would both write "
                f"{cell.output}; add {{dataset}} and {{model}} to the template",
            )
        seen[cell.output] = cell
    return cells


@dataclass
class Summary:
    """What a sweep did, cell by cell (labels)."""

    cells: int = 0
    reports: bool = True  # False on torchrun ranks other than 0
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def line(self) -> str:
        failed = f" ({'; '.join(self.failed)})" if self.failed else ""
        return (
            f"sweep: {self.cells} cells, {len(self.written)} written, {len(self.skipped)} "
            f"skipped, {len(self.failed)} failed{failed}"
        )


def one_line(error: BaseException) -> str:
    """An error as one line: input errors by their message, others with their type."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = " ".join(str(message).split())
    input_errors = (FileNotFoundError, ValueError, KeyError)
    return text if isinstance(error, input_errors) else f"{type(error).__name__}: {text}"


def check_outputs(cells: Sequence[Cell], precision: str) -> None:
    """Refuse, before any work, to replace a file that is not a result of its cell's own
    settings (a run with other crops, another JSON): what was computed is never lost."""
    for cell in cells:
        why = finished(cell.output, cell_settings(cell.config, precision))
        if why not in (None, "not there"):
            raise _not_this_cells(cell, why)


def _not_this_cells(cell: Cell, why: str) -> OutputExists:
    return OutputExists(
        f"{cell.output} exists and is not this cell's result ({why}); choose another output, "
        "or overwrite it"
    )


def run(
    cells: Sequence[Cell],
    options=None,
    *,
    skip_existing: bool = False,
    overwrite: bool = False,
    primary_method: str | None = None,
    on_result: Callable[[Cell, Any], None] | None = None,
) -> Summary:
    """Run every cell (:func:`wca.pipeline.run_cell`), each model loaded once for consecutive
    cells; a failed cell is logged in one line and the others go on. ``skip_existing`` passes
    over cells whose file is complete with the same settings; a file of other settings is
    replaced only with ``overwrite`` (:func:`check_outputs`). Under torchrun with several cells,
    rank ``r`` runs cells ``i % world_size == r`` whole (clip_benchmark's way) and rank 0
    reports for all; with one cell, the ranks share its feature pass."""
    from wca.features.distributed import join, launched
    from wca.options import RunOptions
    from wca.pipeline import cell_digests, load_model, prepare_cell, run_cell

    options = RunOptions() if options is None else options
    if not overwrite:
        check_outputs(cells, options.precision)
    ranks = None
    if launched() and len(cells) > 1:
        from wca.encoders.base import resolve_device
        from wca.features.distributed import rank_device

        ranks = join(resolve_device(rank_device(options.device)), options.dist_timeout)
    summary = Summary(cells=len(cells))
    loaded: tuple[Any, Any] = (None, None)  # (model spec, encoder)
    for index, cell in enumerate(cells):
        if ranks is not None and index % ranks.world_size != ranks.rank:
            continue
        try:
            prepared = prepare_cell(cell.config, options, cell.output)  # data before the model
            settings = cell_settings(cell.config, options.precision)
            why = finished(cell.output, settings, cell_digests(*prepared[:2]))
            if skip_existing and why is None:
                log.info(f"skip {cell.label}: {cell.output} is complete")
                summary.skipped.append(cell.label)
                continue
            if why not in (None, "not there"):
                if not overwrite:  # e.g. the same settings with other texts
                    raise _not_this_cells(cell, why)
                log.info(f"redo {cell.label}: {cell.output}: {why}")
            if loaded[0] != cell.config.model_spec:
                loaded = (None, None)  # free the previous model first
                loaded = (cell.config.model_spec, load_model(cell.config, options))
            result = run_cell(
                cell.config,
                options,
                encoder=loaded[1],
                output=cell.output,
                primary_method=primary_method,
                split_shards=ranks is None,
                prepared=prepared,
            )
        except (Exception, KeyboardInterrupt) as error:
            if isinstance(error, KeyboardInterrupt) or len(cells) == 1:
                raise
            log.error(f"error: {cell.label}: {one_line(error)}")
            summary.failed.append(cell.label)
            continue
        if result is not None:
            summary.written.append(cell.label)
            if on_result is not None:
                on_result(cell, result)
    if ranks is not None:
        ranks.barrier("the sweep")
        summary.reports = ranks.rank == 0
        for index, cell in enumerate(cells):  # the other ranks' cells, as their files say
            if index % ranks.world_size != ranks.rank:
                done = finished(cell.output, cell_settings(cell.config, options.precision)) is None
                (summary.written if done else summary.failed).append(cell.label)
    return summary
