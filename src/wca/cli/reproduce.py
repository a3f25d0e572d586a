"""`wca reproduce`: the paper's table in one command: every shipped config x every model,
all methods with the authors' protocol, resumable, ending with the report beside the paper."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wca import defaults
from wca.cli import UsageError
from wca.cli.options import describe, flag_name
from wca.defaults import IMAGENET_FAMILY

PAPER_MODELS = ("ViT-B-32/openai", "ViT-B-16/openai", "ViT-L-14/openai")
CELL_OUTPUT = "{dataset}__{model}__{protocol}.json"
IMAGENET_CUPL = Path("cupl-original") / "imagenet_prompts_base.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="the paper's whole table: every dataset config x model, all methods, with report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=describe(
            "Run `wca eval` on every shipped config (the authors' settings of each "
            "dataset) with every model, all six methods and the authors' protocol, writing one "
            "result file per cell into --output-dir. Cells already complete with the same "
            "settings are skipped, so an interrupted run resumes. Before any work it prints "
            "what the run needs (each dataset's folder and texts, each model's weights) and "
            "what is missing; datasets that are missing are left out (exit status 1). Ends "
            "with `wca report "
            "--paper` on the folder: our top-1 beside the published numbers. ImageNet and its "
            "variants score with the repeated published names and, as no CuPL set of the "
            "authors is public, CuPL's own imagenet_prompts_base.json when the descriptions "
            "directory has it.",
            "wca reproduce --data-root ~/data/{dataset} --descriptions-dir shared/descriptors\n"
            "      # e.g. ~/data/cub/CUB_200_2011, ~/data/dtd/dtd\n"
            "  wca reproduce --data-root ~/data/{dataset} --models ViT-B-32/openai "
            "--datasets cub,dtd",
        ),
    )
    parser.add_argument(
        "--data-root",
        required=True,
        metavar="TEMPLATE",
        help="where each dataset is, with {dataset} for the config's dataset name",
    )
    parser.add_argument(
        "--models",
        action="append",
        metavar="LIST",
        help="comma-separated open_clip ARCH/TAG pairs or full model specs (repeatable; "
        f"default {','.join(PAPER_MODELS)})",
    )
    parser.add_argument("--datasets", metavar="LIST", help="comma-separated subset of the configs")
    parser.add_argument(
        "--configs",
        type=Path,
        metavar="DIR",
        help="folder of dataset configs (default: those shipped with wca, the authors')",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("results") / "paper",
        metavar="DIR",
        help="one result JSON per cell (default results/paper)",
    )
    parser.add_argument(
        "--descriptions-dir",
        type=Path,
        metavar="DIR",
        help="description sets laid out <dataset>/cupl.json, clip-d.json, clip-e.json "
        "(default: $WCA_DESCRIPTIONS_DIR, else ~/.cache/wca/descriptions)",
    )
    parser.add_argument(
        "--descriptions",
        metavar="TEMPLATE",
        help="texts of each dataset instead: a folder laid out like one dataset of "
        "--descriptions-dir or a {class: [sentence, ...]} JSON, {dataset} standing for the "
        "dataset's name (without it: one dataset only)",
    )
    parser.add_argument("--cache-dir", type=Path, metavar="DIR", help="feature cache")
    parser.add_argument("--device", default=defaults.DEVICE, help="auto (cuda, mps, cpu), cpu, ...")
    parser.add_argument("--precision", default=defaults.PRECISION, choices=("fp32", "fp16", "bf16"))
    parser.add_argument(
        "--batch-size", type=int, help=f"views per encoder pass (default {defaults.BATCH_SIZE})"
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=defaults.NUM_WORKERS,
        help=f"loader processes (default {defaults.NUM_WORKERS})",
    )
    parser.add_argument("--csv", type=Path, metavar="FILE", help="the report as CSV")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="the report as a bar chart")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def model_specs(lists: list[str] | None) -> list[str]:
    """``ARCH/TAG`` -> ``open_clip:ARCH/TAG``; full specs (``BACKEND:...``) as they are."""
    names = [name.strip() for text in lists or [",".join(PAPER_MODELS)] for name in text.split(",")]
    return [name if ":" in name else f"open_clip:{name}" for name in names if name]


def config_files(folder: Path | None, datasets: str | None) -> list[Path]:
    """The config files of the run, every one of the folder or those of ``datasets``."""
    from wca.configs import PACKAGED_CONFIGS

    folder = PACKAGED_CONFIGS if folder is None else folder
    files = {path.stem: path for path in sorted(Path(folder).glob("*.yaml"))}
    if not files:
        raise UsageError(f"--configs {folder}: no *.yaml config files")
    if datasets is None:
        return list(files.values())
    wanted = [name.strip() for name in datasets.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in files]
    if unknown:
        raise UsageError(
            f"--datasets: no config for {', '.join(unknown)} in {folder} "
            f"(configs: {', '.join(files)})"
        )
    return [files[name] for name in wanted]


def config_options(options, config: Path):
    """The run options of one config: ImageNet and its variants score with the published name
    lists (which repeat names) and CuPL's own ImageNet sentences where the descriptions
    directory has them (no CuPL set of the WCA authors is public)."""
    from wca.datasets import resolve_descriptions_dir

    if config.stem not in IMAGENET_FAMILY:
        return options
    cupl = resolve_descriptions_dir(options.descriptions_dir)[0] / IMAGENET_CUPL
    return options.model_copy(
        update={"allow_duplicate_classes": True, "descriptions": cupl if cupl.is_file() else None}
    )


def run(args: argparse.Namespace) -> int:
    from wca import sweep
    from wca.cli.report import print_report
    from wca.options import RunOptions

    if "{dataset}" not in args.data_root:
        raise UsageError(f"--data-root {args.data_root}: put {{dataset}} where each name goes")
    models = model_specs(args.models)
    configs = config_files(args.configs, args.datasets)
    if args.descriptions and "{dataset}" not in args.descriptions and len(configs) > 1:
        raise UsageError(
            f"--descriptions {args.descriptions}: put {{dataset}} where each name goes "
            f"({len(configs)} datasets)"
        )
    cache = args.cache_dir or defaults.cache_dir("features")
    options = RunOptions(
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        cache_dir=cache.expanduser().resolve(),
        descriptions_dir=args.descriptions_dir,
        progress=not args.no_progress,
    )
    planned: dict[Path, list | Exception] = {}
    for config in configs:
        try:
            planned[config] = sweep.plan(
                models,
                None,
                [args.data_root],
                template=str(args.output_dir / CELL_OUTPUT),
                config_file=config,
                flag=flag_name,
            )
        except (FileNotFoundError, ValueError) as error:
            planned[config] = error
    options_of = {
        config: cell_options(options, config, args.descriptions, dataset_of(config, cells))
        for config, cells in planned.items()
    }
    rows, ready = needs(planned, options_of, models)
    print(format_rows(["needs", "where", "status"], rows), file=sys.stderr)
    if not ready:
        print("wca: error: nothing to run: every dataset above is missing", file=sys.stderr)
        return 1
    status = 0 if len(ready) == len(configs) else 1
    for config in ready:
        print(f"== {config.stem}: {len(models)} model(s)", file=sys.stderr)
        summary = sweep.run(planned[config], options_of[config], skip_existing=True, overwrite=True)
        status = max(status, 1 if summary.failed else 0)
    if any(args.output_dir.glob("*.json")):
        print_report([args.output_dir], args.csv, markdown=True, plot=args.plot, paper=True)
    else:
        print(f"wca: no result files in {args.output_dir}: no report", file=sys.stderr)
    return status


def dataset_of(config: Path, cells: list | Exception) -> str:
    """The dataset name of a config's cells (that fills ``{dataset}``), else its file name."""
    return config.stem if isinstance(cells, Exception) else str(cells[0].config.dataset)


