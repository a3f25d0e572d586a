"""The command-line tests' world: a tiny open_clip model, an image folder of 3 classes x 3 JPEGs
and its description set; the arguments of an extraction over it and its cache shards."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from tiny_models import save_open_clip_model

CLASSES = ("red fox", "blue whale", "green frog")


def build_world(base: Path) -> dict[str, Path | str]:
    """A tiny model spec, an image folder of 3 classes x 3 JPEGs and its description set."""
    spec = save_open_clip_model(base / "model")
    generator = torch.Generator().manual_seed(0)
    for c, name in enumerate(CLASSES):
        for k in range(3):
            size = (40 + 6 * k, 36 + 5 * c)
            pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator)
            path = base / "images" / name.replace(" ", "_") / f"{k}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.to(torch.uint8).numpy()).save(path)
    texts = base / "descriptions" / "mini"
    texts.mkdir(parents=True)
    (texts / "cupl.json").write_text(
        json.dumps(
            {
                name: [f"A photo of a {name}, which is {colour}." for colour in ("small", "bright")]
                for name in CLASSES
            }
        )
    )
    (texts / "clip-d.json").write_text(
        json.dumps({name: ["four legs", "a tail", "fins"] for name in CLASSES})
    )
    (texts / "clip-e.json").write_text(json.dumps(["a photo of a {}.", "a drawing of a {}."]))
    (base / "descriptions" / "waffle-words.json").write_text(
        json.dumps(["lorem", "ipsum", "dolor"])
    )
    return {"spec": spec, "images": base / "images", "texts": texts}


def shards(cache: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_file(p) for p in sorted(cache.glob("*/*/shard-*.safetensors"))}


def extract_args(world, cache: Path) -> list[str]:
    return [
        "extract", "--dataset", "imagefolder", "--data-root", str(world["images"]),
        "--model", world["spec"], "--cache-dir", str(cache), "--n-crops", "6",
        "--batch-size", "16", "--shard-size", "4", "--no-progress",
    ]  # fmt: skip


class EncoderCalls:
    """An image encoder's passes (views per call); after ``fail_after`` calls the next is killed."""

    def __init__(self) -> None:
        self.views: list[int] = []
        self.fail_after: int | None = None


def count_encoder_calls(monkeypatch, encoder_class, counted=lambda encoder: True) -> EncoderCalls:
    """Counts the ``encode_images`` calls of the ``encoder_class`` instances that ``counted``
    selects (the others pass through uncounted)."""
    calls, original = EncoderCalls(), encoder_class.encode_images

    def encode_images(self, pixels):
        if counted(self):
            if calls.fail_after is not None and len(calls.views) >= calls.fail_after:
                raise KeyboardInterrupt
            calls.views.append(len(pixels))
        return original(self, pixels)

    monkeypatch.setattr(encoder_class, "encode_images", encode_images)
    return calls
