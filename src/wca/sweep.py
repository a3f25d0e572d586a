"""Sweeps over models x datasets x data roots: planning the cells and looping over them.

A sweep is a list of cells (:class:`wca.pipeline.Cell`), one per (model, dataset, data root);
each writes one result file whose path comes from a template such as
``results/{dataset}__{model}__{protocol}.json``. :func:`plan` resolves and checks every cell's
settings before any work; :func:`run` runs them, loading each model once for consecutive cells,
going on past a failed cell, and under torchrun spreading the cells over the ranks as
clip_benchmark's ``--distributed`` does. What a cell does (inputs, reuse, features, result) is
the pipeline's; here are the loop and the pieces that need no model or data: reading name
lists and filling the template with path-safe values (model specs named by :mod:`wca.specs`).
"""

from __future__ import annotations

import hashlib
import logging
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wca.errors import SettingError
from wca.specs import model_fields, model_label

if TYPE_CHECKING:
    from wca.pipeline import Cell

log = logging.getLogger("wca")

DEFAULT_OUTPUT = "results/{dataset}__{model}__{protocol}.json"
OUTPUT_FIELDS = ("dataset", "model", "pretrained", "protocol", "split", "n_run", "patch_n", "seed")
SAFE_LENGTH = 80
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
    meant to be the model's short label, ``{pretrained}`` its weights (:func:`model_labels`)."""
    check_template(template)
    safe = {key: path_safe(str(values.get(key))) for key in OUTPUT_FIELDS}
    return Path(template.format(**safe)).expanduser()


def model_labels(specs: Sequence[str]) -> dict[str, str]:
    """The short label of each spec (:func:`wca.specs.model_label`: ``ViT-B-32 openai``, a
    weights file's stem), with a short hash of the spec where two specs share a label (two
    checkpoints of one name in different folders stay apart)."""
    labels = {spec: model_label(spec) for spec in dict.fromkeys(specs)}
    shared = {text for text in labels.values() if list(labels.values()).count(text) > 1}
    return {
        spec: f"{text} {hashlib.sha256(spec.encode()).hexdigest()[:8]}" if text in shared else text
        for spec, text in labels.items()
    }


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
) -> list[Cell]:
    """Every cell of models x datasets x data roots (a root may hold ``{dataset}``), settings
    resolved (:func:`wca.config.resolve_config`) and checked before any work starts, model
    specs resolved (a malformed one refused); two cells may not write the same file. The
    settings are checked before any model library is imported (they need none)."""
    from wca.config import check_protocol, resolve_config
    from wca.configs import config_path, read_config_file
    from wca.datasets import loader_of
    from wca.inputs import data_root, dataset_name, is_remote

    check_template(template)
    datasets, roots = _names(datasets), _names(data_roots)
    if any(r and "{dataset}" not in r for r in roots) and len(set(datasets)) > 1:
        raise SettingError("data_root", f"several datasets need {{dataset}} in {', '.join(roots)}")
    config_file = None if config_file is None else config_path(config_file).resolve()
    configs = []
    for model in _names(models):
        for dataset in datasets:
            named = dataset or (read_config_file(config_file).get("dataset") if config_file else "")
            for root in roots:
                values = dict(overrides or {})
                values["model"] = model
                if root is not None:
                    where = root.replace("{dataset}", str(named or ""))
                    values["data_root"] = data_root(where, named)
                config = resolve_config(dataset, config_file, values, settings)
                if not config.dataset:
                    raise SettingError("dataset", "not set (a name, or dataset: in a config)")
                try:
                    loader_of(config.dataset)
                except ValueError as error:
                    raise SettingError("dataset", str(error)) from None
                if not config.data_root:
                    raise SettingError("data_root", "not set (where the dataset is)")
                remote = is_remote(config.data_root, config.dataset)
                if not remote and not Path(config.data_root).expanduser().is_dir():  # no model yet
                    raise FileNotFoundError(
                        f"{config.data_root}: data root does not exist or is not a folder"
                    )
                enabled = [method.name for method in config.enabled_methods()]
                if not enabled:
                    raise SettingError("methods", "every method is disabled (enable one)")
                if primary_method and primary_method not in enabled:
                    raise SettingError(
                        "primary_method",
                        f"{primary_method} is not among the methods ({', '.join(enabled)})",
                    )
                check_protocol(config.n_crops, config.n_run, config.patch_n, config.protocol)
                configs.append(config)
    from wca.pipeline import Cell, check_output  # noqa: F811  (imported when planning)

    for config in configs:
        config.model = checked_spec(config.model)
    labels = model_labels([config.model for config in configs])
    cells: list[Cell] = []
    for config in configs:
        fields = {**config.model_dump(), **model_fields(config.model)}
        fields["model"] = labels[config.model]
        fields["dataset"] = dataset_name(config)
        if config.budget.adaptive:  # its runs are crop seeds, not draws: beside the fixed file
            fields["protocol"] = "adaptive"
        cells.append(Cell(config, output_path(template, fields).resolve()))
    seen: dict[Path, Cell] = {}
    for cell in cells:
        check_output(cell.output)
        if cell.output in seen:
            raise SettingError(
                "output",
                f"{template}: {seen[cell.output].label} and {cell.label} would both write "
                f"{cell.output}; add {{dataset}} and {{model}} to the template",
            )
        seen[cell.output] = cell
    return cells


