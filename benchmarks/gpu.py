"""Benchmark 11: one GPU, ViT-B/32 and ViT-B/16 (random weights), fp16 and bf16.

For each model and precision:

- floor: the image encoder alone (``encode_images``) on ready pixels on the device, in calls
  of ``--batch`` views, views/s;
- pipeline: extraction from JPEG files: the bytes read on the host, decoded on the device
  (``torchvision.io.decode_jpeg(device="cuda")``, nvjpeg, ``--decode-batch`` files per call),
  the views (the full view + N crops of ``wca.crops.CropSpec``) cut and resized on the device
  by ``wca.preprocessing.uint8_views``, normalised there by
  ``wca.preprocessing.normalize_pixels`` and encoded
  in calls of ``--batch`` views; views/s and its ratio to the floor (target >= 0.8).

Then every head of ``wca.methods`` scoring one run on the device at ImageNet size (1000
classes, 50 descriptions per class, the full view + 60 crops, D = 512, on ``--head-images``
synthetic images), seconds per 1000 images, with AWT's own cosine product beside it
(``scoring.time_heads``).

Without CUDA it says it was skipped and exits 0. ``--quick`` runs the same code on a tiny model
with a handful of images, on the CPU when there is no GPU (the smoke test of
tests/test_benchmarks.py).

    .venv/bin/python benchmarks/gpu.py           # on a GPU machine, under 8 minutes
    .venv/bin/python benchmarks/gpu.py --quick   # smoke test, any machine
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import open_clip
import torch
from torch import Tensor

from _common import IMAGE_SIZE, machine_report, make_jpegs, ratio, table
from _synthetic import SyntheticTextEncoder, synthetic_features, synthetic_sources
from extract import TINY_ARCH, TINY_CONFIG, Config, build_encoder
from scoring import synchronize, time_heads
from wca.crops import CropSpec
from wca.preprocessing import normalize_pixels, uint8_views

ARCHS = ("ViT-B-32", "ViT-B-16")
PRECISIONS = ("fp16", "bf16")


def decode_on_device(paths: list[Path], device: torch.device) -> list[Tensor]:
    """RGB ``uint8 [3, H, W]`` images decoded on ``device`` (nvjpeg on a GPU), in one call."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec for decoding
        warnings.simplefilter("ignore", DeprecationWarning)
        data = [read_file(str(path)) for path in paths]
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def extract_on_device(encoder, paths: list[Path], spec: CropSpec, decode_batch: int) -> Tensor:
    """Embeddings ``[images x (N + 1), D]`` of every view of the JPEGs, made on the encoder's
    device from the decoded pixels to the encoder's batches of ``encoder.batch_size`` views."""
    prep, batch = encoder.preprocessing, encoder.batch_size
    embeddings, pending = [], []

    def encode(final: bool = False) -> None:
        views = torch.cat(pending)
        cut = len(views) if final else len(views) // batch * batch
        if cut:
            pixels = normalize_pixels(views[:cut], prep, encoder.dtype)
            embeddings.append(encoder.encode_images(pixels))
        pending[:] = [views[cut:]]

    for lo in range(0, len(paths), decode_batch):
        images = decode_on_device(paths[lo : lo + decode_batch], encoder.device)
        for index, image in enumerate(images, start=lo):
            boxes, flips = spec.views(image.shape[-2], image.shape[-1], index)
            pending.append(uint8_views(image, boxes, prep, flips))
            if sum(len(views) for views in pending) >= batch:
                encode()
    encode(final=True)
    return torch.cat(embeddings)


