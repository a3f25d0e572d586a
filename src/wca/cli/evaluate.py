"""`wca eval`: extract features once, then score every method over the authors' multi-run
protocol; a markdown table and a JSON file per (model, dataset) cell of a sweep."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wca.cli import UsageError
from wca.cli.options import (
    build_heads,
    crop_options,
    data_options,
    describe,
    extract,
    load_dataset,
    load_encoder,
    model_options,
    resolve,
    text_sources,
)
from wca.sweep import (
    DEFAULT_OUTPUT,
    OUTPUT_FIELDS,
    absolute_spec,
    check_template,
    finished,
    model_fields,
    output_path,
    read_list,
    weights_file,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="benchmark clip, clip-e, clip-d, waffle, cupl and wca on a dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=describe(
            "Extract features once (the full view and a pool of crops per image, cached and "
            "resumable), then score every method over --n-run runs of --patch-n crops drawn "
            "from the pool, as the WCA authors do. Prints a markdown table and writes a JSON "
            "file with every run, the resolved settings and the library versions.",
            "wca eval --dataset cub --data-root ~/data/CUB_200_2011 \\\n"
            "      --model open_clip:ViT-B-32/openai --descriptions-dir shared/descriptors\n"
            "  wca eval --config cub.yaml --data-root ~/data/CUB_200_2011 --n-run 5 \\\n"
            "      --set methods.wca.image_scale=3\n"
            "  wca eval --dataset imagefolder --data-root my_photos --descriptions my.json \\\n"
            "      --methods clip,cupl,wca --model open_clip:ViT-B-32/openai\n"
            "  wca eval --dataset cub --dataset dtd --data-root ~/data/{dataset} \\\n"
            "      --model open_clip:ViT-B-32/openai --model open_clip:ViT-B-16/openai \\\n"
            "      --output 'results/{dataset}__{model}__{protocol}.json' --skip-existing",
        ),
    )
    data_options(parser, many=True)
    model_options(parser, many=True)
    crop_options(parser)
    protocol = parser.add_argument_group("protocol and methods")
    protocol.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML settings in the WCA authors' shape (model_size, alpha, "
        "n_samples, n_run, patch_n, methods); flags override it",
    )
    protocol.add_argument(
        "--methods",
        help="comma-separated methods (default: clip,clip-e,clip-d,waffle,cupl,wca); also "
        "wca-uniform-crops, wca-uniform-text, wca-full-view, wca-paper, zero, mta, awt",
    )
    protocol.add_argument("--n-run", "--runs", dest="n_run", type=int, help="runs to average (20)")
    protocol.add_argument("--patch-n", type=int, help="crops drawn per run (default 60)")
    protocol.add_argument(
        "--protocol",
        choices=("pool", "fresh"),
        help="pool: each run draws --patch-n crops with replacement from the "
        "pool, same indices for every image (the authors'); fresh: each run "
        "gets its own crops (needs n-samples >= n-run * patch-n)",
    )
    protocol.add_argument("--image-scale", type=float, help="wca crop-weight scale (exp'd; 4.0)")
    protocol.add_argument(
        "--text-scale", type=float, help="wca description-weight scale (exp'd; 2.0)"
    )
    protocol.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. n_run=5, "
        "methods.waffle.draws=7, methods.clip-d.enabled=false (repeatable)",
    )
    protocol.add_argument(
        "--allow-duplicate-classes",
        action="store_true",
        help="score class lists with repeated names (ImageNet's published "
        "names repeat 'missile' and 'sunglasses')",
    )
    protocol.add_argument(
        "--primary-method",
        metavar="NAME",
        help="the method of clip_benchmark's `metrics` field (default: wca, else the first "
        "method evaluated); metrics_by_method has every method",
    )
    sweep = parser.add_argument_group(
        "sweeps (every --model x every --dataset; --data-root may contain {dataset})"
    )
    sweep.add_argument("--models-file", type=Path, metavar="FILE", help="model specs, one a line")
    sweep.add_argument("--datasets-file", type=Path, metavar="FILE", help="datasets, one a line")
    sweep.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip cells whose result file is complete and has the same settings",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--output",
        "--out",
        dest="output",
        metavar="TEMPLATE",
        help=f"result JSON of each cell (default {DEFAULT_OUTPUT}); fields "
        + ", ".join("{" + name + "}" for name in OUTPUT_FIELDS)
        + ", filled path-safe",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bars")
    output.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip unreadable images (each named on stderr and listed under skipped_images "
        "in the result JSON; accuracy is over the rest) instead of stopping at the first",
    )
    parser.set_defaults(handler=run)


@dataclass
class Cell:
    """One (model, dataset) of a sweep: its arguments, settings and result file."""

    args: argparse.Namespace
    config: Any  # wca.config.EvalConfig
    output: Path

    @property
    def label(self) -> str:
        return f"{self.config.dataset} x {self.config.model_spec}"


def _names(given: list[str] | None, path: Path | None) -> list[str | None]:
    names = list(given or []) + (read_list(path) if path is not None else [])
    return names or [None]  # None: from --config or the defaults


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.expanduser().resolve()


def plan(args: argparse.Namespace) -> list[Cell]:
    """Every cell of the sweep, settings resolved and checked before any work starts."""
    from wca.config import config_path, read_config_file
    from wca.evaluate import run_indices

    models = _names(args.model, args.models_file)
    datasets = _names(args.dataset, args.datasets_file)
    template = args.output or DEFAULT_OUTPUT
    check_template(template)
    root = None if args.data_root is None else str(args.data_root)
    if root and "{dataset}" not in root and len(set(datasets)) > 1:
        raise UsageError(f"--data-root {root}: several datasets need {{dataset}} in the path")
    cells: list[Cell] = []
    for model in models:
        for dataset in datasets:
            cell_args = argparse.Namespace(**vars(args))
            cell_args.model = None if model is None else absolute_spec(model)
            cell_args.dataset = dataset
            cell_args.config = None if args.config is None else config_path(args.config)
            named = dataset or (read_config_file(args.config).get("dataset") if args.config else "")
            if root is not None:
                cell_args.data_root = Path(root.replace("{dataset}", str(named or "")))
            for key in ("data_root", "descriptions", "descriptions_dir", "cache_dir", "config"):
                setattr(cell_args, key, _absolute(getattr(cell_args, key)))
            config = resolve(cell_args, protocol_flags=True)
            enabled = [method.name for method in config.enabled_methods()]
            if not enabled:
                raise UsageError("every method is disabled: enable one (--methods clip,wca)")
            if args.primary_method and args.primary_method not in enabled:
                raise UsageError(
                    f"--primary-method {args.primary_method}: not among the methods "
                    f"({', '.join(enabled)})"
                )
            run_indices(
                config.n_samples, config.n_run, config.patch_n, config.seed, config.protocol
            )
            values = {**config.model_dump(), **model_fields(config.model_spec)}
            values["model"] = config.model_spec  # the whole spec: two checkpoints stay apart
            cells.append(Cell(cell_args, config, output_path(template, values).resolve()))
    seen: dict[Path, Cell] = {}
    for cell in cells:
        if cell.output in seen:
            raise UsageError(
                f"--output {template}: {seen[cell.output].label} and {cell.label} would both "
                f"write {cell.output}; add {{dataset}} and {{model}} to the template"
            )
        seen[cell.output] = cell
    return cells


def run(args: argparse.Namespace) -> int:
    cells = plan(args)
    encoders = _Encoders()
    if len(cells) == 1 and not args.skip_existing:
        run_cell(cells[0], encoders)
        return 0
    done = skipped = 0
    failed: list[str] = []
    for cell in cells:
        if args.skip_existing:
            why = finished(cell.output, _settings(cell.config))
            if why is None:
                print(f"skip {cell.label}: {cell.output} is complete", file=sys.stderr)
                skipped += 1
                continue
            if why != "not there":
                print(f"redo {cell.label}: {cell.output}: {why}", file=sys.stderr)
        try:
            run_cell(cell, encoders)
            done += 1
        except Exception as error:  # one cell's failure must not end the sweep
            print(f"wca: error: {cell.label}: {_one_line(error)}", file=sys.stderr)
            failed.append(cell.label)
    if len(cells) > 1:
        print(
            f"sweep: {len(cells)} cells, {done} written, {skipped} skipped, {len(failed)} failed"
            + (f" ({'; '.join(failed)})" if failed else ""),
            file=sys.stderr,
        )
    return 1 if failed else 0


def _one_line(error: Exception) -> str:
    input_errors = (UsageError, FileNotFoundError, ValueError, KeyError)
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = " ".join(str(message).split())
    return text if isinstance(error, input_errors) else f"{type(error).__name__}: {text}"


class _Encoders:
    """The encoder of the last cell, reused while the next cell asks for the same one."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.encoder = None

    def get(self, args: argparse.Namespace, spec: str, batch_size: int | None):
        key = (spec, args.device, args.precision, batch_size)
        if key != self.key:
            self.key, self.encoder = None, None  # free the previous model first
            self.encoder = load_encoder(args, spec, batch_size)
            self.key = key
        return self.encoder


