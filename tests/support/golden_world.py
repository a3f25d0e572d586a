"""A tiny, fully seeded evaluation world (model, image folder, description set) whose `wca eval`
result is stored in ``tests/data/golden_eval.json``: the pipeline's numbers, cache key and
features must stay what they were when it was written (see tests/test_pipeline.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from tiny_models import save_open_clip_model

CLASSES = ("red fox", "blue whale", "green frog")
GOLDEN = Path(__file__).parent / "data" / "golden_eval.json"
# the eval of the golden file: every method family, a pool of 8 crops, 3 runs of 4
EVAL_FLAGS = [
    "--dataset", "imagefolder", "--methods", "clip,clip-e,clip-d,waffle,cupl,wca,zero,mta,awt",
    "--n-crops", "8", "--n-run", "3", "--patch-n", "4", "--seed", "3", "--no-progress",
]  # fmt: skip


def build_world(base: Path) -> dict[str, Path | str]:
    """The tiny model's spec, an image folder of 3 classes x 4 JPEGs and a description folder
    with every method's texts."""
    spec = save_open_clip_model(base / "model")
    generator = torch.Generator().manual_seed(0)
    for c, name in enumerate(CLASSES):
        for k in range(4):
            size = (40 + 6 * k, 36 + 5 * c)
            pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator)
            pixels[:, :, c] = pixels[:, :, c] // 2 + 128  # a class colour to find
            path = base / "images" / name.replace(" ", "_") / f"{k}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.to(torch.uint8).numpy()).save(path, quality=95)
    texts = base / "descriptions" / "mini"
    texts.mkdir(parents=True)
    sentences = {n: [f"A photo of a {n}, which is {w}." for w in ("small", "bright")]
                 for n in CLASSES}  # fmt: skip
    (texts / "cupl.json").write_text(json.dumps(sentences))
    (texts / "classnames.json").write_text(json.dumps(list(CLASSES)))
    (texts / "clip-d.json").write_text(json.dumps({n: ["four legs", "a tail"] for n in CLASSES}))
    (texts / "clip-e.json").write_text(json.dumps(["a photo of a {}.", "a drawing of a {}."]))
    (base / "descriptions" / "waffle-words.json").write_text(json.dumps(["lorem", "ipsum"]))
    return {"spec": spec, "images": base / "images", "texts": texts}
