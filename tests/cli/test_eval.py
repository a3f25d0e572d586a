"""`wca eval`, `wca extract` and `wca classify` end to end with a tiny open_clip model on a
miniature image folder; config files in the authors' shape."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from cli_world import CLASSES, EncoderCalls, build_world, count_encoder_calls, extract_args, shards
from mini_datasets import make_eurosat
from wca.cli import main
from wca.config import EvalConfig, resolve_config
from wca.encoders import Encoder

AUTHORS_YAML = """\
model_size: ViT-B/32
batch_size: 32
dataset: cub
data_path : data/CUB_200_2011

alpha: 0.5
n_samples: 100
n_run: 20
patch_n: 60

methods:
  - clip:
      name: clip
      enabled: True
  - clip-d:
      name: clip-d
      enabled: False
  - wca:
      name: wca
      enabled: True
      image_scale: 4.0
      text_scale: 2.0
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path | str]:
    """A tiny model spec, an image folder of 3 classes x 3 JPEGs and its description set."""
    return build_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def image_calls(monkeypatch) -> EncoderCalls:
    return count_encoder_calls(monkeypatch, Encoder)


def _eval_args(world, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--dataset",
        "imagefolder",
        "--data-root",
        str(world["images"]),
        "--descriptions",
        str(world["texts"]),
        "--model",
        world["spec"],
        "--cache-dir",
        str(tmp_path / "cache"),
        "--output",
        str(tmp_path / "result.json"),
        "--n-crops",
        "6",
        "--n-run",
        "3",
        "--patch-n",
        "4",
        "--batch-size",
        "16",
        "--shard-size",
        "4",
        "--no-progress",
        *extra,
    ]


def test_eval_writes_every_method_and_reuses_the_cache(world, tmp_path, image_calls, capsys):
    assert main(_eval_args(world, tmp_path)) == 0
    table = capsys.readouterr().out
    for method in ("clip", "clip-e", "clip-d", "waffle", "cupl", "wca"):
        assert f"| {method} |" in table
    document = json.loads((tmp_path / "result.json").read_text())
    methods = document["results"]["methods"]
    assert list(methods) == ["clip", "clip-e", "clip-d", "waffle", "cupl", "wca"]
    assert len(methods["wca"]["top1"]["runs"]) == 3 and methods["clip"]["top1"]["std"] == 0
    config = document["config"]
    assert config["n_run"] == 3 and config["n_crops"] == 6 and config["model"] == world["spec"]
    assert config["dataset_info"]["classnames"] == sorted(CLASSES)  # sorted class folders
    assert document["versions"]["torch"] and "open_clip_torch" in document["versions"]
    assert sum(image_calls.views) == 9 * 7  # every view once

    image_calls.views.clear()
    assert main(_eval_args(world, tmp_path)) == 0
    assert image_calls.views == []  # features from the cache
    again = json.loads((tmp_path / "result.json").read_text())["results"]["methods"]
    assert again == methods


