"""Benchmark 3: scoring all six methods, 20 runs, on synthetic features of ImageNet size.

50,000 images x (1 full view + a pool of 60 crops) x D=512 in fp16 (3.1 GB, in 1000-image
parts like cache shards), 1000 classes, 50 descriptions per class; heads from
``wca.methods.build_head`` over synthetic text embeddings; ``wca.evaluate.evaluate`` with the
authors' protocol (20 runs of 60 crops drawn from the pool). Reports the seconds and the peak
resident memory of the scoring alone (VmHWM reset after the features are made) and of the whole
process. Target on 2 cores: under 60 s and under 8 GB.

    .venv/bin/python benchmarks/scoring.py                  # ImageNet size
    .venv/bin/python benchmarks/scoring.py --quick          # smoke test size

Variants (both by default): ``library`` (the heads as ``wca.methods`` builds them; WCA's
``pool_logits`` scores all runs of a chunk from the pool at once) and ``per-run`` (the same WCA
head without ``pool_logits``: one gathered copy of the crops and one ``logits`` call per run);
the table checks that they agree on WCA's top-1 of every run.

Per head (a second table): the seconds one head takes to score 1000 images of one run (the full
view + 60 crops, 1000 classes, 50 descriptions), for every method in ``wca.methods`` including
the peers (zero, mta, awt) and WCA's ablations, timed on ``--per-head-images`` images and
scaled to 1000, with the load average beside each; and AWT's floor, the one product its scores
cannot skip: its [views x prompts] cosine product (61 x 51,000 x 512 per image, in the head's
sub-batches), with AWT's time over it. ``--per-head-only`` skips the protocol variants.

    .venv/bin/python benchmarks/scoring.py --per-head-only  # per-head table alone

Online heads (a third table, before the per-head one): tda, tda+wca, dmn, boostadapter and
onzeta each stream ``--online-images`` images (in calls of 256, as chunks) beside their
unavoidable work: the per-view logits of their base plus their memory's products at its
capacity, as plain batched products (TDA and BoostAdapter: the affinities to 5 cached keys per
class and the negative cache's values; DMN-ZS: the similarities to 51 stored features per
class; OnZeta: x . w and the proxies' update); lazsl beside AWT on the same images.

    .venv/bin/python benchmarks/scoring.py --online-only    # the online table alone
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from _common import (
    best_time,
    current_rss_gb,
    machine_report,
    peak_rss_gb,
    ratio,
    reset_peak_rss,
    table,
)
from _online import print_online
from _synthetic import SyntheticTextEncoder, synthetic_features, synthetic_sources
from wca.evaluate import evaluate
from wca.features import Features
from wca.methods import METHODS as ALL_METHODS
from wca.methods import Head, TextSources, awt, build_head

METHODS = ("clip", "clip-e", "clip-d", "waffle", "cupl", "wca")
VARIANTS = ("library", "per-run")


@dataclass(frozen=True)
class PerRunHead(Head):
    """A crop head seen without its ``pool_logits``: ``wca.evaluate`` then gathers every run's
    crops (``index_select``) and calls ``logits`` once per run, as before that method existed."""

    head: Head
    uses_crops = True

    def logits(self, image_emb: Tensor, crop_emb: Tensor | None = None, draw: int = 0) -> Tensor:
        return self.head.logits(image_emb, crop_emb, draw)


def run_variant(
    variant: str, features: Features, heads: dict[str, Head], args: argparse.Namespace
) -> dict[str, list[float]]:
    """Score every method with one variant of the WCA head; top-1 per run by method."""
    if variant == "per-run":
        heads = {**heads, "wca": PerRunHead(heads["wca"])}
    result = evaluate(features, heads, n_run=args.runs, patch_n=args.patch_n, seed=0)
    return {name: result.methods[name].top1 for name in METHODS}


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def on_device(head: Head, device: torch.device) -> Head:
    """A head (a dataclass of the library) with its tensors on ``device``; the library's
    heads score on the CPU, where the text side is built."""
    tensors = {
        f.name: getattr(head, f.name).to(device)
        for f in fields(head)
        if f.init and isinstance(getattr(head, f.name), Tensor)
    }
    return replace(head, **tensors)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously), so a timer sees it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_heads(
    features: Features,
    sources: TextSources,
    encoder,
    images: int,
    patch_n: int,
    device: torch.device = torch.device("cpu"),
) -> list[list]:
    """Seconds per 1000 images of one run (``patch_n`` crops, on ``images`` images) for every
    registered head on ``device``, the 1-minute load average after each, and AWT's floor (its
    cosine product) and its ratio to it."""
    chunk = next(features.chunks(images))[1]
    image_emb = chunk.image_emb.float().to(device)
    crop_emb = chunk.crop_emb[:, :patch_n].float().to(device)
    per_1000 = 1000 / max(len(image_emb), 1)
    rows = []
    for name in ALL_METHODS:
        head = on_device(build_head(name, encoder, sources), device)
        crops = crop_emb if head.uses_crops else None
        head.logits(image_emb[:2], None if crops is None else crops[:2])  # warm-up
        synchronize(device)
        start = time.perf_counter()
        logits = head.logits(image_emb, crops)
        synchronize(device)
        seconds = time.perf_counter() - start
        if not torch.isfinite(logits).all():
            raise RuntimeError(f"{name}: scores that are not finite")
        rows.append([name, f"{seconds * per_1000:.3g}", load()])
        print(f"{name}: {seconds:.2f} s for {len(image_emb)} images (load {load()})", flush=True)
        if name == "awt":
            floor = awt_floor(head, image_emb, crop_emb)
            rows.append(["awt floor: [views x prompts] product", f"{floor * per_1000:.3g}", load()])
            print(f"awt: {ratio(seconds, floor):.2f}x its floor ({floor:.2f} s)", flush=True)
    return rows


def awt_floor(head, image_emb: Tensor, crop_emb: Tensor) -> float:
    """Seconds of AWT's own cosine product of every view with every prompt on these images,
    in the head's sub-batches and into one reused buffer (best of 2)."""
    views = torch.cat([image_emb[:, None], crop_emb], dim=1)
    prompts = head.prompt_emb[head.mask]  # [C x P, D]: every real prompt
    step = max(1, awt.BLOCK // (len(prompts) * views.shape[1]))
    out = views.new_empty(min(step, len(views)) * views.shape[1], len(prompts))

    def product() -> None:
        for lo in range(0, len(views), step):
            batch = views[lo : lo + step].flatten(0, 1)
            torch.mm(batch, prompts.T, out=out[: len(batch)])
        synchronize(views.device)

    product()  # warm-up
    return best_time(product, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--descriptions", type=int, default=50, help="per class (default 50)")
    parser.add_argument("--pool", type=int, default=60, help="crops per image in the pool")
    parser.add_argument("--patch-n", type=int, default=60, help="crops drawn per run")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--variant", choices=VARIANTS, nargs="+", default=list(VARIANTS))
    parser.add_argument("--per-head-images", type=int, default=100, help="images timed per head")
    parser.add_argument("--per-head-only", action="store_true", help="only the per-head table")
    parser.add_argument("--online-images", type=int, default=1000, help="streamed per head")
    parser.add_argument("--online-only", action="store_true", help="only the online table")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.classes, args.descriptions, args.runs = 300, 20, 5, 2
        args.per_head_images, args.online_images = 8, 48
    if args.per_head_only:
        args.images = args.per_head_images
    print(machine_report("cpu"))
    if args.online_only:
        print_online(args)
        return 0

    start = time.perf_counter()
    features = synthetic_features(args.images, args.pool, args.dim, args.classes, 1000)
    made = time.perf_counter() - start
    start = time.perf_counter()
    sources = synthetic_sources(args.classes, args.descriptions)
    encoder = SyntheticTextEncoder(args.dim)
    heads = {name: build_head(name, encoder, sources) for name in METHODS}
    built = time.perf_counter() - start
    print(
        f"features made in {made:.1f} s ({current_rss_gb():.2f} GB resident), "
        f"heads built in {built:.1f} s",
        flush=True,
    )

    rows = []
    wca_runs = {}
    for variant in [] if args.per_head_only else args.variant:
        before = current_rss_gb()
        resettable = reset_peak_rss()
        start = time.perf_counter()
        top1 = run_variant(variant, features, heads, args)
        seconds = time.perf_counter() - start
        peak = peak_rss_gb()
        wca_runs[variant] = top1["wca"]
        agree = max(abs(a - b) for a, b in zip(top1["wca"], wca_runs[args.variant[0]], strict=True))
        rows.append(
            [
                variant,
                seconds,
                f"{peak:.2f}",
                f"{peak - before:.2f}" if resettable else "n/a",
                f"{agree:.3g}",
            ]
        )
        print(f"{variant}: {seconds:.1f} s", flush=True)

    print_online(args)
    per_head = time_heads(features, sources, encoder, args.per_head_images, args.patch_n)
    print(
        f"\nper head: one run of {args.patch_n} crops + the full view, {args.classes} classes, "
        f"{args.descriptions} descriptions, timed on {args.per_head_images} images\n"
    )
    print(table(["method", "s per 1000 images", "load (1 min)"], per_head))
    if args.per_head_only:
        return 0
    print(
        f"\n{args.images} images, {args.classes} classes, {args.descriptions} descriptions per "
        f"class, pool {args.pool}, {args.runs} runs of {args.patch_n} crops, D={args.dim}; "
        "features fp16, scored by wca.evaluate in fp32 chunks\n"
    )
    print(
        table(
            [
                "variant",
                "scoring s",
                "peak RSS GB (process)",
                "scoring peak above start GB",
                f"wca top-1 max diff vs {args.variant[0]} (points)",
            ],
            rows,
        )
    )
    print(
        "\nBoth variants run wca.evaluate.evaluate; per-run hides WCAHead.pool_logits, so each "
        "run gathers its crops and scores them separately."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
