"""The report as the commands print it (`wca report`, and `wca reproduce` at its end)."""

from __future__ import annotations

import sys
from pathlib import Path

from wca.cli import UsageError
from wca.extras import require


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
    file named on stderr. A ``baseline`` given (None: the default's, which may be missing)
    must be a method of the results. Returns the number of files skipped."""
    from wca import report

    if plot is not None:  # before any file is read
        require("matplotlib", "--plot")
    group_by = report.DEFAULT_GROUP_BY if group_by is None else group_by
    skipped: list[str] = []

    def skip(line: str) -> None:
        skipped.append(line)
        print(f"wca: skipped {line}", file=sys.stderr)

    rows = report.load_rows(paths, group_by, baseline or report.DEFAULT_BASELINE, on_skip=skip)
    if strict and skipped:
        raise UsageError(f"--strict: {len(skipped)} file(s) skipped (see above)")
    methods = list(dict.fromkeys(row.method for row in rows))
    if baseline is not None and not any(row.delta_note == "the baseline" for row in rows):
        asked = report.Baseline.parse(baseline)  # asked for by name: it must be there
        if asked.method not in methods:
            raise UsageError(f"--baseline {baseline}: no result has this method (they have "
                             f"{', '.join(methods)})")  # fmt: skip
        raise UsageError(f"--baseline {baseline}: no {asked.method} row has these settings")
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
