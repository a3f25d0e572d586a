"""The whole life of one evaluation cell (a model on a dataset): its inputs, whether an existing
result already answers it, its features, its heads, the multi-run protocol and its result.

>>> from wca.config import resolve_config
>>> from wca.options import RunOptions
>>> config = resolve_config("cub", overrides={"data_root": "~/data/CUB_200_2011",
...                                          "model": "open_clip:ViT-B-32/openai"})
>>> result = run_cell(config, RunOptions(descriptions_dir="shared/descriptors"))
>>> print(result.table())

:class:`Cell` is one cell with its result file; :func:`run_cell` runs one from Python. What a
result records and when an existing file can stand for a run is the schema's
(:meth:`wca.results.ResultFile.reusable_for`). Sweeps over models x datasets x data roots are
:mod:`wca.sweep`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from wca import merge
from wca.cell_models import aux_features, build_heads, extract, load_model
from wca.config import EvalConfig
from wca.errors import OutputExists, SettingError
from wca.inputs import (
    cell_digests,
    data_root,
    dataset_name,
    file_sha256,
    load_cell_dataset,
    text_sources,
)
from wca.options import RunOptions
from wca.results import NotAResult, ResultFile, Settings, read_result
from wca.specs import model_fields, model_label, weights_file

log = logging.getLogger("wca")


class Prepared(NamedTuple):
    """What a cell reads before its model is loaded: the dataset, the texts of every method,
    and where the texts came from."""

    dataset: Any
    sources: Any
    source: str


def check_output(output: Path) -> None:
    """Refuse, before any work, an output that can never be written: a folder, or a path
    under something that is not a folder (``/dev/null/x.json``) or cannot be written in."""
    if output.is_dir():
        raise SettingError("output", f"{output} is a folder; the result is a file")
    existing = next(parent for parent in output.absolute().parents if parent.exists())
    if not existing.is_dir():
        raise SettingError("output", f"{output} cannot be written: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SettingError("output", f"{output} cannot be written: no permission in {existing}")


def check_scorable(dataset) -> None:
    """Refuse a dataset whose evaluation could only give a uniform answer: fewer than two
    classes to choose from (every method is right on every image), or fewer than two images
    (an accuracy of 0 or 100 %). Such a number is never a result."""
    subset = dataset.class_subset
    names = dataset.classnames if subset is None else [dataset.classnames[i] for i in subset]
    where = f"{dataset.root}: the {dataset.split} split of {dataset.name}"
    if len(names) < 2:
        raise ValueError(
            f"{where} has one class to choose from ({names[0]!r}); an evaluation needs at "
            "least two (one class is every method's answer, never a result)"
        )
    if len(dataset) < 2:
        raise ValueError(
            f"{where} has one image; an evaluation needs at least two (an accuracy of one "
            "image is 0 or 100 %, never a result)"
        )


@dataclass(frozen=True)
class Cell:
    """One evaluation cell: its settings and, optionally, its result file."""

    config: EvalConfig
    output: Path | None = None

    @property
    def label(self) -> str:
        return f"{dataset_name(self.config)} x {model_label(self.config.model)}"

    def prepare(self, options: RunOptions) -> Prepared:
        """The dataset and texts, read before any model: the output may not lie inside the
        dataset's folder, and the dataset must hold a question (:func:`check_scorable`)."""
        dataset = load_cell_dataset(self.config, options)
        check_scorable(dataset)
        root = Path(dataset.root).resolve() if getattr(dataset, "root", None) else None
        output = self.output
        if output is not None and root is not None and root in Path(output).resolve().parents:
            raise SettingError(
                "output", f"{output} is inside the dataset's folder {root}; write it elsewhere"
            )
        return Prepared(dataset, *text_sources(dataset, options))

    def settings(self, options: RunOptions, prepared: Prepared | None = None) -> Settings:
        """What the cell's result records of its settings (and its inputs' digests, when
        ``prepared``): what an existing result is compared by."""
        values = self.config.to_dict()
        values["data_root"] = data_root(self.config.data_root or ".", self.config.dataset)
        values["precision"] = options.precision
        if prepared is not None:
            values.update(cell_digests(prepared.dataset, prepared.sources))
        return Settings(**values)

    def existing(self, settings: Settings) -> str | None:
        """Why the cell's output cannot stand for a run of ``settings`` (None: it can;
        ``"not there"``: there is no file)."""
        if self.output is None or not Path(self.output).exists():
            return "not there"
        try:
            return read_result(self.output).reusable_for(settings)
        except (NotAResult, OSError) as error:
            return f"not a result file ({error})"

    def blocking(self, settings: Settings) -> str | None:
        """Why the cell may not write its output (None: there is none, or it is this cell's
        result, whose methods a run adds to: :mod:`wca.merge`)."""
        if self.output is None or not Path(self.output).exists():
            return None
        try:
            return read_result(self.output).other_cell(settings)
        except (NotAResult, OSError) as error:
            return f"not a result file ({error})"

    def refuse_to_replace(self, why: str) -> OutputExists:
        return OutputExists(
            f"{self.output} exists and is not this cell's result ({why}); choose another "
            "output, or overwrite it"
        )

    def run(
        self,
        options: RunOptions | None = None,
        *,
        encoder=None,
        reuse: bool = False,
        overwrite: bool = False,
        primary_method: str | None = None,
        split_shards: bool = True,
        prepared: Prepared | None = None,
    ) -> ResultFile | None:
        """Evaluate the cell: ``config``'s model (or ``encoder``, or a function that loads it
        when needed) on its dataset, every enabled method over the multi-run protocol.

        An output file already there is returned as it is with ``reuse`` when it is this
        cell's result with the run's methods; when it is this cell's result with other
        methods, the run's are added to it (a method it holds with other options: the run
        writes beside it, :func:`wca.merge.beside`, unless ``overwrite``). A file of another
        cell is replaced only with ``overwrite``, else refused before any work. The result is
        written to the output (never inside the dataset's own folder) and returned; under
        torchrun, ranks other than 0 encode their share of the features and return None."""
        options = RunOptions() if options is None else options
        prepared = self.prepare(options) if prepared is None else prepared
        if self.output is not None:
            settings = self.settings(options, prepared)
            why = self.existing(settings)
            if why is None and reuse:
                log.info(f"skip {self.label}: {self.output} is complete")
                return read_result(self.output)
            blocked = self.blocking(settings)
            if blocked is not None:
                if not overwrite:
                    raise self.refuse_to_replace(blocked)
                log.info(f"redo {self.label}: {self.output}: {blocked}")
            elif why != "not there" and not overwrite:
                clash = merge.conflicts(read_result(self.output), settings)
                if clash:
                    target = merge.beside(self.output, settings)
                    log.info(
                        f"{self.output} holds {', '.join(clash)} with other options: "
                        f"this run goes to {target.name}"
                    )
                    return Cell(self.config, target).run(
                        options, encoder=encoder, reuse=reuse, primary_method=primary_method,
                        split_shards=split_shards, prepared=prepared,
                    )  # fmt: skip
        if encoder is None:
            encoder = load_model(self.config, options)
        elif callable(encoder) and not hasattr(encoder, "encode_images"):
            encoder = encoder()
        result = _evaluate_cell(self, options, encoder, prepared, primary_method, split_shards)
        if result is not None and self.output is not None:
            result = self._with_existing(result, primary_method)
            result.write(self.output)
        return result

    def _with_existing(self, result: ResultFile, primary_method: str | None) -> ResultFile:
        """``result`` with the methods the output already holds for this cell added (the
        weights' digest compared now that it is known); another file's are replaced."""
        try:
            existing = read_result(self.output)
        except (NotAResult, OSError):
            return result
        if existing.other_cell(result.config) is not None:
            return result
        added = [name for name in existing.results.methods if name not in result.results.methods]
        if added:
            log.info(f"{self.output}: kept {', '.join(added)} beside this run's methods")
        return merge.merged(existing, result, primary_method)


