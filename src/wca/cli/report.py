"""`wca report`: result files as one table (calibration, paired differences to a baseline), a
CSV, one plot per dataset, beside the paper."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wca.cli import UsageError
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
        default=DEFAULT_BASELINE,
        metavar="METHOD",
        help=f"the method the differences are to (default {DEFAULT_BASELINE})",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="a file that is not a readable result file is an error (default: named, skipped)",
    )
    parser.set_defaults(handler=run)


def print_report(
    paths: list[Path],
    csv: Path | None = None,
    markdown: bool = False,
    plot: Path | None = None,
    paper: bool = False,
    *,
    group_by: tuple[str, ...] | None = None,
    baseline: str | None = None,
    strict: bool = False,
) -> int:
    """The report of ``paths`` on stdout, and the CSV and plot files asked for; each skipped
    file named on stderr. Returns the number of files skipped."""
    from wca import report

    group_by = report.DEFAULT_GROUP_BY if group_by is None else group_by
    skipped: list[str] = []

    def skip(line: str) -> None:
        skipped.append(line)
        print(f"wca: skipped {line}", file=sys.stderr)

    rows = report.load_rows(paths, group_by, baseline or report.DEFAULT_BASELINE, on_skip=skip)
    if strict and skipped:
        raise UsageError(f"--strict: {len(skipped)} file(s) skipped (see above)")
    if paper:
        records, missing = report.with_paper(rows)
    else:
        records, missing = [row.record() for row in rows], []
    print(report.table(records, markdown=markdown, group_by=group_by))
    print("\n" + "\n".join(report.notes(rows)))
    if missing:
        by_model: dict[str, list[str]] = {}
        for dataset, model, method in missing:
            by_model.setdefault(f"{model} {method}", []).append(dataset)
        listed = "; ".join(f"{key}: {', '.join(names)}" for key, names in by_model.items())
        print(f"\npaper cells with no result ({len(missing)}): {listed}")
    if csv is not None:
        print(f"wrote {report.write_csv(records, csv)}", file=sys.stderr)
    if plot is not None:
        from wca.report.plot import plot as draw

        for path in draw(rows, plot):
            print(f"wrote {path}", file=sys.stderr)
    if skipped:
        print(f"wca: skipped {len(skipped)} file(s) that are not readable results", file=sys.stderr)
    return len(skipped)


def run(args: argparse.Namespace) -> int:
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
