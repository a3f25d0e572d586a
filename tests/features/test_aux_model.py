"""A second image encoder of the same views (aux_model): cached beside the first's under its own
identity, resumed and damage-checked as the first's, read by COSMIC as if fed by hand; a bad
spec is one line. The encoder is a tiny DINOv2 saved by the test, named as a user names one."""

from __future__ import annotations

import json

import pytest
import torch

from cli_world import EncoderCalls, count_encoder_calls
from golden_world import build_world
from tiny_vision import save_dinov2
from wca.cell_models import build_heads, load_model
from wca.cli import main
from wca.config import resolve_config
from wca.encoders.base import ImageEncoder
from wca.encoders.vision import load_image_encoder
from wca.evaluate import evaluate, run_indices, stream_order
from wca.features import Features, extract_features
from wca.methods import Head
from wca.options import RunOptions
from wca.pipeline import Cell, run_cell
from wca.results import Settings

VIEWS = {"n_crops": 6, "seed": 3}  # 12 images x 7 views; shards of 5 images = 35 views
FLAGS = ["--n-crops", "6", "--seed", "3", "--shard-size", "5", "--batch-size", "12",
         "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("aux")
    return {**build_world(base), "dinov2": save_dinov2(base / "tiny-dinov2")}


@pytest.fixture
def aux_calls(monkeypatch) -> EncoderCalls:
    """The second encoder's passes (the CLIP model's are not counted)."""
    return count_encoder_calls(
        monkeypatch, ImageEncoder, lambda encoder: encoder.identity.startswith("image:")
    )


def extract_args(world, cache) -> list[str]:
    return ["extract", "--dataset", "imagefolder", "--data-root", str(world["images"]),
            "--model", world["spec"], "--aux-model", str(world["dinov2"]),
            "--cache-dir", str(cache), *FLAGS]  # fmt: skip


def aux_folder(cache):
    """The folder of the second encoder's shards: its manifest's key names that encoder."""
    for manifest in cache.rglob("manifest.json"):
        if json.loads(manifest.read_text())["key"]["encoder"].startswith("image:hf:"):
            return manifest.parent
    raise AssertionError(f"no aux features in {cache}")


def same_shards(a, b) -> None:
    names = sorted(path.name for path in a.glob("shard-*.safetensors"))
    assert names == sorted(path.name for path in b.glob("shard-*.safetensors")) and names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_cosmic_reads_the_cached_second_views_as_if_fed_by_hand(world, tmp_path, aux_calls):
    cache = tmp_path / "cache"
    settings = {"data_root": str(world["images"]), "model": world["spec"], "n_run": 3,
                "patch_n": 4, "methods": "clip,cosmic", "aux_model": str(world["dinov2"]),
                **VIEWS}  # fmt: skip
    config = resolve_config("imagefolder", overrides=settings)
    options = RunOptions(descriptions=world["texts"], cache_dir=cache, shard_size=5,
                         progress=False)  # fmt: skip
    result = run_cell(config, options)
    assert len(list(cache.rglob("manifest.json"))) == 2  # CLIP's features and DINOv2's, beside
    assert sum(aux_calls.views) == 12 * 7  # every view of every image, once
    assert result.config.aux_model == f"hf:{world['dinov2']}"
    assert result.config.model_extra["aux_encoder"].startswith(f"image:hf:{world['dinov2']}#")
    without = Settings(**{**result.config.model_dump(), "aux_model": None})
    assert without.differs_from(result.config) == "aux_model"  # another result, never pooled

    # by hand: the cached features of both encoders, COSMIC's stream fed them per run
    prepared, encoder = Cell(config).prepare(options), load_model(config, options)
    clip = extract_features(encoder, prepared.dataset, config.crops, options)
    aux = extract_features(load_image_encoder(config.aux_model), prepared.dataset, config.crops,
                           options)  # fmt: skip
    assert sum(aux_calls.views) == 12 * 7  # read from the cache, not encoded again
    assert torch.equal(aux.boxes, clip.boxes) and aux.embed_dim == 24
    head = build_heads(config, prepared.sources, encoder, False)["cosmic"]
    indices = run_indices(clip.n_crops, 3, 4, config.seed, "pool")
    top1, changed = [], False
    for run in range(3):
        order = stream_order(len(clip), config.seed, run)
        views = (clip.image_emb[order].float(), clip.crop_emb[order][:, indices[run]].float())
        logits = head.stream(len(clip)).logits(*views, aux_emb=aux.image_emb[order].float())
        top1.append(float((logits.argmax(-1) == clip.labels[order]).double().mean() * 100))
        changed |= not torch.allclose(logits, head.stream(len(clip)).logits(*views))
    assert result.results.methods["cosmic"].top1.runs == pytest.approx(top1, abs=1e-9)
    assert changed  # the fine-grained graph's scores entered the outputs


def test_without_a_reader_the_second_encoder_is_not_loaded(world, tmp_path, aux_calls):
    overrides = {"data_root": str(world["images"]), "model": world["spec"], "n_run": 1,
                 "patch_n": 2, "methods": "clip,wca", "aux_model": str(world["dinov2"]), **VIEWS}
    config = resolve_config("imagefolder", overrides=overrides)  # fmt: skip
    options = RunOptions(descriptions=world["texts"], cache_dir=tmp_path, progress=False)
    result = run_cell(config, options)
    assert aux_calls.views == [] and len(list(tmp_path.rglob("manifest.json"))) == 1
    assert result.config.model_extra["aux_encoder"] is None


def test_a_killed_pass_resumes_and_a_damaged_shard_is_recomputed(world, tmp_path, aux_calls):
    assert main(extract_args(world, tmp_path / "reference")) == 0
    reference = aux_folder(tmp_path / "reference")
    aux_calls.views.clear()
    aux_calls.fail_after = 4  # shards of 35 views = 3 calls of 12: killed in shard 1
    assert main(extract_args(world, tmp_path / "cache")) == 130
    folder = aux_folder(tmp_path / "cache")
    assert [path.name for path in folder.glob("shard-*.safetensors")] == ["shard-00000.safetensors"]
    aux_calls.fail_after = None
    aux_calls.views.clear()
    assert main(extract_args(world, tmp_path / "cache")) == 0
    assert sum(aux_calls.views) == 7 * 7  # images 5..11 only
    same_shards(reference, folder)
    shard = folder / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x55
    shard.write_bytes(bytes(data))
    aux_calls.views.clear()
    with pytest.warns(UserWarning, match="shard-00001.*sha256"):
        assert main(extract_args(world, tmp_path / "cache")) == 0
    assert sum(aux_calls.views) == 5 * 7  # that shard alone
    same_shards(reference, folder)


def test_a_bad_aux_model_is_one_line_naming_its_flag(world, tmp_path, capsys):
    for spec, message in (("foo:bar", "unknown backend 'foo'"),
                          (str(tmp_path / "none"), "no such checkpoint file or model folder")):
        args = extract_args(world, tmp_path)
        args[args.index("--aux-model") + 1] = spec
        assert main(["eval", *args[1:], "--methods", "cosmic"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("wca: error: --aux-model: ") and "\n" not in err, err
        assert message in err


class AuxNearest(Head):
    """Scores classes by the second encoder's full view (by the first's without one)."""

    reads_aux = True

    def __init__(self, classes: torch.Tensor) -> None:
        self.classes = classes

    def logits(self, image_emb, crop_emb=None, draw=0, *, counts=None, aux_emb=None):
        return (image_emb if aux_emb is None else aux_emb) @ self.classes.T


class Nearest(AuxNearest):
    """The same head, not declaring that it reads a second encoder."""

    reads_aux = False


def test_evaluate_gives_the_second_views_to_the_heads_that_read_them():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, -1])  # the last image skipped as unreadable

    def features(image_emb, labels=labels):
        crops, boxes = torch.zeros(7, 2, image_emb.shape[1]), torch.zeros(7, 2, 4, dtype=torch.long)
        return Features(image_emb, crops, boxes, labels)

    clip = features(torch.eye(3)[[1, 2, 0, 1, 2, 0, 0]])  # every image as its wrong class
    aux = features(torch.eye(3)[labels.clamp(min=0)])  # every image as its own class
    heads = {"reader": AuxNearest(torch.eye(3)), "other": Nearest(torch.eye(3))}
    scored = evaluate(clip, heads, 2, 2, aux=aux)
    assert scored.methods["reader"].top1 == [100.0, 100.0]
    assert scored.methods["other"].top1 == [0.0, 0.0]  # never given them
    assert evaluate(clip, heads, 2, 2).methods["reader"].top1 == [0.0, 0.0]  # without them
    with pytest.raises(ValueError, match="aux: the second encoder's features are not of the same"):
        evaluate(clip, heads, 2, 2, aux=features(aux.image_emb, labels.roll(1)))