def cell_options(options, config: Path, descriptions: str | None, dataset: str):
    """The run options of one config (:func:`config_options`), with ``--descriptions``
    filled with the ``dataset`` name when given."""
    options = config_options(options, config)
    if descriptions is None:
        return options
    path = Path(descriptions.replace("{dataset}", dataset)).expanduser().resolve()
    return options.model_copy(update={"descriptions": path})


def needs(planned: dict, options_of: dict, models: list[str]) -> tuple[list[list[str]], list]:
    """What the run needs, as table rows (``needs``, ``where``, ``status``), and the configs
    whose data and texts are there: each dataset's folder and texts (read as its cells would,
    nothing computed), each model's weights (on disk, or to be downloaded)."""
    from wca.pipeline import prepare_cell
    from wca.specs import weights_file
    from wca.sweep import one_line

    rows, ready = [], []
    for config, cells in planned.items():
        what = f"dataset {config.stem}"
        if isinstance(cells, Exception):
            rows.append([what, "-", f"missing: {one_line(cells)}"])
            continue
        where = str(cells[0].config.data_path)
        try:
            dataset, _, texts = prepare_cell(cells[0].config, options_of[config])
        except (OSError, ValueError, KeyError) as error:
            rows.append([what, where, f"missing: {one_line(error)}"])
            continue
        rows.append([what, where, f"ok: {len(dataset)} images; texts {texts}"])
        ready.append(config)
    for spec in models:
        try:
            found = weights_file(spec)
        except Exception as error:  # an architecture open_clip does not know, ...
            rows.append([f"weights {spec}", "-", f"unknown: {one_line(error)}"])
            continue
        if found is None:
            status = "not on disk: downloaded when first used (needs the network)"
        else:
            status = "ok" if Path(found).exists() else "missing: no such file or folder"
        rows.append([f"weights {spec}", found or "-", status])
    return rows, ready


def format_rows(header: list[str], rows: list[list[str]]) -> str:
    """Rows as aligned columns under ``header``, the last column unpadded."""
    lines = [header, *rows]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(row[i].ljust(width) for i, width in enumerate(widths)), row[-1]])
        for row in lines
    )
