"""Every method on the same views of the demo world's test set (the 480 images of `wca demo`):
WCA and its ablations, BiFTA, ZERO, MTA, AWT, LaZSL, and the online methods (TDA, DMN-ZS,
BoostAdapter, OnZeta, DOTA, COSMIC with its CLIP graph alone, ECALP, BCA, OGA, and each on
WCA's scores, ours: tda+wca, dota+wca, ...), on the paper's ``random`` crops and on ``rrc``
views.

One feature pass per strategy (the full view + a pool of ``--pool`` views per image, shipped
demo model); every method then scores ``--runs`` runs of N views drawn from the pool (the
authors' protocol); each run of an online method streams the images in its own seeded order
from an empty memory. Everything goes through ``wca.evaluate.evaluate`` and ``result_file``,
and the tables are `wca report`'s (``wca.report``): the calibration (ECE, NLL, Brier) and the
paired 95% intervals of the difference to CLIP and to WCA, and the expected tail accuracy (the
mean top-1 of the worst 10 % of runs) come from the same code as the report. All heads have
their published defaults and the model's logit_scale; nothing is tuned on this test set.
CLIP-E and WaffleCLIP are left out: the demo world has no template set or word list; COSMIC
runs without its DINOv2 graph (no such weights here), BiFTA on the strategy's crops (its own
``bifta`` crop strategy is not one of the two compared here).

    .venv/bin/python benchmarks/peers.py               # the README's tables (~40 min, 2 cores)
    .venv/bin/python benchmarks/peers.py --out peers/  # also the result files (wca report)
    .venv/bin/python benchmarks/peers.py --quick       # smoke test
    .venv/bin/python benchmarks/peers.py --tables-from peers/  # the tables again, no scoring
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from _common import machine_report, table
from wca import report
from wca.crops import CropSpec
from wca.defaults import demo_model
from wca.demo.run import TEST_SEED, demo_sources
from wca.demo.world import DemoTestSet
from wca.encoders import load_encoder
from wca.evaluate import evaluate, result_file
from wca.features import extract_features
from wca.inputs import file_sha256, sources_sha256
from wca.methods import build_head
from wca.options import RunOptions
from wca.report.rows import Row
from wca.results import TAIL_PERCENT, ResultFile, tail_text
from wca.sweep import path_safe

PER_IMAGE = (
    "clip", "clip-d", "cupl", "wca", "wca-uniform-crops", "wca-uniform-text", "wca-full-view",
    "wca-paper", "bifta", "zero", "mta", "awt", "lazsl",
)  # fmt: skip
ONLINE = (
    "tda", "dmn", "boostadapter", "onzeta", "dota", "cosmic", "ecalp", "bca", "oga",
    "tda+wca", "dota+wca", "cosmic+wca", "ecalp+wca", "bca+wca", "oga+wca",
)  # fmt: skip
METHODS = PER_IMAGE + ONLINE


def settings(model: Path, sources, spec: CropSpec, n: int, runs: int, per_class: int) -> dict:
    """The result file's settings of one cell (as `wca demo` records them)."""
    return {
        "dataset": "wca-demo",
        "split": f"test (seed {TEST_SEED}, {per_class} per class)",
        "model": f"open_clip:{model}",
        "model_file": str(model),
        "model_sha256": file_sha256(str(model)),
        "methods": [{name: {"name": name, "enabled": True}} for name in METHODS],
        "crop_strategy": spec.crop_strategy,
        "n_samples": spec.n_crops,
        "patch_n": n,
        "alpha": spec.alpha,
        "effective_alpha": spec.alpha,
        "beta": spec.beta,
        "protocol": "pool",
        "n_run": runs,
        "seed": 0,
        "precision": "fp32",
        "views": "fast",
        "half": False,
        "descriptions": "the demo world's class sentences and descriptors",
        "descriptions_sha256": sources_sha256(sources),
    }


def summary(rows: Sequence[Row], cells: Sequence[str], cell_text: Callable[[dict], str]) -> str:
    """A markdown table of one number per method (rows) and cell (columns): ``cell_text`` of
    the row's record."""
    text = {(row.method, Path(row.files[0]).stem): cell_text(row.record()) for row in rows}
    body = [[m, *(text.get((m, cell), "-") for cell in cells)] for m in METHODS]
    return table(["method", *cells], body)


