"""Every method on the same views of the demo world's test set (the 480 images of `wca demo`):
WCA and its ablations, ZERO, MTA, AWT, LaZSL, and the online methods (TDA, DMN-ZS,
BoostAdapter, OnZeta, and tda+wca, ours), on the paper's ``random`` crops and on ``rrc`` views.

One feature pass per strategy (the full view + a pool of ``--pool`` views per image, shipped
demo model); every method then scores ``--runs`` runs of N views drawn from the pool (the
authors' protocol); each run of an online method streams the images in its own seeded order
from an empty memory. Everything goes through ``wca.evaluate.evaluate`` and ``result_file``,
and the tables are `wca report`'s (``wca.report``): the calibration (ECE, NLL, Brier) and the
paired 95% intervals of the difference to CLIP come from the same code as the report. All heads
have their published defaults and the model's logit_scale; nothing is tuned on this test set.
CLIP-E and WaffleCLIP are left out: the demo world has no template set or word list.

    .venv/bin/python benchmarks/peers.py               # the README's tables (a few minutes)
    .venv/bin/python benchmarks/peers.py --out peers/  # also the result files (wca report)
    .venv/bin/python benchmarks/peers.py --quick       # smoke test
"""

from __future__ import annotations

import argparse
import time
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
from wca.sweep import path_safe

PER_IMAGE = (
    "clip", "clip-d", "cupl", "wca", "wca-uniform-crops", "wca-uniform-text", "wca-full-view",
    "wca-paper", "zero", "mta", "awt", "lazsl",
)  # fmt: skip
ONLINE = ("tda", "dmn", "boostadapter", "onzeta", "tda+wca")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20, help="test images per class (20)")
    parser.add_argument("--crops", default="16,60", help="values of N")
    parser.add_argument("--strategies", default="random,rrc")
    parser.add_argument("--pool", type=int, default=60, help="views per image in the pool")
    parser.add_argument("--runs", type=int, default=10, help="runs (online: stream orders)")
    parser.add_argument("--alpha", type=float, default=0.5, help="random crops' smallest side")
    parser.add_argument("--out", type=Path, help="also write the result files here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.crops, args.pool, args.runs = 1, "4", 6, 2
    counts = [int(n) for n in args.crops.split(",")]
    print(machine_report(), flush=True)

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
        for n in counts:
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

    rows = report.rows_of(files)  # one row per method and cell: their settings differ
    report.compare_to_baseline(rows, "clip")
    cells = [(path.stem, [row for row in rows if row.files == [str(path)]]) for path, _ in files]
    print(
        f"\n# Top-1 (%) on the demo world ({len(dataset)} images, {len(dataset.classnames)} "
        f"classes), mean ± std over {args.runs} runs of N views from a pool of {args.pool} "
        f"(online methods: {args.runs} stream orders); logit_scale {encoder.logit_scale:.1f}\n"
    )
    top1 = {name: [] for name in METHODS}
    for _, cell in cells:
        for row in cell:
            record = row.record()
            top1[row.method].append(f"{record['top1_mean']:.2f} ± {record['top1_std']:.2f}")
    print(table(["method", *(name for name, _ in cells)], [[m, *top1[m]] for m in METHODS]))
    for name, cell in cells:
        print(f"\n## {name}\n")
        print(report.table([row.record() for row in cell], markdown=True, group_by=()))
    print("\n" + "\n".join(report.notes(rows)))
    if args.out:
        print(f"\nresult files in {args.out}: `wca report {args.out}` prints these rows")
    print(f"\n{time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
