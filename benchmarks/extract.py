"""Benchmark 2: end-to-end feature extraction against the encoder-only floor.

A ViT-B/32-architecture open_clip model with random weights (speed does not depend on them),
wrapped in the project's ``OpenClipEncoder``, runs ``wca.features.extract_features`` at N=60 on
JPEGs decoded from disk. The floor is the same sequence of encoder calls (same batch sizes) on
ready tensors. Target on the CPU: pipeline images/s >= 0.9 x floor images/s.

    .venv/bin/python benchmarks/extract.py                  # 4 images, the CPU option table
    .venv/bin/python benchmarks/extract.py --compile        # adds torch.compile rows
    .venv/bin/python benchmarks/extract.py --device cuda    # GPU mode (skipped without CUDA)
    .venv/bin/python benchmarks/extract.py --quick          # smoke test (tiny model)
    .venv/bin/python benchmarks/extract.py --config precision=bf16,batch=128,workers=2

A config is ``precision`` (fp32/bf16; fp16 on GPU), ``batch`` (views per encoder call),
``workers`` (loader processes; 0 = one prefetching thread), ``channels_last`` (0/1: model and
pixels in channels-last memory), ``compile`` (0/1: ``torch.compile`` the image tower) and
``float_views`` (0/1: the pipeline as before commit b13b9ce, float views from the loader made
by ``benchmarks/crops_baseline.py``, for the before/after comparison) and ``device_views``
(0/1: ``views_on_device``, the loader only decodes and the views are cut and resized on the
encoder's device; GPU mode compares it with the CPU-view rows).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import open_clip
import torch
from torch import Tensor

import crops_baseline
import wca.crops
from _common import JpegDataset, cuda_or_skip, machine_report, make_jpegs, ratio, table
from wca.crops import CropSpec
from wca.encoders.open_clip_backend import OpenClipEncoder
from wca.encoders.registry import held_library_logs
from wca.features import extract_features
from wca.options import RunOptions

ALPHA = 0.5
# --quick: a one-layer ViT registered with open_clip, so the smoke test takes seconds
TINY_ARCH = "bench-tiny-ViT"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}


@dataclass(frozen=True)
class Config:
    precision: str = "fp32"
    batch: int = 64
    workers: int = 0
    channels_last: bool = False
    compile: bool = False
    float_views: bool = False
    device_views: bool = False

    @classmethod
    def parse(cls, text: str) -> Config:
        """``"precision=bf16,batch=128,workers=2"`` -> Config (unnamed fields keep defaults)."""
        config = cls()
        for part in filter(None, text.split(",")):
            key, sep, value = part.partition("=")
            if not sep or key not in cls.__dataclass_fields__:
                raise ValueError(f"--config {text!r}: {part!r} is not one of "
                                 f"{', '.join(cls.__dataclass_fields__)} = value")
            kind = cls.__dataclass_fields__[key].type
            converted = value if kind == "str" else int(value)
            config = replace(config, **{key: bool(converted) if kind == "bool" else converted})
        return config

    def label(self) -> str:
        options = ("channels_last", "compile", "float_views", "device_views")
        extras = [name for name in options if getattr(self, name)]
        return " ".join([self.precision, f"batch {self.batch}", f"workers {self.workers}", *extras])


CPU_CONFIGS = [
    Config("fp32", 64, 0),
    Config("bf16", 64, 0),
    Config("bf16", 64, 2),
    Config("bf16", 64, 0, channels_last=True),
    Config("bf16", 128, 0),
    Config("bf16", 64, 2, float_views=True),
]
GPU_CONFIGS = [
    Config("fp16", 256, 2),
    Config("bf16", 256, 2),
    Config("fp16", 512, 2),
    Config("fp16", 256, 4),
    Config("fp16", 256, 2, channels_last=True),
    Config("fp16", 256, 2, float_views=True),
    Config("fp16", 256, 2, device_views=True),
    Config("fp16", 512, 2, device_views=True),
]


class BenchEncoder(OpenClipEncoder):
    """The project's open_clip encoder, optionally with channels-last pixels."""

    channels_last = False

    def _image_features(self, pixels: Tensor) -> Tensor:
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return self.model.encode_image(pixels)


@contextlib.contextmanager
def pipeline_before_b13b9ce(enabled: bool):
    """Within the block, ``extract_features`` runs as before commit b13b9ce: the loader makes
    float views with the old fast path (``benchmarks/crops_baseline.py``) and hands them over
    as they are, instead of ``uint8`` views normalised per encoder batch."""
    if not enabled:
        yield
        return
    original = wca.preprocessing.uint8_views
    wca.preprocessing.uint8_views = crops_baseline.fast_views
    try:
        yield
    finally:
        wca.preprocessing.uint8_views = original