def _settings(config) -> dict[str, Any]:
    """The settings a result file records: the config (no model_size when a spec was given, see
    ``EvalConfig.to_dict``) with the absolute data path."""
    settings = config.to_dict()
    settings["data_path"] = str(Path(config.data_path).expanduser().resolve())
    return settings


def _primary(args: argparse.Namespace, evaluated: list[str]) -> str:
    if args.primary_method:
        return args.primary_method
    return "wca" if "wca" in evaluated else evaluated[0]


def run_cell(cell: Cell, encoders: _Encoders) -> Path | None:
    """Extract (or read cached) features of one cell, score every method, write its JSON
    (under torchrun, ranks other than 0 only extract, and return None)."""
    from wca.evaluate import benchmark_fields, evaluate, write_json

    args, config = cell.args, cell.config
    dataset = load_dataset(config, args)
    sources, text_source = text_sources(dataset, args)
    encoder = encoders.get(args, config.model_spec, config.batch_size)
    heads = build_heads(config, sources, encoder, args.allow_duplicate_classes)
    started = time.perf_counter()
    reasons: dict[int, str] = {}
    if args.skip_bad_images:
        args.on_bad_image = lambda index, error: reasons.setdefault(index, str(error))
    features = extract(config, args, encoder, dataset)
    if features is None:  # a rank other than 0 of a torchrun: its shards are done
        return None
    paths = getattr(dataset, "paths", None)
    skipped = []
    for i in (~features.valid).nonzero().flatten().tolist():
        file = None if paths is None else str(paths[i])
        cached = f"{file or 'image'}: unreadable when the cached features were made"
        skipped.append({"index": i, "file": file, "error": reasons.get(i, cached)})
    for entry in skipped:
        print(f"wca: skipped image {entry['index']}: {entry['error']}", file=sys.stderr)
    extracted = time.perf_counter()
    where = "in memory" if features.source is None else f"cached in {features.source}"
    print(
        f"features: {len(features)} images x {config.n_samples} crops, {where} "
        f"({extracted - started:.1f} s)",
        file=sys.stderr,
    )
    result = evaluate(
        features,
        heads,
        config.n_run,
        config.patch_n,
        config.seed,
        protocol=config.protocol,
        class_subset=dataset.class_subset,
        progress=not args.no_progress,
    )
    print(result.table(f"{dataset.name} ({dataset.split}), {config.model_spec}"))
    names = model_fields(config.model_spec)
    benchmark = benchmark_fields(
        result,
        dataset.name,
        str(names["model"]),
        str(names["pretrained"]),
        _primary(args, list(result.methods)),
    )
    run = {
        **_settings(config),
        "descriptions": str(
            text_source.resolve() if isinstance(text_source, Path) else text_source
        ),
        "encoder": encoder.identity,
        "model_file": weights_file(config.model_spec),
        "device": str(encoder.device),
        "precision": args.precision,
        "num_workers": args.num_workers,
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
    write_json(result, cell.output, run, benchmark)
    print(f"\nwrote {cell.output}", file=sys.stderr)
    return cell.output
