"""`wca eval`: extract features once, then score every method over the authors' multi-run
protocol; a markdown table and a JSON file per (model, dataset) cell of a sweep."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wca import defaults
from wca.cli.options import describe, evaluation_settings, log, run_options
from wca.cli.settings import given, group_of
from wca.sweep import DEFAULT_OUTPUT, OUTPUT_FIELDS, read_list


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="benchmark the methods (clip, clip-e, clip-d, waffle, cupl, wca and, with "
        "--methods, their peers: `wca methods`) on a dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=describe(
            "Extract features once (the full view and a pool of crops per image, cached and "
            "resumable), then score every method over --n-run runs of --patch-n crops drawn "
            "from the pool, as the WCA authors do. Prints a markdown table and writes a JSON "
            "file with every run, the resolved settings and the library versions.",
            "wca eval --dataset cub --data-root ~/data/cub \\\n"
            "      --model ViT-B-32/openai --descriptions-dir shared/descriptors\n"
            "  wca eval --dataset wds/cifar10 --data-root clip-benchmark/wds_cifar10 \\\n"
            "      --model ViT-B-32 --pretrained openai     # clip_benchmark's shards, its style\n"
            "  wca eval --config cub.yaml --data-root ~/data/cub --n-run 5 \\\n"
            "      --set methods.wca.image_scale=3\n"
            "  wca eval --dataset imagefolder --data-root my_photos --descriptions my.json \\\n"
            "      --methods clip,cupl,wca --model open_clip:ViT-B-32/openai\n"
            "  wca eval --dataset cub --dataset dtd --data-root ~/data/{dataset} \\\n"
            "      --model open_clip:ViT-B-32/openai --model open_clip:ViT-B-16/openai \\\n"
            "      --output 'results/{dataset}__{model}__{protocol}.json' --skip-existing",
        ),
    )
    evaluation_settings(parser, ("model", "data", "crops", "protocol"), repeatable=True)
    protocol = group_of(parser, "protocol")
    protocol.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML settings (the same names; the WCA authors' files load as they are); flags "
        "override it",
    )
    protocol.add_argument(
        "--image-scale",
        type=float,
        help="wca's crop-weight log-scale, methods.wca.image_scale (default "
        f"{defaults.IMAGE_SCALE})",
    )
    protocol.add_argument(
        "--text-scale",
        type=float,
        help="wca's description-weight log-scale, methods.wca.text_scale (default "
        f"{defaults.TEXT_SCALE})",
    )
    protocol.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting by name, e.g. n_run=5, methods.waffle.draws=7, "
        "methods.clip-d.enabled=false (repeatable)",
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
        help="skip cells whose result file is complete and has the same settings (with "
        "--overwrite, the files of other settings are computed again and replaced)",
    )
    output = group_of(parser, "output")
    output.add_argument(
        "--output",
        metavar="TEMPLATE",
        help=f"result JSON of each cell (default {DEFAULT_OUTPUT}); fields "
        + ", ".join("{" + name + "}" for name in OUTPUT_FIELDS)
        + ", filled path-safe",
    )
    output.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a result file of other settings (by default eval refuses, before any "
        "work, to write over anything but a result of the same settings)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wca import sweep
    from wca.config import EvalConfig
    from wca.specs import model_label

    models = list(args.model or []) + (read_list(args.models_file) if args.models_file else [])
    datasets = list(args.dataset or []) + (
        read_list(args.datasets_file) if args.datasets_file else []
    )
    options = run_options(args)
    overrides = given(args, EvalConfig)
    for name in ("model", "dataset", "data_root"):  # a sweep's axes
        overrides.pop(name, None)
    overrides["methods.wca.image_scale"] = args.image_scale
    overrides["methods.wca.text_scale"] = args.text_scale
    cells = sweep.plan(
        models,
        datasets,
        args.data_root,
        template=args.output or DEFAULT_OUTPUT,
        config_file=args.config,
        overrides=overrides,
        settings=args.set,
        primary_method=args.primary_method,
    )
    for note in dict.fromkeys(note for cell in cells for note in cell.config.notes):
        log.info(note)

    def show(cell, result) -> None:
        split = cell.config.split or result.config.split
        where = f" ({split})" if split else ""
        title = f"{result.dataset}{where}, {model_label(cell.config.model)}"
        print(result.table(title))
        print(f"\nwrote {result.written or cell.output}", file=sys.stderr)

    summary = sweep.run(
        cells,
        options,
        skip_existing=args.skip_existing,
        overwrite=args.overwrite,
        primary_method=args.primary_method,
        on_result=show,
    )
    if len(cells) > 1 and summary.reports:
        print(summary.line(), file=sys.stderr)
    return 1 if summary.failed else 0
