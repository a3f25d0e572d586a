"""`wca reproduce`: the paper's table in one command: every shipped config x every model,
all methods with the authors' protocol, resumable, ending with the report beside the paper."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wca.cli.options import describe, run_options
from wca.cli.settings import add_settings
from wca.options import RunOptions
from wca.reproduce import PAPER_MODELS


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
        "--descriptions",
        metavar="TEMPLATE",
        help="texts of each dataset instead: a folder laid out like one dataset of "
        "--descriptions-dir or a {class: [sentence, ...]} JSON, {dataset} standing for the "
        "dataset's name (without it: one dataset only)",
    )
    names = ("device", "precision", "batch_size", "num_workers", "cache_dir", "progress")
    names += ("descriptions_dir",)
    add_settings(parser, RunOptions, names=names)
    parser.add_argument("--csv", type=Path, metavar="FILE", help="the report as CSV")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="the report as a bar chart")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wca import reproduce
    from wca.cli.printing import print_report

    options = run_options(args)
    datasets = None if args.datasets is None else [n.strip() for n in args.datasets.split(",")]
    plan = reproduce.plan(
        args.data_root,
        options,
        models=args.models,
        datasets=[name for name in datasets or [] if name] or None,
        configs=args.configs,
        output_dir=args.output_dir,
        descriptions=args.descriptions,
    )
    needs = plan.needs()
    rows = [[need.what, need.where, need.status] for need in needs]
    print(format_rows(["needs", "where", "status"], rows), file=sys.stderr)
    if not plan.ready:
        print("wca: error: nothing to run: every dataset above is missing", file=sys.stderr)
        return 1
    summaries = plan.run(
        on_config=lambda config: print(
            f"== {config.stem}: {len(plan.models)} model(s)", file=sys.stderr
        )
    )
    status = 0 if len(plan.ready) == len(plan.cells) else 1
    if any(summary.failed for summary in summaries.values()):
        status = 1
    if any(args.output_dir.glob("*.json")):
        print_report([args.output_dir], args.csv, markdown=True, plot=args.plot, paper=True)
    else:
        print(f"wca: no result files in {args.output_dir}: no report", file=sys.stderr)
    return status


def format_rows(header: list[str], rows: list[list[str]]) -> str:
    """Rows as aligned columns under ``header``, the last column unpadded."""
    lines = [header, *rows]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(row[i].ljust(width) for i, width in enumerate(widths)), row[-1]])
        for row in lines
    )
