"""Tiny image-only models saved as users save them: a seeded one-layer DINOv2 with its image
processor (``save_pretrained``: a folder for ``hf:<folder>``) and timm's ``test_vit`` weights
(a file for ``timm:test_vit@<file>``)."""

from __future__ import annotations

from pathlib import Path

import torch

DINO_SIZE, DINO_RESIZE = 28, 32  # the processor's centre crop and short-side resize


def save_dinov2(folder: Path, seed: int = 0) -> Path:
    """A DINOv2 (patch 7, 2 heads, one layer) with a BitImageProcessor as facebook/dinov2-*
    declare it (short side, centre crop, bicubic, ImageNet's mean and std), at 28 pixels."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=48, patch_size=7, image_size=DINO_SIZE)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Dinov2Model(config).eval().save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": DINO_RESIZE},
        crop_size={"height": DINO_SIZE, "width": DINO_SIZE},
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return folder


def save_timm_test_vit(path: Path, seed: int = 0) -> Path:
    """timm's ``test_vit`` (its smallest ViT) without a classifier, its weights in ``path``."""
    import timm
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model("test_vit", pretrained=False, num_classes=0)
    save_file(model.state_dict(), path)
    return path