def test_eval_on_a_registered_dataset_with_the_published_descriptions(
    world, tmp_path, descriptors_dir, capsys
):
    root = make_eurosat(tmp_path / "eurosat")
    out = tmp_path / "eurosat.json"
    args = [
        "eval", "--dataset", "eurosat", "--data-root", str(root), "--model", world["spec"],
        "--descriptions-dir", str(descriptors_dir), "--cache-dir", "none", "--output", str(out),
        "--n-crops", "2", "--n-run", "2", "--patch-n", "2", "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    document = json.loads(out.read_text())
    assert len(document["results"]["methods"]) == 6
    assert document["config"]["descriptions"] == str(descriptors_dir / "eurosat")
    sentences = tmp_path / "own.json"
    names = document["config"]["dataset_info"]["classnames"]
    sentences.write_text(json.dumps({name: [f"a satellite photo of {name}."] for name in names}))
    own = [*args, "--descriptions", str(sentences), "--methods", "clip-d,wca", "--overwrite"]
    assert main(own) == 0
    config = json.loads(out.read_text())["config"]
    assert config["descriptions"] == f"{descriptors_dir / 'eurosat'} + {sentences}"


def _assert_same_shards(a: Path, b: Path) -> None:
    first, second = shards(a), shards(b)
    assert first.keys() == second.keys() and len(first) == 3
    for name, tensors in first.items():
        for key, value in tensors.items():
            assert torch.equal(second[name][key], value), (name, key)


def test_killed_extraction_resumes_bit_identically(world, tmp_path, image_calls, capsys):
    assert main(extract_args(world, tmp_path / "reference")) == 0
    image_calls.views.clear()
    image_calls.fail_after = 3  # shards of 4 images = 28 views = 2 calls of 16
    assert main(extract_args(world, tmp_path / "cache")) == 130
    assert len(shards(tmp_path / "cache")) == 1  # shard 0 done, shard 1 lost mid-way
    image_calls.fail_after = None
    image_calls.views.clear()
    assert main(extract_args(world, tmp_path / "cache")) == 0
    assert sum(image_calls.views) == 5 * 7  # images 4..8 only
    _assert_same_shards(tmp_path / "reference", tmp_path / "cache")


def test_corrupted_shard_is_detected_and_recomputed(world, tmp_path, image_calls, capsys):
    assert main(extract_args(world, tmp_path / "reference")) == 0
    assert main(extract_args(world, tmp_path / "cache")) == 0
    shard = next((tmp_path / "cache").glob("*/*/shard-00001.safetensors"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x55
    shard.write_bytes(bytes(data))
    image_calls.views.clear()
    with pytest.warns(UserWarning, match="shard-00001.*sha256"):
        assert main(extract_args(world, tmp_path / "cache")) == 0
    assert sum(image_calls.views) == 4 * 7
    _assert_same_shards(tmp_path / "reference", tmp_path / "cache")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--data-root": "/no/such/folder"}, "/no/such/folder: data root does not exist"),
        ({"--dataset": "nope"}, "unknown dataset 'nope'"),
        ({"--descriptions": "{drop}"}, "green frog"),
        ({"--model": "nothing"}, "model spec 'nothing' is malformed"),
        ({"--set": "n_run=many"}, "n_run: Input should be a valid integer"),
        ({"--set": "colour=red"}, "colour=red: colour: unknown setting (known: model,"),
        ({"--methods": "clip,best"}, "unknown method 'best'"),
        ({"--protocol": "fresh"}, "--protocol: 'fresh' needs n_run * patch_n = 12"),
        ({"--alpha": "0.95"}, "--alpha: must be <= beta, got 0.95 > 0.9"),
    ],
)
def test_bad_arguments_give_one_clear_line(world, tmp_path, capsys, change, message):
    args = _eval_args(world, tmp_path)
    for flag, value in change.items():
        if value == "{drop}":
            partial = tmp_path / "partial.json"
            partial.write_text(json.dumps({"red fox": ["a fox."], "blue whale": ["a whale."]}))
            value = str(partial)
            args += ["--methods", "wca"]
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wca: error: ") and "\n" not in err, err
    assert message in err


def test_missing_dataset_and_root_are_usage_errors(tmp_path, capsys):
    assert main(["eval", "--data-root", str(tmp_path), "--model", "x:y"]) == 2
    assert "wca: error: --dataset: not set" in capsys.readouterr().err
    assert main(["eval", "--dataset", "cub", "--model", "x:y"]) == 2
    assert "wca: error: --data-root: not set" in capsys.readouterr().err


def test_classify_prints_top_k_and_json(world, tmp_path, capsys):
    image = next((world["images"] / "red_fox").glob("*.jpg"))
    descriptions = world["texts"] / "cupl.json"
    args = [
        "classify",
        str(image),
        str(image),
        "--classes",
        ",".join(CLASSES),
        "--descriptions",
        str(descriptions),
        "--model",
        world["spec"],
        "--n-crops",
        "4",
        "--top-k",
        "2",
    ]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and lines[1].startswith("  1. ") and len(lines) == 6
    assert main([*args, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert len(document) == 2 and len(document[0]["predictions"]) == 2
    assert {p["label"] for p in document[0]["predictions"]} <= set(CLASSES)
    assert main([*args[:3], "--classes", "red fox,unicorn", *args[5:]]) == 2
    assert "unicorn" in capsys.readouterr().err


def test_authors_yaml_loads_and_flags_override(tmp_path):
    path = tmp_path / "cub.yaml"
    path.write_text(AUTHORS_YAML)
    config = resolve_config(path=path)
    assert (config.model, config.dataset, config.data_root) == (
        "open_clip:ViT-B-32/openai",
        "cub",
        "data/CUB_200_2011",
    )
    assert [m.name for m in config.enabled_methods()] == ["clip", "wca"]
    assert config.enabled_methods()[1].options == {"image_scale": 4.0, "text_scale": 2.0}
    config = resolve_config(
        path=path,
        overrides={"n_run": 5, "alpha": None},
        settings=["methods.wca.text_scale=1.5", "methods.clip-d.enabled=true", "seed=3"],
    )
    assert config.n_run == 5 and config.alpha == 0.5 and config.seed == 3
    assert [m.name for m in config.enabled_methods()] == ["clip", "clip-d", "wca"]
    assert config.enabled_methods()[2].options["text_scale"] == 1.5
    assert config.to_dict()["methods"][2] == {  # every option, defaults included
        "wca": {
            "name": "wca", "enabled": True, "image_scale": 4.0, "text_scale": 1.5,
            "form": "reference",
        }
    }  # fmt: skip


def test_defaults_follow_the_reference_per_dataset():
    assert EvalConfig().n_run == 20 and EvalConfig().patch_n == 60
    assert resolve_config("imagenet").n_crops == 60
    assert resolve_config("places365").alpha == 0.7
    cub = resolve_config("cub")
    assert (cub.n_crops, cub.alpha, cub.beta) == (100, 0.5, 0.9)
    assert [m.name for m in cub.enabled_methods()] == [
        "clip",
        "clip-e",
        "clip-d",
        "waffle",
        "cupl",
        "wca",
    ]


def test_bad_config_files_name_the_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("alpha: 0.5\nn_samples: [1]\n")  # the authors' key, read as n_crops
    with pytest.raises(ValueError, match="bad.yaml: n_crops: Input should be a valid integer"):
        resolve_config(path=path)
    path.write_text("methods:\n  - clip: {name: clipper}\n")
    with pytest.raises(ValueError, match="bad.yaml: methods: clipper: unknown method 'clipper'"):
        resolve_config(path=path)
    path.write_text("alpha: [\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        resolve_config(path=path)
    with pytest.raises(FileNotFoundError, match="missing.yaml: config file not found"):
        resolve_config(path=tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["imagenet-a", "imagenetv2"])
def test_imagenet_variants_use_imagenet_name_lists(descriptors_dir, name):
    from wca.descriptions import load_classnames
    from wca.options import RunOptions
    from wca.pipeline import text_sources

    dataset = argparse.Namespace(
        name=name,
        classnames=load_classnames(descriptors_dir / name / "classnames.json"),
        descriptions_name=name,
    )
    sources, source = text_sources(dataset, RunOptions(descriptions_dir=descriptors_dir))
    imagenet = descriptors_dir / "imagenet"
    assert source == str((descriptors_dir / name).resolve())
    assert sources.names("clip-d") == load_classnames(imagenet / "classnames-openai.json")
    assert sources.names("wca") == load_classnames(imagenet / "classnames-cupl.json")
    assert sources.descriptors is not None and len(sources.templates) == 80


def test_eval_scores_the_peers_on_rrc_views_with_the_models_temperature(
    world, tmp_path, monkeypatch, capsys
):
    import wca.methods

    built = {}
    original = wca.methods.build_head

    def spy(method, encoder, sources, **options):
        head = original(method, encoder, sources, **options)
        built[method] = getattr(head, "logit_scale", None)  # the temperature the head uses
        return head

    monkeypatch.setattr(wca.methods, "build_head", spy)
    methods = "clip,cupl,wca,wca-full-view,zero,mta,awt"
    extra = ("--methods", methods, "--crop-strategy", "rrc", "--set", "methods.mta.logit_scale=7")
    assert main(_eval_args(world, tmp_path, *extra)) == 0
    results = json.loads((tmp_path / "result.json").read_text())["results"]["methods"]
    assert list(results) == methods.split(",")
    assert all(0 <= r["top1"]["mean"] <= 100 for r in results.values())
    from wca.encoders import load_encoder

    scale = load_encoder(world["spec"]).logit_scale
    assert built == {
        "clip": None, "cupl": None, "wca": None, "wca-full-view": None,
        "zero": scale, "mta": 7.0, "awt": scale,
    }  # fmt: skip
    cached = shards(tmp_path / "cache")
    assert all("flips" in tensors for tensors in cached.values())