def _evaluate_cell(
    cell: Cell,
    options: RunOptions,
    encoder,
    prepared: Prepared,
    primary_method: str | None,
    split_shards: bool,
) -> ResultFile | None:
    """Features, heads and the protocol of a prepared cell, as its result."""
    from wca.evaluate import evaluate, result_file
    from wca.protocol_runs import protocol_runs

    config = cell.config
    dataset, sources, source = prepared
    if sources.sentences:
        from wca.encoders import check_texts

        check_texts(encoder, sources.sentences, source)  # over the text context: one warning
    heads = build_heads(config, sources, encoder, options.allow_duplicate_classes)
    started = time.perf_counter()
    reasons: dict[int, str] = {}
    skip = options.bad_images == "skip"
    on_bad_image = (lambda index, error: reasons.setdefault(index, str(error))) if skip else None
    features = extract(config, options, encoder, dataset, on_bad_image,
                       split_shards=split_shards, heads=heads)  # fmt: skip
    aux = aux_features(
        config, options, heads, dataset, features, on_bad_image, split_shards=split_shards
    )
    if features is None:  # a rank other than 0 of a torchrun: its shards are done
        return None
    paths = getattr(dataset, "paths", None)
    skipped = []
    for i in (~features.valid).nonzero().flatten().tolist():
        file = None if paths is None else str(paths[i])
        cached = f"{file or 'image'}: unreadable when the cached features were made"
        skipped.append({"index": i, "file": file, "error": reasons.get(i, cached)})
        log.warning(f"skipped image {i}: {skipped[-1]['error']}")
    extracted = time.perf_counter()
    where = "in memory" if features.source is None else f"cached in {features.source}"
    log.info(
        f"features: {len(features)} images x {config.n_crops} crops, {where} "
        f"({extracted - started:.1f} s)"
    )
    def score(found, runs: int, seed: int):
        return evaluate(found, heads, runs, config.patch_n, seed, protocol=config.protocol,
                        class_subset=dataset.class_subset, logit_scale=float(encoder.logit_scale),
                        progress=options.progress, counts=found.counts,
                        aux=None if aux is None else aux.features)  # fmt: skip

    def features_of_seed(seed: int):  # the adaptive budget's runs differ by their crop seed
        return extract(config.model_copy(update={"seed": seed}), options, encoder, dataset,
                       on_bad_image, heads=heads)  # fmt: skip

    evaluation = protocol_runs(config, features, features_of_seed, score)
    for method in config.enabled_methods():
        if method.name in evaluation.methods:
            evaluation.methods[method.name].options = method.resolved_options(config.dataset)
    model_file = weights_file(config.model)
    settings = {
        **cell.settings(options, prepared).model_dump(),
        "descriptions": source,
        "encoder": encoder.identity,
        "aux_encoder": None if aux is None else aux.identity,
        "model_file": model_file,
        "model_sha256": file_sha256(model_file),
        "device": str(encoder.device),
        "num_workers": options.num_workers,
        "feature_cache": None if features.source is None else str(Path(features.source).resolve()),
        "skipped_images": skipped,
        "dataset_info": {
            "name": dataset.name,
            "split": dataset.split,
            "images": len(dataset),
            "classnames": list(dataset.classnames),
        },
        "seconds": {
            "features": round(extracted - started, 3),
            "scoring": round(time.perf_counter() - extracted, 3),
        },
    }
    names = model_fields(config.model)
    return result_file(
        evaluation,
        settings,
        dataset=dataset_name(config),
        model=str(names["model"]),
        pretrained=str(names["pretrained"]),
        primary=primary_method,
    )


def run_cell(
    config: EvalConfig,
    options: RunOptions | None = None,
    *,
    encoder=None,
    output: str | Path | None = None,
    reuse: bool = False,
    overwrite: bool = False,
    primary_method: str | None = None,
) -> ResultFile | None:
    """Evaluate one cell from Python (:meth:`Cell.run`): ``config``'s model (or ``encoder``)
    on its dataset, written to ``output`` when given."""
    if not isinstance(config, EvalConfig):
        raise SettingError("config", f"expected an EvalConfig, got a {type(config).__name__}")
    if output is not None:
        check_output(Path(output))
    cell = Cell(config, None if output is None else Path(output))
    return cell.run(
        options, encoder=encoder, reuse=reuse, overwrite=overwrite, primary_method=primary_method
    )
