"""`wca report`: result files as one table (calibration, paired differences to a baseline), a
CSV, one plot per dataset, beside the paper."""

from __future__ import annotations

import argparse
from pathlib import Path

from wca.cli.options import describe


def register(subparsers: argparse._SubParsersAction) -> None:
    from wca.report import DEFAULT_BASELINE, DEFAULT_GROUP_BY, GROUP_COLUMNS

    parser = subparsers.add_parser(
        "report",
        help="collect result files into one table, CSV and plot (with the paper's numbers)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=describe(
            "Read the result files of `wca eval`, `wca demo` and `wca reproduce` (files, or "
            "folders searched recursively) and print one row per set of settings: top-1 and "
            "top-5 as mean ± std over runs, the top-1 difference to --baseline with a 95% "
            "paired bootstrap interval over images, ECE, NLL and Brier, views per image and "
            "seconds. Files are pooled only when every setting that changes a number is "
            "equal; rows that share the columns shown are labelled by the settings in which "
            "they differ (zero [rrc], zero [random]). A file that is not a readable result is "
            "named and skipped. The CSV has clip_benchmark's build columns beside ours.",
            "wca report results/ --markdown\n"
            "  wca report results/ --csv table.csv --plot top1.png --paper\n"
            "  wca report results/ --group-by dataset,model,crop_strategy --baseline clip-d",
        ),
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="FILES_OR_DIRS")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write the rows as CSV")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="top-1 per method, one figure per dataset (PNG-<dataset>.png when several)",
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="add the published top-1 of the WCA paper and our difference to it",
    )
    parser.add_argument(
        "--group-by",
        default=",".join(DEFAULT_GROUP_BY),
        metavar="COLUMNS",
        help=f"the columns before the method (default {','.join(DEFAULT_GROUP_BY)}; any of "
        f"{', '.join(GROUP_COLUMNS)}); settings not shown label the rows",
    )
    parser.add_argument(
        "--baseline",
        metavar="METHOD",
        help=f"the method the differences are to (default {DEFAULT_BASELINE}), with settings "
        "of its own if given: wca[crop_budget=fixed,n_run=20] pairs each row with that wca row "
        "of otherwise equal settings (an adaptive budget against the paper's fixed N)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="a file that is not a readable result file is an error (default: named, skipped)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wca.cli.printing import print_report

    group_by = tuple(name.strip() for name in args.group_by.split(",") if name.strip())
    print_report(
        args.paths,
        args.csv,
        args.markdown,
        args.plot,
        args.paper,
        group_by=group_by,
        baseline=args.baseline,
        strict=args.strict,
    )
    return 0
