"""Benchmark 7: ``WCAClassifier.predict`` against feature extraction on the same images and views.

A ViT-B/32-architecture open_clip model with random weights (speed does not depend on them),
wrapped in the project's ``OpenClipEncoder``. Three ways through the same JPEGs, N crops + the
full view each, the same encoder batch size: ``extract_features`` (one prefetching thread,
no cache), ``predict`` on the whole list (views of several images packed into encoder batches),
and ``predict`` called once per image (what a list cost before: one image per encoder call).
Target: predict images/s >= 0.8 x extraction images/s.

    .venv/bin/python benchmarks/classify.py                     # 16 images, N=60, fp32
    .venv/bin/python benchmarks/classify.py --precision bf16 --batch 128
    .venv/bin/python benchmarks/classify.py --quick             # smoke test (tiny model)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import open_clip
import torch

from _common import JpegDataset, machine_report, make_jpegs, table
from extract import TINY_ARCH, TINY_CONFIG, Config, build_encoder
from wca.classifier import WCAClassifier
from wca.features import extract_features

ALPHA = 0.5


def measure(encoder, paths: list[Path], n_crops: int, repeats: int) -> dict[str, float]:
    """Images/s of each way, best of ``repeats`` alternating passes (after a warm-up pass)."""
    dataset = JpegDataset(paths)
    classnames = [f"class {i}" for i in range(10)]
    classifier = WCAClassifier(encoder, classnames, None, n_crops=n_crops, alpha=ALPHA)
    ways = {
        "extract_features": lambda: extract_features(
            encoder, dataset, n_crops, ALPHA, batch_size=encoder.batch_size, progress=False
        ),
        "predict (list, packed batches)": lambda: classifier.predict(paths, progress=False),
        "predict (one call per image)": lambda: [classifier.predict(p) for p in paths],
    }
    best = dict.fromkeys(ways, 0.0)
    for way in ways.values():  # warm-up: every batch shape once
        way()
    for _ in range(max(repeats, 1)):
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            best[name] = max(best[name], len(paths) / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="JPEGs (default 16)")
    parser.add_argument("--crops", type=int, default=60, help="crops per image, N (default 60)")
    parser.add_argument("--batch", type=int, default=64, help="views per encoder call (64)")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16 (default fp32)")
    parser.add_argument("--repeats", type=int, default=2, help="passes, best kept (default 2)")
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    args = parser.parse_args(argv)
    print(machine_report("cpu"))
    with tempfile.TemporaryDirectory() as folder:
        if args.quick:
            args.images, args.crops, args.batch, args.repeats = 3, 3, 6, 1
            config_file = Path(folder) / f"{TINY_ARCH}.json"
            config_file.write_text(json.dumps(TINY_CONFIG))
            open_clip.add_model_config(config_file)
            args.arch = TINY_ARCH
        config = Config(args.precision, args.batch, 0)
        encoder = build_encoder(args.arch, config, torch.device("cpu"))
        paths = make_jpegs(Path(folder) / "images", args.images)
        speeds = measure(encoder, paths, args.crops, args.repeats)
    reference = speeds["extract_features"]
    views = args.crops + 1
    rows = [[name, value, value * views, value / reference] for name, value in speeds.items()]
    print(
        f"\n{args.arch} (random weights), {args.images} JPEGs of 400x450, N={args.crops} "
        f"(+1 full view), batch {args.batch} views, {args.precision}, CPU; best of "
        f"{args.repeats} passes\n"
    )
    print(table(["way", "images/s", "views/s", "x extraction"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
