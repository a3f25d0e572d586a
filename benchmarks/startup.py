"""How fast a wrong setting is answered: each of five settings errors of `wca eval` against
``python -c "import torch"``, the two run in turn (A B A B ...) as whole processes, the ratio
taken pair by pair so that a drift of the machine's speed during the run moves both.

Every settings error (a value out of range, an unknown dataset, method or setting) is checked
by validating the settings, which imports no model library (:mod:`wca.deferred`); the target is
each error under half of torch's import.

    .venv/bin/python benchmarks/startup.py              # 7 pairs per error
    .venv/bin/python benchmarks/startup.py --quick      # one error, one pair: smoke test
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

from _common import machine_report, ratio, table

ERRORS = (
    ("--alpha", "2"),
    ("--n-run", "-3"),
    ("--dataset", "nosuch"),
    ("--methods", "nosuch"),
    ("--set", "nosuch=3"),
)
YARDSTICK = [sys.executable, "-c", "import torch"]


def wall(command: list[str], expect: int) -> float:
    """Seconds from the start of ``command`` to its exit; its exit code must be ``expect``."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()}")
    return seconds


def eval_command(error: tuple[str, str], data_root: str) -> list[str]:
    dataset = [] if error[0] == "--dataset" else ["--dataset", "cub"]
    return [sys.executable, "-m", "wca", "eval", *error, *dataset, "--data-root", data_root]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=7, help="A/B pairs per error")
    parser.add_argument("--quick", action="store_true", help="one error, one pair, no warm-up")
    args = parser.parse_args(argv)
    pairs = 1 if args.quick else args.pairs
    print(machine_report())
    rows = []
    with tempfile.TemporaryDirectory() as data_root:
        for error in ERRORS[:1] if args.quick else ERRORS:
            command = eval_command(error, data_root)
            if not args.quick:
                wall(command, 2)  # warm-up: the files in the page cache, as in a second run
            errors, torches = [], []
            for _ in range(pairs):
                errors.append(wall(command, 2))
                torches.append(wall(YARDSTICK, 0))
            ratios = [ratio(a, b) for a, b in zip(errors, torches, strict=True)]
            rows.append(
                [
                    f"`wca eval {' '.join(error)}`",
                    statistics.median(errors),
                    statistics.median(torches),
                    statistics.median(ratios),
                    max(ratios),
                ]
            )
    print(f"\n{pairs} pairs each, whole processes (python -m wca), median seconds:\n")
    headers = ["argument error", "error s", "import torch s", "ratio (median)", "ratio (max)"]
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
