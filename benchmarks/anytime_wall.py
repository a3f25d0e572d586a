"""Anytime views, wall time: feature extraction at the default adaptive budget against fixed
N, side by side in one run, on the demo's test images (shipped demo model, WCA the stopping
head).

Each repeat times both passes, in alternating order (fixed first on even repeats), through
``wca.features.extract_features`` with no cache (every view encoded): the fixed pass reads N
crops of every image, the adaptive one the default ``wca.budget.BudgetSpec`` (margin rule)
with at most N. Printed: the median seconds of each, their ratio (issue 29's target (c):
adaptive <= 0.25x fixed N=60), the encoder passes per image, and WCA's top-1 of each pass
(the adaptive images scored on their own prefixes), with the load average before and after.

    .venv/bin/python benchmarks/anytime_wall.py                 # 480 images, N = 60
    .venv/bin/python benchmarks/anytime_wall.py --quick         # smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from _common import machine_report, table
from wca.budget import BudgetSpec
from wca.crops import CropSpec
from wca.defaults import demo_model
from wca.demo.run import TEST_SEED, demo_sources
from wca.demo.world import DemoTestSet
from wca.encoders import load_encoder
from wca.features import extract_features
from wca.features.judge import StoppingHead
from wca.methods import build_head
from wca.options import RunOptions


class CountedViews:
    """The encoder's image calls, counted (views)."""

    def __init__(self, encoder) -> None:
        self.views = 0
        original = encoder.encode_images

        def counted(pixels):
            self.views += len(pixels)
            return original(pixels)

        encoder.encode_images = counted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20, help="test images per class")
    parser.add_argument("--test-seed", type=int, default=TEST_SEED, help="the demo's test set")
    parser.add_argument("--max-crops", type=int, default=60, help="N of the fixed pass")
    parser.add_argument("--repeats", type=int, default=2, help="timed pairs of passes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, help="views per encoder call (default: wca's)")
    parser.add_argument("--num-workers", type=int, default=0, help="loader processes")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.max_crops, args.repeats = 1, 8, 1
    print(machine_report(args.device), flush=True)

    dataset = DemoTestSet(args.per_class, args.test_seed)
    encoder = load_encoder(f"open_clip:{demo_model()}", device=args.device)
    counter = CountedViews(encoder)
    wca = build_head("wca", encoder, demo_sources(dataset.classnames))
    n = args.max_crops
    spec = CropSpec(n_crops=n, alpha=0.5)
    budget = BudgetSpec(crop_budget="adaptive")
    stopping = StoppingHead(wca, budget.stopping(n), float(encoder.logit_scale))
    speed = {"batch_size": args.batch_size} if args.batch_size else {}
    options = RunOptions(cache_dir=None, progress=False, num_workers=args.num_workers, **speed)
    passes = {"fixed": None, "adaptive": stopping}
    seconds: dict[str, list[float]] = {name: [] for name in passes}
    views: dict[str, int] = {}
    features = {}
    for repeat in range(args.repeats):
        order = list(passes) if repeat % 2 == 0 else list(passes)[::-1]
        for name in order:
            counter.views = 0
            started = time.perf_counter()
            features[name] = extract_features(
                encoder, dataset, spec, options, stopping=passes[name]
            )
            seconds[name].append(time.perf_counter() - started)
            views[name] = counter.views
    load = os.getloadavg()

    labels = features["fixed"].labels
    rows = []
    for name, found in features.items():
        crops = found.crop_emb.float()
        scores = wca.logits(found.image_emb.float(), crops, counts=found.counts)
        top1 = 100 * (scores.argmax(-1) == labels).double().mean().item()
        median = statistics.median(seconds[name])
        rows.append([
            name, f"{views[name] / len(dataset):.2f}", f"{median:.2f}",
            " ".join(f"{s:.2f}" for s in seconds[name]),
            f"{median / statistics.median(seconds['fixed']):.3f}", f"{top1:.2f}",
        ])  # fmt: skip
    print(
        f"\n# Extraction wall time: fixed N={n} against the default adaptive budget "
        f"({budget.stop_rule} z {budget.margin_z}, min_crops {budget.min_crops}, "
        f"crops_per_round {budget.crops_per_round}), {len(dataset)} images, test seed "
        f"{args.test_seed}, device {args.device}, {torch.get_num_threads()} threads\n"
    )
    print(table(["pass", "views/img", "median s", "each s", "x fixed", "WCA top-1"], rows))
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
