"""`wca eval`: extract features once, then score every method over the authors' multi-run
protocol; a markdown table and a JSON file per (model, dataset) cell of a sweep."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wca.cli.options import (
    config_overrides,
    crop_options,
    data_options,
    describe,
    flag_name,
    log,
    model_help,
    model_options,
    run_options,
    setting_label,
)
from wca.sweep import DEFAULT_OUTPUT, OUTPUT_FIELDS, read_list


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
            "wca eval --dataset cub --data-root ~/data/cub \\\n"
            "      --model open_clip:ViT-B-32/openai --descriptions-dir shared/descriptors\n"
            "  wca eval --config cub.yaml --data-root ~/data/cub --n-run 5 \\\n"
            "      --set methods.wca.image_scale=3\n"
            "  wca eval --dataset imagefolder --data-root my_photos --descriptions my.json \\\n"
            "      --methods clip,cupl,wca --model open_clip:ViT-B-32/openai\n"
            "  wca eval --dataset cub --dataset dtd --data-root ~/data/{dataset} \\\n"
            "      --model open_clip:ViT-B-32/openai --model open_clip:ViT-B-16/openai \\\n"
            "      --output 'results/{dataset}__{model}__{protocol}.json' --skip-existing",
        ),
    )
    data_options(parser, many=True)
    model_options(
        parser,
        many=True,
        model_help=model_help("the OpenAI CLIP of model_size in --config, else ViT-B/32"),
    )
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
    output.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a result file of other settings (by default eval refuses, before any "
        "work, to write over anything but a result of the same settings)",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bars")
    output.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip unreadable images (each named on stderr and listed under skipped_images "
        "in the result JSON; accuracy is over the rest) instead of stopping at the first",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wca import sweep

    models = list(args.model or []) + (read_list(args.models_file) if args.models_file else [])
    datasets = list(args.dataset or []) + (
        read_list(args.datasets_file) if args.datasets_file else []
    )
    options = run_options(args)
    cells = sweep.plan(
        models,
        datasets,
        args.data_root,
        template=args.output or DEFAULT_OUTPUT,
        config_file=args.config,
        overrides=config_overrides(args, protocol_flags=True),
        settings=args.set,
        primary_method=args.primary_method,
        flag=flag_name,
        setting=setting_label,
    )
    for note in dict.fromkeys(note for cell in cells for note in cell.config.notes):
        log.info(note)

    def show(cell: sweep.Cell, result) -> None:
        split = cell.config.split or result.config.split
        title = f"{result.dataset}{f' ({split})' if split else ''}, {cell.config.model_spec}"
        print(result.table(title))
        print(f"\nwrote {cell.output}", file=sys.stderr)

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
