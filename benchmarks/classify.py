"""Benchmark 7: ``WCAClassifier.predict`` against feature extraction, the API's defaults.

A ViT-B/32-architecture open_clip model with random weights (speed does not depend on them),
wrapped in the project's ``OpenClipEncoder``, with the API's defaults (:mod:`wca.defaults`:
encoder batch, precision, loader workers; ``load_encoder``'s and ``RunOptions``' defaults, the
CLI's too). Three ways through the same JPEGs, N crops + the full view each:
``extract_features`` (``RunOptions()`` but no cache), ``predict`` on the whole list (views of
several images packed into encoder batches), and ``predict`` called once per image. Targets
predict on a list >= 0.9 x and one call per image >= 0.8 x extraction images/s.

    .venv/bin/python benchmarks/classify.py                     # 16 images, N=60, defaults
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

from _common import JpegDataset, machine_report, make_jpegs, ratio, table
from extract import TINY_ARCH, TINY_CONFIG, Config, build_encoder
from wca import defaults
from wca.classifier import WCAClassifier
from wca.crops import CropSpec
from wca.features import extract_features
from wca.options import RunOptions

# way -> the fraction of extraction's images/s it should reach
TARGETS = {
    "extract_features": 1.0,
    "predict (list, packed batches)": 0.9,
    "predict (one call per image)": 0.8,
}


def measure(
    encoder, paths: list[Path], n_crops: int, batch_size: int | None, repeats: int
) -> dict[str, float]:
    """Images/s of each way, best of ``repeats`` alternating passes (after a warm-up pass)."""
    dataset = JpegDataset(paths)
    classnames = [f"class {i}" for i in range(10)]
    crops = CropSpec(n_crops=n_crops, alpha=defaults.ALPHA)
    batch_size = batch_size or encoder.batch_size
    options = RunOptions(cache_dir=None, batch_size=batch_size, progress=False)
    classifier = WCAClassifier(encoder, classnames, None, crops=crops)
    ways = {
        "extract_features": lambda: extract_features(encoder, dataset, crops, options),
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
            best[name] = max(best[name], ratio(len(paths), time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="JPEGs (default 16)")
    parser.add_argument(
        "--crops",
        type=int,
        default=defaults.N_CROPS,
        help=f"crops per image, N ({defaults.N_CROPS})",
    )
    parser.add_argument(
        "--batch",
        type=int,
        help=f"views per encoder call (default: the API's, {defaults.BATCH_SIZE})",
    )
    parser.add_argument(
        "--precision", default=defaults.PRECISION, help=f"fp32 or bf16 ({defaults.PRECISION})"
    )
    parser.add_argument("--repeats", type=int, default=2, help="passes, best kept (default 2)")
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    args = parser.parse_args(argv)
    print(machine_report("cpu"))
    with tempfile.TemporaryDirectory() as folder:
        if args.quick:
            args.images, args.crops, args.repeats = 3, 3, 1
            config_file = Path(folder) / f"{TINY_ARCH}.json"
            config_file.write_text(json.dumps(TINY_CONFIG))
            open_clip.add_model_config(config_file)
            args.arch = TINY_ARCH
        batch = args.batch or defaults.BATCH_SIZE  # load_encoder's default batch size
        encoder = build_encoder(args.arch, Config(args.precision, batch, 0), torch.device("cpu"))
        paths = make_jpegs(Path(folder) / "images", args.images)
        speeds = measure(encoder, paths, args.crops, args.batch, args.repeats)
    reference = speeds["extract_features"]
    views = args.crops + 1
    rows = [
        [name, value, value * views, ratio(value, reference), f">= {TARGETS[name]}"]
        for name, value in speeds.items()
    ]
    print(
        f"\n{args.arch} (random weights), {args.images} JPEGs of 400x450, N={args.crops} "
        f"(+1 full view), batch {batch} views, {args.precision}, "
        f"{defaults.NUM_WORKERS} loader workers, CPU; best of {args.repeats} passes\n"
    )
    print(table(["way", "images/s", "views/s", "x extraction", "target"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
