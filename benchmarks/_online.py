"""The online heads' table of benchmarks/scoring.py: each head streamed beside its unavoidable
work (the per-view logits of its base and its memory's products at capacity)."""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor

from _common import current_rss_gb, peak_rss_gb, ratio, reset_peak_rss, table
from _synthetic import SyntheticTextEncoder, synthetic_features, synthetic_sources
from wca.methods import build_head

ONLINE_METHODS = ("tda", "tda+wca", "dmn", "boostadapter", "onzeta")
ONLINE_CALL = 256  # images per stream call, as evaluate's chunks


def reads_views(head) -> bool:
    """Whether the head's stream scores every view with its base (else one view per image)."""
    from wca.methods.boostadapter import BoostAdapterHead
    from wca.methods.dmn import DMNHead
    from wca.methods.tda import TDAHead

    if isinstance(head, BoostAdapterHead | DMNHead):
        return True
    return isinstance(head, TDAHead) and head.views == "confident"


def memory_products(head, classes: int, dim: int):
    """A function of a block of queries ``[b, D]`` doing the products of the head's memory at
    its capacity, with random stores of the right shapes."""
    from wca.methods.dmn import DMNHead
    from wca.methods.onzeta import OnZetaHead
    from wca.methods.tda import TDAHead

    generator = torch.Generator().manual_seed(2)
    if isinstance(head, TDAHead):
        shots = head.pos_shots + head.neg_shots
        keys = torch.randn(classes * shots, dim, generator=generator)
        values = torch.rand(classes * head.neg_shots, classes, generator=generator)

        def cache(query: Tensor) -> None:
            affinity = torch.exp(query @ keys.T)
            affinity[:, classes * head.pos_shots :] @ values

        return cache
    if isinstance(head, DMNHead):
        memory = torch.randn(classes * (head.memory_size + 1), dim, generator=generator)
        return lambda query: query @ memory.T
    if isinstance(head, OnZetaHead):
        proxies = torch.randn(dim, classes, generator=generator)
        return lambda query: (query @ proxies, query.T @ (query @ proxies))
    raise TypeError(f"no memory products for {type(head).__name__}")


def unavoidable_seconds(head, image_emb: Tensor, crop_emb: Tensor, classes: int) -> float:
    """The base's per-view logits and the memory's products for these images, in blocks."""
    several, products = reads_views(head), memory_products(head, classes, image_emb.shape[1])
    start = time.perf_counter()
    for lo in range(0, len(image_emb), ONLINE_CALL):
        images, crops = image_emb[lo : lo + ONLINE_CALL], crop_emb[lo : lo + ONLINE_CALL]
        step = max(1, 2**23 // (classes * (1 + crops.shape[1])))
        for sub in range(0, len(images), step):
            crop_block = crops[sub : sub + step] if head.uses_crops else None
            head.base.views(images[sub : sub + step], crop_block, several)
        products(images.float())
    return time.perf_counter() - start


def stream_seconds(head, image_emb: Tensor, crop_emb: Tensor) -> tuple[float, float]:
    """Seconds to stream the images through a fresh stream, and the peak memory above the
    start (GB; nan where the peak cannot be reset)."""
    before, resettable = current_rss_gb(), reset_peak_rss()
    stream = head.stream(len(image_emb))
    start = time.perf_counter()
    for lo in range(0, len(image_emb), ONLINE_CALL):
        crops = crop_emb[lo : lo + ONLINE_CALL] if head.uses_crops else None
        logits = stream.logits(image_emb[lo : lo + ONLINE_CALL], crops)
        if not torch.isfinite(logits).all():
            raise RuntimeError(f"{type(head).__name__}: scores that are not finite")
    seconds = time.perf_counter() - start
    return seconds, (peak_rss_gb() - before) if resettable else float("nan")


def time_online(args: argparse.Namespace) -> list[list]:
    """Per online head: s per 1000 images streamed, its unavoidable work, the ratio, the peak
    memory; then lazsl beside awt."""
    features = synthetic_features(args.online_images, args.patch_n, args.dim, args.classes, 1000)
    image_emb = features.image_emb.float()
    crop_emb = features.crop_emb.float()
    sources = synthetic_sources(args.classes, args.descriptions)
    encoder = SyntheticTextEncoder(args.dim)
    per_1000 = 1000 / len(image_emb)
    rows = []
    for name in ONLINE_METHODS:
        head = build_head(name, encoder, sources)
        stream_seconds(head, image_emb[:2], crop_emb[:2])  # warm-up
        seconds, peak = stream_seconds(head, image_emb, crop_emb)
        floor = unavoidable_seconds(head, image_emb, crop_emb, args.classes)
        rows.append(
            [name, seconds * per_1000, floor * per_1000, ratio(seconds, floor), f"{peak:.2f}"]
        )
        print(f"{name}: {seconds:.2f} s streamed, {floor:.2f} s unavoidable", flush=True)
    count = min(len(image_emb), args.per_head_images)
    timed = {}
    for name in ("lazsl", "awt"):
        head = build_head(name, encoder, sources)
        head.logits(image_emb[:2], crop_emb[:2])
        start = time.perf_counter()
        head.logits(image_emb[:count], crop_emb[:count])
        timed[name] = (time.perf_counter() - start) * 1000 / count
    rows.append(
        [
            "lazsl (beside awt)",
            timed["lazsl"],
            timed["awt"],
            ratio(timed["lazsl"], timed["awt"]),
            "n/a",
        ]
    )
    return rows


def print_online(args: argparse.Namespace) -> None:
    rows = time_online(args)
    print(
        f"\nonline heads: {args.online_images} images streamed in calls of {ONLINE_CALL}, "
        f"full view + {args.patch_n} crops, {args.classes} classes, D={args.dim}; lazsl and "
        f"awt on {min(args.online_images, args.per_head_images)} images\n"
    )
    print(
        table(
            [
                "method",
                "s per 1000 images",
                "unavoidable s per 1000 images",
                "x unavoidable",
                "peak above start GB",
            ],
            rows,
        )
    )
    print(
        "\nunavoidable: the per-view logits of the base and the memory's products at its "
        "capacity; for lazsl, AWT's time on the same images."
    )
