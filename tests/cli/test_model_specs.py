"""One model spec grammar for every command and the API (wca.specs): open_clip's ARCH/TAG, the
prefixed forms, paths, demo, and clip_benchmark's --model ARCH --pretrained TAG."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import tiny_models
from wca.cli import main
from wca.config import resolve_config
from wca.reproduce import model_specs
from wca.specs import resolve, with_pretrained


@pytest.mark.parametrize(
    ("spec", "resolved"),
    [
        ("ViT-B-32/openai", "open_clip:ViT-B-32/openai"),
        ("open_clip:ViT-B-32/openai", "open_clip:ViT-B-32/openai"),
        ("open_clip:hf-hub:org/name", "open_clip:hf-hub:org/name"),
        ("hf:openai/clip-vit-base-patch32", "hf:openai/clip-vit-base-patch32"),
        ("xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k",
         "open_clip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"),
    ],
)  # fmt: skip
def test_every_form_resolves_to_one_backend_spec(spec, resolved):
    assert resolve(spec)[0] == resolved


def test_clip_benchmarks_model_and_pretrained_join(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tuned.pt").write_bytes(b"")
    assert with_pretrained("ViT-B-32", "openai") == "open_clip:ViT-B-32/openai"
    assert with_pretrained("ViT-B-16", "tuned.pt") == f"open_clip:ViT-B-16@{tmp_path / 'tuned.pt'}"
    with pytest.raises(ValueError, match="goes with an architecture"):
        with_pretrained("open_clip:ViT-B-32/openai", "openai")
    config = resolve_config("imagefolder", overrides={"model": "ViT-B-32", "pretrained": "openai"})
    assert config.model == "open_clip:ViT-B-32/openai" and "pretrained" not in config.to_dict()


def test_reproduce_and_eval_read_specs_alike(tmp_path):
    from wca.sweep import plan

    (tmp_path / "data" / "a").mkdir(parents=True)
    specs = ["ViT-B-32/openai", "hf:org/name", "demo"]
    cells = plan(specs, ["imagefolder"], [str(tmp_path / "data")],
                 template=str(tmp_path / "{dataset}__{model}.json"))  # fmt: skip
    assert [cell.config.model for cell in cells] == model_specs([",".join(specs)])
    names = [cell.output.name for cell in cells]
    assert names == ["data__ViT-B-32-openai.json", "data__org-name.json", "data__wca-demo-rn.json"]


@pytest.mark.slow
def test_classify_and_eval_take_arch_and_pretrained(tmp_path, capsys):
    """The tiny open_clip model by `--model ARCH --pretrained FILE`: the same answers as its
    full spec; result files and tables name it short, never by its path."""
    spec = tiny_models.save_open_clip_model(tmp_path / "model")
    arch, weights = spec.removeprefix("open_clip:").split("@")
    rng = np.random.default_rng(0)
    for name in ("red", "blue"):
        (tmp_path / "images" / name).mkdir(parents=True)
        pixels = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / name / "0.png")
    image = tmp_path / "images" / "red" / "0.png"
    classify = ["classify", str(image), "--classes", "red,blue", "--n-crops", "2", "--json"]
    assert main([*classify, "--model", spec]) == 0
    full = json.loads(capsys.readouterr().out)
    assert main([*classify, "--model", arch, "--pretrained", weights]) == 0
    assert json.loads(capsys.readouterr().out) == full
    out = tmp_path / "results" / "{dataset}__{model}.json"
    argv = ["eval", "--dataset", "imagefolder", "--data-root", str(tmp_path / "images"),
            "--model", arch, "--pretrained", weights, "--methods", "clip", "--n-crops", "2",
            "--patch-n", "2", "--n-run", "1", "--cache-dir", "none",
            "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    (written,) = (tmp_path / "results").iterdir()
    assert written.name == f"images__{arch}-tiny_open_clip.json"
    result = json.loads(written.read_text())
    assert (result["model"], result["pretrained"]) == (arch, "tiny_open_clip.pt")
    assert result["config"]["model"] == spec
    assert str(tmp_path) not in printed.splitlines()[0]  # the table's title
