"""Accuracy of the fast tensor path against the authors' per-crop PIL path, on the demo world.

Same images, same crop boxes, same model; only how views are made differs. Prints the demo's
table for both paths and the mean absolute pixel difference of their views (in [0, 1] units).

    .venv/bin/python benchmarks/paths.py            # the demo's full test set (a few minutes)
    .venv/bin/python benchmarks/paths.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from wca.crops import CropSpec, crop_boxes
from wca.defaults import demo_model
from wca.demo.run import TEST_SEED, build_heads, demo_sources
from wca.demo.world import DemoTestSet
from wca.encoders import load_encoder
from wca.evaluate import evaluate
from wca.features import extract_features
from wca.options import RunOptions
from wca.preprocessing import fast_views, fidelity_views

NO_CACHE = RunOptions(cache_dir=None, progress=False)  # features in memory, no bars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20, help="test images per class")
    parser.add_argument("--crops", type=int, default=60, help="pool of crops per image")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.crops, args.runs = 1, 4, 2
    start = time.time()
    dataset = DemoTestSet(args.per_class, TEST_SEED)  # the 480 images of `wca demo`
    encoder = load_encoder(f"open_clip:{demo_model()}", device="cpu")
    heads = build_heads(encoder.encode_texts, demo_sources(dataset.classnames))

    std = torch.tensor(encoder.preprocessing.std).view(1, 3, 1, 1)
    differences = []
    for index in range(0, len(dataset), max(1, len(dataset) // 24)):
        image, _ = dataset[index]
        boxes = crop_boxes(image.height, image.width, args.crops, 0.5, image_index=index)
        fast = fast_views(image, boxes, encoder.preprocessing)
        exact = fidelity_views(image, boxes, encoder.preprocess)
        differences.append(((fast - exact) * std).abs().mean().item())

    print(
        f"# Fast vs fidelity views on the demo world ({len(dataset)} images, N={args.crops}, "
        f"{args.runs} runs, torch {torch.__version__})\n"
    )
    print(
        f"mean absolute pixel difference of the views: {sum(differences) / len(differences):.2e}"
        f" (max over {len(differences)} images {max(differences):.2e})\n"
    )
    print("| method | fast path | fidelity path |")
    print("|---|---|---|")
    results = {}
    for fidelity in (False, True):
        features = extract_features(
            encoder, dataset, CropSpec(n_crops=args.crops, alpha=0.5), NO_CACHE, fidelity=fidelity
        )
        results[fidelity] = evaluate(features, heads, args.runs, args.crops, 0).methods
    for name in heads:
        cells = [
            "{:.2f} ± {:.2f}".format(*results[fidelity][name].top1_mean_std)
            for fidelity in (False, True)
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\n{time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