def delta_text(record: dict) -> str:
    """A row's paired difference to its baseline: ``+1.20 [+0.40, +2.10] *``."""
    if record["delta_top1"] is None:
        return "(baseline)" if record["delta_note"] == "the baseline" else "n/a"
    mark = " *" if record["delta_excludes_zero"] else ""
    low, high = record["delta_low"], record["delta_high"]
    return f"{record['delta_top1']:+.2f} [{low:+.2f}, {high:+.2f}]{mark}"


def score(args: argparse.Namespace) -> list[tuple[Path, ResultFile]]:
    """Every method on every cell (strategy x N): the result files, written under ``--out``."""
    start = time.time()
    dataset = DemoTestSet(args.per_class, TEST_SEED)
    model = demo_model()
    encoder = load_encoder(f"open_clip:{model}", device="cpu")
    sources = demo_sources(dataset.classnames)
    heads = {name: build_head(name, encoder, sources) for name in METHODS}  # its logit_scale
    files = []
    for strategy in args.strategies.split(","):
        spec = CropSpec(n_crops=args.pool, alpha=args.alpha, crop_strategy=strategy)
        features = extract_features(
            encoder, dataset, spec, RunOptions(cache_dir=None, progress=False)
        )
        for n in (int(n) for n in args.crops.split(",")):
            evaluation = evaluate(
                features, heads, args.runs, n, seed=0, logit_scale=float(encoder.logit_scale)
            )
            result = result_file(
                evaluation,
                settings(model, sources, spec, n, args.runs, args.per_class),
                dataset="wca-demo",
                model="wca-demo-rn",
                pretrained=str(model),
            )
            path = Path(f"{path_safe(strategy)}-N{n}.json")
            if args.out:
                path = result.write(args.out / path)
            files.append((path, result))
            print(f"{strategy} N={n}: scored ({time.time() - start:.0f} s)", flush=True)
    return files


def print_tables(files: list[tuple[Path, ResultFile]]) -> None:
    """Top-1, its tail and the difference to WCA per method and cell, then each cell as `wca
    report` prints it (the difference to CLIP, calibration)."""
    rows = report.rows_of(files)  # one row per method and cell: their settings differ
    report.compare_to_baseline(rows, "clip")
    to_wca = report.rows_of(files)
    report.compare_to_baseline(to_wca, "wca")
    names = [path.stem for path, _ in files]
    first = files[0][1]
    runs, images = first.results.n_run, first.results.n_images
    print(
        f"\n# Top-1 (%) on the demo world ({images} images, "
        f"{len(first.results.methods['clip'].per_class_top1)} classes), mean ± std over {runs} "
        f"runs of N views from a pool of {first.config.n_samples} (online methods: {runs} "
        "stream orders)\n"
    )
    print(summary(rows, names, lambda r: f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f}"))
    print(f"\n# Expected tail top-1 (%): the mean of the worst {TAIL_PERCENT} % of runs\n")
    print(summary(rows, names, lambda r: tail_text(r["top1_tail"], r["runs"])))
    print("\n# Δ top-1 vs wca [95% paired interval], * excludes 0\n")
    print(summary(to_wca, names, delta_text))
    for name in names:
        print(f"\n## {name}\n")
        cell = [row.record() for row in rows if Path(row.files[0]).stem == name]
        print(report.table(cell, markdown=True, group_by=()))
    print("\n" + "\n".join(report.notes(rows)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20, help="test images per class (20)")
    parser.add_argument("--crops", default="16,60", help="values of N")
    parser.add_argument("--strategies", default="random,rrc")
    parser.add_argument("--pool", type=int, default=60, help="views per image in the pool")
    parser.add_argument("--runs", type=int, default=10, help="runs (online: stream orders)")
    parser.add_argument("--alpha", type=float, default=0.5, help="random crops' smallest side")
    parser.add_argument("--out", type=Path, help="also write the result files here")
    parser.add_argument(
        "--tables-from",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="score nothing: the tables of the result files earlier --out runs wrote (cells "
        "scored by separate runs, e.g. --strategies random and --strategies rrc at once)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.crops, args.pool, args.runs = 1, "4", 6, 2
    print(machine_report(), flush=True)
    start = time.time()
    if args.tables_from:
        files, skipped = report.read_results(args.tables_from)
        if skipped or not files:
            print("\n".join(skipped) or f"no result files in {args.tables_from}")
            return 1
    else:
        files = score(args)
    print_tables(files)
    if args.out:
        print(f"\nresult files in {args.out}: `wca report {args.out}` prints these rows")
    print(f"\n{time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
