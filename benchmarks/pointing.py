"""The pointing game on the demo world: do the where-maps point at the part a description names?

Renders the demo's test images (the demo renderer knows where each creature's body, top and side
part are), classifies them with the shipped demo model (WCA's defaults: 60 crops, alpha 0.5),
and explains each image's true class: for each part kind, the share of images whose map of the
description naming that part ("a <class>, which has a purple square body.") peaks inside the
part's disc (radius + 2 px), and the share whose crop-weight map peaks on the creature (any
part's disc). Four ways to make the maps:

- a uniformly random peak: the expected share, the disc's share of the image;
- before 0.3: at each pixel the crop-weighted mean of cos(crop, desc) over WCA's crops covering
  it; the weight map the sum of w over them (``wca.explain`` up to 0.2);
- the contrast (``wca.explain.contrast``) over WCA's own crops (``windows=None``);
- the contrast over the explanation crops (the default of ``wca explain``).

    .venv/bin/python benchmarks/pointing.py                   # 96 images, a few minutes
    .venv/bin/python benchmarks/pointing.py --seed 7 --per-class 2
    .venv/bin/python benchmarks/pointing.py --quick           # smoke test (2 images)
"""

from __future__ import annotations

import argparse
import time

import torch

import wca
from _common import machine_report, table
from wca.defaults import demo_model
from wca.demo.run import TEST_SEED, demo_sources
from wca.demo.world import PART_KINDS, DemoTestSet
from wca.explain.contrast import cover_masks
from wca.explain.where import WINDOWS, where_maps
from wca.explain.windows import Windows

SLACK = 2.0  # px beyond a part's radius that still counts as on the part
QUICK_WINDOWS = Windows(sides=(0.25,), overlap=2)  # 49 windows of a 128-px image


def cell_centres(size: tuple[int, int], grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """x ``[w]`` and y ``[h]`` of the centres of a ``grid = (w, h)`` of cells over an image of
    ``size = (width, height)``, in pixels (pixel c spans [c, c + 1))."""
    (width, height), (columns, rows) = size, grid
    x = (torch.arange(columns, dtype=torch.float64) + 0.5) * (width / columns)
    y = (torch.arange(rows, dtype=torch.float64) + 0.5) * (height / rows)
    return x, y


def on_parts(discs: torch.Tensor, size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """bool ``[P, h, w]``: which cells lie within radius + SLACK of each part ``discs [P, 3]``."""
    x, y = cell_centres(size, grid)
    cx, cy, radius = discs.double().T
    distance = (
        (x[None, None] - cx[:, None, None]) ** 2 + (y[None, :, None] - cy[:, None, None]) ** 2
    ).sqrt()
    return distance <= (radius + SLACK)[:, None, None]


def peak(heat: torch.Tensor) -> tuple[int, int]:
    """The ``(row, column)`` of a map's largest value (NaN: no value)."""
    flat = torch.nan_to_num(heat.double(), nan=-torch.inf).flatten()
    return divmod(int(flat.argmax()), heat.shape[-1])


def before_maps(prediction, values: torch.Tensor, size, grid) -> torch.Tensor:
    """The maps of ``wca.explain`` up to 0.2, ``[1 + K, h, w]``: the weight map (sum of w over
    the crops covering a cell) and per column of ``values [N, K]`` the w-weighted mean over them."""
    masks = cover_masks(prediction.boxes, size, grid).double().flatten(1)  # [N, h*w]
    w = prediction.crop_weights.double()
    weight = w @ masks
    means = ((w[:, None] * values.double()).T @ masks) / weight
    return torch.cat([weight[None], means]).view(-1, grid[1], grid[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=TEST_SEED, help="test-set seed (the demo's)")
    parser.add_argument("--per-class", type=int, default=4, help="test images per class (4)")
    parser.add_argument(
        "--quick", action="store_true", help="2 images, coarse windows, no cache: smoke test"
    )
    args = parser.parse_args(argv)
    windows = QUICK_WINDOWS if args.quick else WINDOWS
    print(machine_report())
    start = time.time()
    dataset = DemoTestSet(1 if args.quick else args.per_class, args.seed)
    count = 2 if args.quick else len(dataset)
    encoder = wca.load_encoder(f"open_clip:{demo_model()}", device="cpu")
    classifier = wca.WCAClassifier(
        encoder, dataset.classnames, demo_sources(dataset.classnames).sentences
    )
    images = [dataset[i][0] for i in range(count)]
    predictions = classifier.predict(images, top_k=3, progress=False)
    kinds = [*PART_KINDS, "creature"]
    ways = {
        "uniformly random peak (expected)": None,
        "before 0.3: covering crops' weighted mean, WCA's crops": "before",
        "contrast t, WCA's 60 crops": "wca",
        "contrast t, explanation crops": "windows",
    }
    hits = {way: torch.zeros(len(kinds), dtype=torch.float64) for way in ways}
    localized = []
    for i, (image, prediction) in enumerate(zip(images, predictions, strict=True)):
        label = int(dataset.labels[i])
        texts = classifier.descriptions[label]
        if not all(w in t for w, t in zip(("body", "on top", "on the side"), texts, strict=True)):
            raise ValueError(f"{texts}: not the body, top and side descriptions, in order")
        size = image.size
        grid = size  # one cell per pixel (the images are 128 px)
        parts = on_parts(dataset.parts[i], size, grid)
        targets = [*parts, parts.any(0)]  # body, top, side, creature
        hits["uniformly random peak (expected)"] += torch.tensor(
            [float(t.double().mean()) for t in targets]
        )
        desc = classifier.head.desc_emb[label, :3].float()
        old = before_maps(prediction, prediction.crop_emb @ desc.T, size, grid)
        peaks = {"before": [peak(old[1 + k]) for k in range(3)] + [peak(old[0])]}
        for way, crops in (("wca", None), ("windows", windows)):
            found = where_maps(
                image, prediction, classifier, class_index=label, descriptions=[0, 1, 2],
                windows=crops, cache=not args.quick, grid=grid,
            )  # fmt: skip
            peaks[way] = [found.maps.peak(1 + k) for k in range(3)] + [found.maps.peak(0)]
            if crops is not None:
                localized += found.maps.localized.tolist()
        for way, cells in peaks.items():
            name = next(n for n, w in ways.items() if w == way)
            hits[name] += torch.tensor(
                [float(t[r, c]) for t, (r, c) in zip(targets, cells, strict=True)]
            )
    print(
        f"\n# Pointing game on the demo world: test seed {args.seed}, {count} images "
        f"({len(dataset.classnames)} classes), {len(predictions[0].boxes)} WCA crops, "
        f"explanation crops: {windows.describe()}\n"
    )
    rows = [[way, *(f"{100 * h / count:.1f}" for h in hits[way])] for way in ways]
    print(table(["maps (% of images whose map peaks on the part)", *kinds], rows))
    share = 100 * sum(localized) / max(len(localized), 1)
    print(f"\nexplanation-crop maps with localized evidence: {share:.1f} % of {len(localized)}")
    print(f"time: {time.time() - start:.0f} s ({(time.time() - start) / count:.1f} s per image)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