def encoder_floor(encoder, views: int, repeats: int) -> float:
    """Views/s of the encoder alone: the pipeline's calls on ready pixels on the device."""
    size, batch = encoder.preprocessing.image_size, encoder.batch_size
    ready = torch.randn(batch, 3, size, size, device=encoder.device).to(encoder.dtype)
    calls = [batch] * (views // batch) + ([views % batch] if views % batch else [])
    for count in sorted(set(calls)):
        encoder.encode_images(ready[:count])  # warm-up: every shape once
    best = 0.0
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        for count in calls:
            encoder.encode_images(ready[:count])
        synchronize(encoder.device)
        best = max(best, ratio(views, time.perf_counter() - start))
    return best


def pipeline_rate(encoder, paths: list[Path], spec: CropSpec, args) -> float:
    """Views/s of :func:`extract_on_device` (best of ``args.repeats``, after a warm-up)."""
    views = len(paths) * (spec.n_crops + 1)
    extract_on_device(encoder, paths[: args.decode_batch], spec, args.decode_batch)
    best = 0.0
    for _ in range(max(args.repeats, 1)):
        start = time.perf_counter()
        embeddings = extract_on_device(encoder, paths, spec, args.decode_batch)
        synchronize(encoder.device)
        best = max(best, ratio(views, time.perf_counter() - start))
        if embeddings.shape != (views, encoder.embed_dim) or not embeddings.isfinite().all():
            raise RuntimeError(f"pipeline gave {tuple(embeddings.shape)}, not {views} views")
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="JPEGs extracted (512)")
    parser.add_argument("--crops", type=int, default=60, help="crops per image, N (60)")
    parser.add_argument("--batch", type=int, default=512, help="views per encoder call (512)")
    parser.add_argument("--decode-batch", type=int, default=64, help="JPEGs per decode call")
    parser.add_argument("--repeats", type=int, default=2, help="passes, best kept (2)")
    parser.add_argument("--head-images", type=int, default=1000, help="images scored per head")
    parser.add_argument("--quick", action="store_true", help="tiny model, a few images, any device")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(machine_report(str(device)))
    if device.type != "cuda" and not args.quick:
        print("GPU script skipped: CUDA is not available here (--quick runs it on the CPU).")
        return 0
    archs, classes, descriptions = ARCHS, 1000, 50
    if args.quick:
        args.images, args.crops, args.batch, args.decode_batch = 3, 2, 4, 2
        args.repeats, args.head_images, classes, descriptions = 1, 4, 20, 5
        archs = (TINY_ARCH,)
    spec = CropSpec(n_crops=args.crops)
    began = time.perf_counter()

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        if args.quick:
            config_file = Path(folder) / f"{TINY_ARCH}.json"
            config_file.write_text(json.dumps(TINY_CONFIG))
            open_clip.add_model_config(config_file)
        paths = make_jpegs(Path(folder) / "jpegs", args.images)
        for arch in archs:
            for precision in PRECISIONS:
                encoder = build_encoder(arch, Config(precision, args.batch), device)
                floor = encoder_floor(encoder, args.images * (spec.n_crops + 1), args.repeats)
                pipeline = pipeline_rate(encoder, paths, spec, args)
                rows.append([arch, precision, floor, pipeline, f"{ratio(pipeline, floor):.3g}"])
                print(
                    f"{arch} {precision}: floor {floor:.0f} views/s, pipeline {pipeline:.0f} "
                    f"views/s ({time.perf_counter() - began:.0f} s so far)",
                    flush=True,
                )
                del encoder
    print(
        f"\n{args.images} JPEGs of {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} pixels, N={spec.n_crops} "
        f"(+1 full view), {args.batch} views per encoder call, random weights, device "
        f"{device}; best of {args.repeats}\n"
    )
    print(
        table(["model", "precision", "floor views/s", "pipeline views/s", "pipeline / floor"], rows)
    )

    features = synthetic_features(args.head_images, 60, 512, classes, 1000)
    sources = synthetic_sources(classes, descriptions)
    heads = time_heads(features, sources, SyntheticTextEncoder(512), args.head_images, 60, device)
    print(
        f"\nper head on {device}: one run of 60 crops + the full view, {classes} classes, "
        f"{descriptions} descriptions, D=512, timed on {args.head_images} images\n"
    )
    print(table(["method", "s per 1000 images", "load (1 min)"], heads))
    print(f"\ntotal {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
