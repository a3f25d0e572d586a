"""Benchmark 1: preprocessing throughput (views/s), model excluded.

The fast tensor path (``wca.preprocessing.fast_views``) against the authors'-style per-crop PIL
path (``wca.preprocessing.fidelity_views`` with open_clip's ``image_transform(224,
is_train=False)``), on the
same JPEGs decoded from disk, the same boxes and the same number of DataLoader workers. Rows:
the fast path before commit b13b9ce (``benchmarks/crops_baseline.py``), the fast path's float
views, its ``uint8`` views (what ``extract_features``' loader hands over) and those normalised in
the main process (the whole CPU preprocessing). Each worker count gets one untimed warm-up pass;
a per-stage profile (one thread) says where the time goes.

    .venv/bin/python benchmarks/preprocess.py                 # 16 images, N=60, workers 0 and 2
    .venv/bin/python benchmarks/preprocess.py --device cuda   # GPU mode (skipped without CUDA)
    .venv/bin/python benchmarks/preprocess.py --quick         # smoke test size
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
from torch import Tensor

import crops_baseline  # benchmarks/ is on sys.path when a script here is run
from _common import (
    IMAGE_SIZE,
    JpegDataset,
    best_time,
    cuda_or_skip,
    machine_report,
    make_jpegs,
    ratio,
    table,
)
from wca import crops, preprocessing
from wca.images import load_image

ALPHA = 0.5


class ViewDataset(torch.utils.data.Dataset):
    """Image ``i`` decoded from disk -> its views, made by ``make_views(image, boxes)``."""

    def __init__(self, images: JpegDataset, n_crops: int, make_views: Callable) -> None:
        self.images = images
        self.n_crops = n_crops
        self.make_views = make_views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        image, _ = self.images[index]
        boxes = crops.crop_boxes(image.height, image.width, self.n_crops, ALPHA, image_index=index)
        return self.make_views(image, boxes)


def decode_only(image, boxes) -> Tensor:
    """The GPU path's loader work: decode to a ``uint8`` tensor (views are made on the GPU)."""
    return preprocessing.image_to_tensor(image)


