"""Accuracy against the number of crops N, per crop-set strategy, on the demo world.

WCA's cost grows linearly with N (N + 1 encoder passes per image). For every strategy of
``wca.crops.CROP_STRATEGIES`` and every N, this extracts exactly N crops per image with the
shipped demo model and scores WCA (authors' scales) on all of them; random strategies are
repeated with ``--repeats`` crop seeds (mean +- std), the deterministic grid once.

    .venv/bin/python benchmarks/views.py                 # full curve (several minutes on 2 cores)
    .venv/bin/python benchmarks/views.py --quick         # smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from wca.crops import CROP_STRATEGIES, CropSpec
from wca.defaults import demo_model
from wca.demo.run import TEST_SEED, build_heads, demo_sources
from wca.demo.world import DemoTestSet
from wca.encoders import load_encoder
from wca.evaluate import evaluate
from wca.features import extract_features
from wca.options import RunOptions

NO_CACHE = RunOptions(cache_dir=None, progress=False)  # features in memory, no bars

DETERMINISTIC = {"grid"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20, help="test images per class")
    parser.add_argument("--crops", default="1,2,4,8,16,32,60", help="values of N")
    parser.add_argument("--strategies", default=",".join(CROP_STRATEGIES))
    parser.add_argument("--repeats", type=int, default=3, help="crop seeds of random strategies")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.crops, args.repeats = 1, "1,4", 1
    counts = [int(n) for n in args.crops.split(",")]
    strategies = args.strategies.split(",")

    start = time.time()
    dataset = DemoTestSet(args.per_class, TEST_SEED)  # the 480 images of `wca demo`
    encoder = load_encoder(f"open_clip:{demo_model()}", device="cpu")
    heads = build_heads(encoder.encode_texts, demo_sources(dataset.classnames))
    baseline = (
        evaluate(
            extract_features(encoder, dataset, CropSpec(n_crops=1, alpha=args.alpha), NO_CACHE),
            {"clip-d": heads["clip-d"]},
            1,
            1,
            0,
        )
        .methods["clip-d"]
        .top1[0]
    )

    print(
        f"# WCA accuracy against N on the demo world ({len(dataset)} images, "
        f"{len(dataset.classnames)} classes, alpha {args.alpha}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)\n"
    )
    print(f"CLIP-D (full view only): {baseline:.2f}\n")
    print("| strategy | " + " | ".join(f"N={n}" for n in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for strategy in strategies:
        cells = []
        for n in counts:
            seeds = range(1 if strategy in DETERMINISTIC else args.repeats)
            accuracies = []
            for seed in seeds:
                spec = CropSpec(n_crops=n, alpha=args.alpha, seed=seed, crop_strategy=strategy)
                features = extract_features(encoder, dataset, spec, NO_CACHE)
                result = evaluate(features, {"wca": heads["wca"]}, 1, n, 0, protocol="fresh")
                accuracies.append(result.methods["wca"].top1[0])
            spread = statistics.pstdev(accuracies) if len(accuracies) > 1 else 0.0
            cells.append(f"{statistics.mean(accuracies):.2f} ± {spread:.2f}")
        print(f"| {strategy} | " + " | ".join(cells) + " |")
    print(f"\n{time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