def build_encoder(arch: str, config: Config, device: torch.device) -> BenchEncoder:
    """``open_clip.create_model(arch)`` with random weights, as the project's encoder.

    ``wca.load_encoder`` refuses an architecture without weights (``open_clip:ARCH`` needs a
    tag or a checkpoint), so the backend's class is built around the model directly.
    """
    torch.manual_seed(0)
    with held_library_logs():  # open_clip warns that no weights were loaded
        model = open_clip.create_model(arch, precision=config.precision, device=device).eval()
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.compile:
        model.visual = torch.compile(model.visual)
    encoder = BenchEncoder(
        model,
        open_clip.get_tokenizer(arch),
        name=f"open_clip:{arch} (random weights)",
        identity=f"bench:{arch}:random:{config.precision}",
        device=device,
        precision=config.precision,
        batch_size=config.batch,
    )
    encoder.channels_last = config.channels_last
    return encoder


def batch_sizes(images: int, views_per_image: int, batch: int) -> list[int]:
    """The encoder calls extract_features makes for one shard: full batches, then the rest."""
    total = images * views_per_image
    return [batch] * (total // batch) + ([total % batch] if total % batch else [])


def measure(
    encoder: BenchEncoder, dataset: JpegDataset, n_crops: int, config: Config, repeats: int
) -> tuple[float, float]:
    """(floor images/s, pipeline images/s) for one config: floor and pipeline alternate
    ``repeats`` times (so a change of background load hits both) and the best of each is kept;
    every batch shape is run once first (first calls pay for kernel selection or compilation)."""
    calls = batch_sizes(len(dataset), n_crops + 1, config.batch)
    size = encoder.preprocessing.image_size
    ready = torch.randn(config.batch, 3, size, size)
    for shape in sorted(set(calls)):
        encoder.encode_images(ready[:shape])
    sync = torch.cuda.synchronize if encoder.device.type == "cuda" else (lambda: None)
    floor = pipeline = 0.0
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        for count in calls:
            encoder.encode_images(ready[:count])
        sync()
        floor = max(floor, ratio(len(dataset), time.perf_counter() - start))

        start = time.perf_counter()
        with pipeline_before_b13b9ce(config.float_views):
            features = extract_features(
                encoder, dataset, CropSpec(n_crops=n_crops, alpha=ALPHA),
                RunOptions(
                    cache_dir=None, batch_size=config.batch, num_workers=config.workers,
                    progress=False, views_on_device=config.device_views,
                ),
            )
        sync()
        pipeline = max(pipeline, ratio(len(dataset), time.perf_counter() - start))
        if features.crop_emb.shape != (len(dataset), n_crops, encoder.embed_dim):
            raise RuntimeError(f"unexpected features {features!r}")
    return floor, pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="JPEGs to extract (default 4)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="alternating floor/pipeline passes, best of each kept (default 2)")
    parser.add_argument("--crops", type=int, default=60, help="crops per image, N (default 60)")
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU mode")
    parser.add_argument("--config", action="append", default=[], metavar="K=V,...",
                        help="measure only these configs (repeatable; see the module doc)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    args = parser.parse_args(argv)
    print(machine_report(args.device))
    if not cuda_or_skip(args.device):
        return 0
    device = torch.device(args.device)
    if args.config:
        configs = [Config.parse(text) for text in args.config]
    else:
        configs = list(GPU_CONFIGS if device.type == "cuda" else CPU_CONFIGS)
        if args.compile:
            best = configs[1] if device.type == "cpu" else configs[0]
            configs.append(replace(best, compile=True))
    if args.quick:
        args.images, args.crops, args.repeats = 1, 2, 1
        configs = configs[:1] if args.config else [
            Config("fp32", 4, 0), Config("bf16", 4, 1, float_views=True)
        ]

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        if args.quick:
            config_file = Path(folder) / f"{TINY_ARCH}.json"
            config_file.write_text(json.dumps(TINY_CONFIG))
            open_clip.add_model_config(config_file)
            args.arch = TINY_ARCH
        dataset = JpegDataset(make_jpegs(Path(folder), args.images))
        for config in configs:
            encoder = build_encoder(args.arch, config, device)
            floor, pipeline = measure(encoder, dataset, args.crops, config, args.repeats)
            views = args.crops + 1
            rows.append([config.label(), floor, floor * views, pipeline, pipeline * views,
                         ratio(pipeline, floor)])
            print(table(["config", "floor img/s", "floor views/s", "pipeline img/s",
                         "pipeline views/s", "pipeline / floor"], rows[-1:]).splitlines()[-1],
                  flush=True)
    print(f"\n{args.arch} (random weights), {args.images} JPEGs, N={args.crops} (+1 full view) "
          f"per image, device {device}; floor = the same encoder calls on ready tensors; "
          f"best of {args.repeats} alternating passes\n")
    print(table(["config", "floor img/s", "floor views/s", "pipeline img/s", "pipeline views/s",
                 "pipeline / floor"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