def views_per_second(
    dataset: ViewDataset, workers: int, repeats: int, on_batch: Callable | None = None
) -> float:
    """Steady-state views/s over the whole dataset (best of ``repeats`` timed passes)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers else None,
    )
    best = float("inf")
    warm_up = 1 if workers else 0  # an untimed first pass starts the workers
    for attempt in range(repeats + warm_up):
        start = time.perf_counter()
        count = 0
        for index, item in enumerate(loader):
            views = item if on_batch is None else on_batch(item, index)
            count += len(views)
        if on_batch is not None and torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if attempt >= warm_up:
            best = min(best, elapsed)
    return ratio(count, best)


def _gpu_views(prep: preprocessing.Preprocessing, n_crops: int, device: str):
    def make(pixels: Tensor, index: int) -> Tensor:
        pixels = pixels.to(device, non_blocking=True)
        height, width = pixels.shape[1:]
        boxes = crops.crop_boxes(height, width, n_crops, ALPHA, image_index=index)
        views = preprocessing.uint8_views(pixels, boxes, prep)
        return preprocessing.normalize_pixels(views, prep, torch.float16)

    return make


def stage_profile(
    path: Path, n_crops: int, prep: preprocessing.Preprocessing, authors, repeats: int
):
    """Milliseconds per view of each stage on one image, one thread: where the time goes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    image = load_image(path)
    boxes = crops.crop_boxes(image.height, image.width, n_crops, ALPHA)
    views = n_crops + 1
    chw, hwc = crops_baseline.image_to_tensor(image), preprocessing.image_to_tensor(image)
    u8 = preprocessing.uint8_views(image, boxes, prep)

    def resize_all(pixels: Tensor) -> None:
        for left, top, right, bottom in boxes.tolist():
            preprocessing.resize_and_crop(pixels[:, top:bottom, left:right], prep)

    stages = {
        "decode JPEG (per image / views)": lambda: load_image(path),
        "authors: PIL crop + open_clip transform, all views": lambda: preprocessing.fidelity_views(
            image, boxes, authors),
        "before b13b9ce: uint8 resize of the crops, CHW copy": lambda: resize_all(chw),
        "now: uint8 resize of the crops, channels-last": lambda: resize_all(hwc),
        "before b13b9ce: normalise, 4 temporaries": lambda: crops_baseline.normalize_pixels(
            u8, prep),
        "now: normalize_pixels, 1 allocation, in place": lambda: preprocessing.normalize_pixels(
            u8, prep),
        "now: normalize_pixels straight to bf16": lambda: preprocessing.normalize_pixels(
            u8, prep, torch.bfloat16),
        "before b13b9ce: all views, float": lambda: crops_baseline.fast_views(image, boxes, prep),
        "now: all views, float (fast_views)": lambda: preprocessing.fast_views(image, boxes, prep),
        "now: all views, uint8 (uint8_views)": lambda: preprocessing.uint8_views(
            image, boxes, prep),
    }
    rows = []
    for name, stage in stages.items():
        stage()
        rows.append([name, best_time(stage, repeats) / views * 1000])
    torch.set_num_threads(threads)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="JPEGs to decode (default 16)")
    parser.add_argument("--crops", type=int, default=60, help="crops per image, N (default 60)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=2, help="timed passes, best kept")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU mode")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the per-stage profile (one thread, ms per view)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.crops, args.workers, args.repeats = 2, 3, [0, 1], 1
    print(machine_report(args.device))
    if not cuda_or_skip(args.device):
        return 0

    prep = preprocessing.Preprocessing()
    authors = open_clip.image_transform(prep.image_size, is_train=False)
    paths_by_name: dict[str, Callable] = {
        "fidelity (PIL per crop, authors')": functools.partial(
            preprocessing.fidelity_views, preprocess=authors
        ),
        "fast before b13b9ce, float": functools.partial(crops_baseline.fast_views, prep=prep),
        "fast, float (fast_views)": functools.partial(preprocessing.fast_views, prep=prep),
        "fast, uint8 (uint8_views)*": functools.partial(preprocessing.uint8_views, prep=prep),
    }
    with tempfile.TemporaryDirectory() as folder:
        images = JpegDataset(make_jpegs(Path(folder), args.images))
        _check_same_views(images, args.crops, prep, authors)
        profile = [] if args.no_profile else stage_profile(
            images.paths[0], args.crops, prep, authors, args.repeats + 1)
        rows = []
        for workers in args.workers:
            baseline = None
            for name, make_views in paths_by_name.items():
                rate = views_per_second(ViewDataset(images, args.crops, make_views), workers,
                                        args.repeats)
                baseline = baseline or rate
                rows.append([name, workers, rate, rate / (args.crops + 1), ratio(rate, baseline)])
            dataset = ViewDataset(images, args.crops, paths_by_name["fast, uint8 (uint8_views)*"])
            rate = views_per_second(dataset, workers, args.repeats,
                                    lambda views, _: preprocessing.normalize_pixels(views, prep))
            rows.append(["fast, uint8, normalised in the main process", workers, rate,
                         rate / (args.crops + 1), ratio(rate, baseline)])
            if args.device.startswith("cuda"):
                dataset = ViewDataset(images, args.crops, decode_only)
                rate = views_per_second(dataset, workers, args.repeats,
                                        _gpu_views(prep, args.crops, args.device))
                rows.append(["GPU: decode in loader, views on GPU (fp16)", workers, rate,
                             rate / (args.crops + 1), ratio(rate, baseline)])
    print(f"\n{args.images} JPEGs of {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} decoded from disk, "
          f"N={args.crops} crops (+1 full view) per image, views {prep.image_size}px, "
          f"best of {args.repeats} passes\n")
    print(table(["path", "workers", "views/s", "images/s", "x fidelity"], rows))
    if not args.no_profile:
        print(f"\nWhere the time goes: one image, N={args.crops}, one thread, best of "
              f"{args.repeats + 1}\n")
        print(table(["stage", "ms per view"], profile))
    print("\n* uint8: views before normalisation, as extract_features' loader hands them over; "
          "it normalises whole batches (next row: that work done in the main process too).")
    return 0


def _check_same_views(images: JpegDataset, n: int, prep, authors) -> None:
    """Print how far the paths' views are apart on the first image (they must agree)."""
    image, _ = images[0]
    boxes = crops.crop_boxes(image.height, image.width, n, ALPHA)
    fast = preprocessing.fast_views(image, boxes, prep)
    fidelity = preprocessing.fidelity_views(image, boxes, authors)
    before = crops_baseline.fast_views(image, boxes, prep)
    print(
        f"view agreement: fast vs fidelity max |diff| {float((fast - fidelity).abs().max()):.3g} "
        f"(normalised units); fast before b13b9ce vs now max |diff| "
        f"{float((before - fast).abs().max()):.3g}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
