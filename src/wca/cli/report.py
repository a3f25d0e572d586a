"""`wca report`: result files of `wca eval` as one table, a CSV, a plot, beside the paper."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wca.cli.options import describe


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="collect result files into one table, CSV and plot (with the paper's numbers)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=describe(
            "Read the result JSON files of `wca eval` (files, or folders searched "
            "recursively) and print one row per dataset, model and method: top-1 and top-5 "
            "as mean ± std over runs, views per image and seconds. The CSV has "
            "clip_benchmark's build columns (acc1, acc5, mean_per_class_recall, dataset, "
            "model, pretrained, task, model_fullname) beside ours.",
            "wca report results/ --markdown\n"
            "  wca report results/ --csv table.csv --plot top1.png --paper",
        ),
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="FILES_OR_DIRS")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write the rows as CSV")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="grouped bar chart of top-1")
    parser.add_argument(
        "--paper",
        action="store_true",
        help="add the published top-1 of the WCA paper and our difference to it",
    )
    parser.set_defaults(handler=run)


def print_report(
    paths: list[Path],
    csv: Path | None = None,
    markdown: bool = False,
    plot: Path | None = None,
    paper: bool = False,
) -> None:
    """The report of ``paths`` on stdout, and the CSV and plot files asked for."""
    from wca import report

    rows = report.load_rows(paths)
    if paper:
        records, missing = report.with_paper(rows)
    else:
        records, missing = [row.record() for row in rows], []
    print(report.table(records, markdown=markdown))
    if missing:
        by_model: dict[str, list[str]] = {}
        for dataset, model, method in missing:
            by_model.setdefault(f"{model} {method}", []).append(dataset)
        listed = "; ".join(f"{key}: {', '.join(names)}" for key, names in by_model.items())
        print(f"\npaper cells with no result ({len(missing)}): {listed}")
    if csv is not None:
        print(f"wrote {report.write_csv(records, csv)}", file=sys.stderr)
    if plot is not None:
        print(f"wrote {report.plot(rows, plot)}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    print_report(args.paths, args.csv, args.markdown, args.plot, args.paper)
    return 0