def checked_spec(spec: str) -> str:
    """``spec`` as ``BACKEND:MODEL`` (a named model, ``ARCH/TAG`` or a bare path resolved). A
    malformed spec or an unknown backend is a SettingError naming ``model``; a missing
    checkpoint stays as it is (loading it fails, in its own cell, and the sweep goes on)."""
    from wca.encoders.registry import split_spec
    from wca.specs import resolve

    try:
        resolved = resolve(spec)[0]
        split_spec(resolved)  # a backend the registry knows, a model after it
        return resolved
    except FileNotFoundError:
        return spec
    except ValueError as error:
        raise SettingError("model", str(error)) from None


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
    """Refuse, before any work, to replace a file that is not a result of its cell (a run
    with other crops, another JSON): what was computed is never lost. A result of the same
    cell is not refused: the run adds its methods to it (:mod:`wca.merge`)."""
    from wca.options import RunOptions

    options = RunOptions(precision=precision, cache_dir=None)
    for cell in cells:
        why = cell.blocking(cell.settings(options))
        if why is not None:
            raise cell.refuse_to_replace(why)


def run(
    cells: Sequence[Cell],
    options=None,
    *,
    skip_existing: bool = False,
    overwrite: bool = False,
    primary_method: str | None = None,
    on_result: Callable[[Cell, Any], None] | None = None,
) -> Summary:
    """Run every cell (:meth:`wca.pipeline.Cell.run`), each model loaded once for consecutive
    cells; a failed cell is logged in one line and the others go on. ``skip_existing`` passes
    over cells whose file is complete with the same settings; a file of other settings is
    replaced only with ``overwrite`` (:func:`check_outputs`). Under torchrun with several cells,
    rank ``r`` runs cells ``i % world_size == r`` whole (clip_benchmark's way) and rank 0
    reports for all; with one cell, the ranks share its feature pass."""
    from wca.cell_models import load_model
    from wca.features.distributed import join, launched
    from wca.options import RunOptions

    options = RunOptions() if options is None else options
    if not overwrite:
        check_outputs(cells, options.precision)
    ranks = None
    if launched() and len(cells) > 1:
        from wca.encoders.base import resolve_device
        from wca.features.distributed import rank_device

        ranks = join(resolve_device(rank_device(options.device)), options.dist_timeout)
        if ranks.rank == 0:
            log.info(
                f"torchrun: {ranks.world_size} ranks split the {len(cells)} cells: rank r runs "
                f"the cells i with i % {ranks.world_size} == r, each whole; rank 0 reports"
            )
    summary = Summary(cells=len(cells))
    loaded: dict[str, Any] = {}  # the model of the last cell that needed one, by spec

    def model(cell: Cell):
        if cell.config.model not in loaded:
            loaded.clear()  # free the previous model first
            loaded[cell.config.model] = load_model(cell.config, options)
        return loaded[cell.config.model]

    for index, cell in enumerate(cells):
        if ranks is not None and index % ranks.world_size != ranks.rank:
            continue
        try:
            computed = []
            result = cell.run(
                options,
                encoder=lambda cell=cell, computed=computed: computed.append(1) or model(cell),
                reuse=skip_existing,
                overwrite=overwrite,
                primary_method=primary_method,
                split_shards=ranks is None,
            )
        except (Exception, KeyboardInterrupt) as error:
            if isinstance(error, KeyboardInterrupt) or len(cells) == 1:
                raise
            log.error(f"error: {cell.label}: {one_line(error)}")
            summary.failed.append(cell.label)
            continue
        if result is not None and not computed:
            summary.skipped.append(cell.label)
        elif result is not None:
            summary.written.append(cell.label)
            if on_result is not None:
                on_result(cell, result)
    if ranks is not None:
        ranks.barrier("the sweep")
        summary.reports = ranks.rank == 0
        for index, cell in enumerate(cells):  # the other ranks' cells, as their files say
            if index % ranks.world_size != ranks.rank:
                done = cell.existing(cell.settings(options)) is None
                (summary.written if done else summary.failed).append(cell.label)
    return summary
