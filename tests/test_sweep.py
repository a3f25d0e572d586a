"""`wca eval` over several models x datasets: output templates, a failing cell, resuming,
clip_benchmark's fields in every result file; the pieces of wca.sweep."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mini_datasets import make_dtd, make_eurosat
from tiny_models import save_open_clip_model
from wca.cli import main
from wca.encoders import Encoder
from wca.inputs import images_sha256
from wca.results import Settings
from wca.specs import absolute_spec, model_fields, model_label
from wca.sweep import model_labels, output_path, path_safe, plan, read_list

DTD_TEST = ["banded/banded_0002.jpg", "zigzagged/zigzagged_0003.jpg", "banded/banded_0005.jpg"]


@pytest.fixture(scope="module")
def sweep_world(tmp_path_factory, tiny_descriptions) -> dict[str, object]:
    """Two tiny models and data roots ``<root>/{dataset}`` for eurosat and dtd."""
    base = tmp_path_factory.mktemp("sweep")
    specs = [save_open_clip_model(base / f"model{seed}", seed=seed) for seed in (0, 1)]
    make_eurosat(base / "data" / "eurosat")
    make_dtd(base / "data" / "dtd", tiny_descriptions, {"test1": DTD_TEST})
    return {"specs": specs, "root": base / "data" / "{dataset}"}


def _sweep_args(world, tiny_descriptions, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "eval", "--dataset", "eurosat", "--dataset", "dtd", "--data-root", str(world["root"]),
        "--model", world["specs"][0], "--model", world["specs"][1],
        "--descriptions-dir", str(tiny_descriptions), "--cache-dir", str(tmp_path / "cache"),
        "--output", str(tmp_path / "out" / "{dataset}__{model}__{protocol}.json"),
        "--methods", "clip,cupl,wca", "--n-crops", "4", "--n-run", "2", "--patch-n", "3",
        "--no-progress", *extra,
    ]  # fmt: skip


@pytest.fixture
def image_views(monkeypatch) -> list[int]:
    views: list[int] = []
    original = Encoder.encode_images

    def counted(self, pixels):
        views.append(len(pixels))
        return original(self, pixels)

    monkeypatch.setattr(Encoder, "encode_images", counted)
    return views


@pytest.mark.slow
def test_sweep_writes_one_file_per_cell_with_clip_benchmark_fields(
    sweep_world, tiny_descriptions, tmp_path, image_views, capsys
):
    assert main(_sweep_args(sweep_world, tiny_descriptions, tmp_path)) == 0
    err = capsys.readouterr().err
    assert "sweep: 4 cells, 4 written, 0 skipped, 0 failed" in err
    files = sorted((tmp_path / "out").glob("*.json"))
    assert len(files) == 4 and {f.name.split("__")[0] for f in files} == {"eurosat", "dtd"}
    document = json.loads(next(f for f in files if f.name.startswith("dtd")).read_text())
    assert document["dataset"] == "dtd" and document["task"] == "zeroshot_classification"
    assert (document["model"], document["pretrained"]) == ("wca-tiny-ViT", "tiny_open_clip.pt")
    assert Path(document["config"]["model_file"]).is_absolute()  # the path: under config
    wca = document["results"]["methods"]["wca"]
    assert document["primary_method"] == "wca"
    assert document["metrics"]["acc1"] == pytest.approx(wca["top1"]["mean"] / 100)
    assert document["metrics"]["acc5"] == pytest.approx(wca["top5"]["mean"] / 100)
    recalls = [v for v in wca["per_class_top1"] if v is not None]
    assert len(recalls) == 2  # two DTD classes have images
    assert document["metrics"]["mean_per_class_recall"] == pytest.approx(sum(recalls) / 200)
    assert set(document["metrics_by_method"]) == {"clip", "cupl", "wca"}
    for metrics in document["metrics_by_method"].values():
        assert set(metrics) == {"acc1", "acc5", "mean_per_class_recall", "ece", "nll", "brier"}
        assert all(0 <= metrics[key] <= 1 for key in ("acc1", "acc5", "ece"))
        assert 0 <= metrics["brier"] <= 2 and metrics["nll"] >= 0
    config = document["config"]
    for key in ("data_root", "descriptions", "feature_cache", "model_file"):
        assert Path(config[key]).is_absolute(), key
    assert Path(config["model_file"]).name == document["pretrained"]
    assert "model_size" not in config
    names = sorted(f.name for f in files)  # two checkpoints of one name: told apart, no path
    assert len(set(names)) == 4 and all("tmp" not in name for name in names)
    assert all(name.split("__")[1].startswith("wca-tiny-ViT-tiny_open_clip-") for name in names)
    assert sum(image_views) == 2 * (10 + 3) * 5  # 2 models x (10 + 3 images) x 5 views

    image_views.clear()  # resumable: complete cells with the same settings are skipped
    assert main(_sweep_args(sweep_world, tiny_descriptions, tmp_path, "--skip-existing")) == 0
    assert "4 skipped" in capsys.readouterr().err and image_views == []
    changed = _sweep_args(sweep_world, tiny_descriptions, tmp_path, "--skip-existing")
    changed[changed.index("--n-run") + 1] = "3"
    del changed[changed.index("dtd") - 1 : changed.index("dtd") + 1]
    before = {f: f.read_bytes() for f in files}
    assert main(changed) == 2  # results of other settings are never replaced unasked
    err = capsys.readouterr().err.strip()
    assert "its n_run differs); choose another output, or overwrite it (pass --overwrite)" in err
    assert "\n" not in err and {f: f.read_bytes() for f in files} == before
    assert main([*changed, "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert err.count("its n_run differs") == 2 and "2 written" in err
    assert image_views == []  # new runs over the cached features


def test_a_result_of_other_texts_is_not_replaced_unasked(
    sweep_world, tiny_descriptions, tmp_path, image_views, capsys
):
    out = tmp_path / "eurosat.json"
    args = [
        "eval", "--dataset", "eurosat", "--data-root", str(sweep_world["root"]),
        "--model", sweep_world["specs"][0], "--descriptions-dir", str(tiny_descriptions),
        "--cache-dir", "none", "--output", str(out), "--methods", "clip,wca", "--n-crops", "2",
        "--n-run", "2", "--patch-n", "2", "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    first = out.read_bytes()
    names = json.loads(first)["config"]["dataset_info"]["classnames"]
    sentences = tmp_path / "own.json"
    sentences.write_text(json.dumps({name: [f"a satellite photo of {name}."] for name in names}))
    capsys.readouterr()
    image_views.clear()
    for skip in ([], ["--skip-existing"]):  # same settings, other texts: neither reused nor lost
        assert main([*args, "--descriptions", str(sentences), *skip]) == 2
        err = capsys.readouterr().err.strip()
        assert "(its texts differ); choose another output" in err and "\n" not in err
        assert out.read_bytes() == first and image_views == []  # before the model was loaded
    assert main([*args, "--descriptions", str(sentences), "--overwrite"]) == 0
    assert str(sentences) in json.loads(out.read_text())["config"]["descriptions"]


def test_the_image_list_digest_follows_files_and_labels_not_the_folder(tmp_path):
    def digest(root: str, files: list[str], labels: list[int]) -> str | None:
        paths = [f"{root}/{name}" for name in files]
        return images_sha256(SimpleNamespace(root=root, paths=paths, labels=labels))

    files, labels = ["a/1.jpg", "b/2.jpg"], [0, 1]
    first = digest("/data/x", files, labels)
    assert first == digest("/moved/x", files, labels)  # relative to the dataset's folder
    assert first != digest("/data/x", ["a/1.jpg", "b/3.jpg"], labels)  # a file renamed
    assert first != digest("/data/x", files, [1, 1])  # relabelled
    assert images_sha256(SimpleNamespace(root=None, paths=None, labels=None)) is None
    recorded = Settings(images_sha256=first)
    assert recorded.differs_from(Settings(images_sha256=first)) is None
    assert recorded.differs_from(Settings(images_sha256="0" * 16)) == "images_sha256"
    assert recorded.differs_from(Settings(descriptions_sha256="0" * 16)) is None  # not recorded


def test_a_failing_cell_is_reported_and_the_sweep_goes_on(
    sweep_world, tiny_descriptions, tmp_path, capsys
):
    args = _sweep_args(sweep_world, tiny_descriptions, tmp_path)
    args[args.index("--model", args.index("--model") + 1) + 1] = str(tmp_path / "missing")
    datasets = tmp_path / "datasets.txt"
    datasets.write_text("# the sweep's datasets\neurosat\n\n")
    args = [a for a in args if a not in ("--dataset", "dtd")]  # eurosat from the file only
    args.remove("eurosat")
    assert main([*args, "--datasets-file", str(datasets)]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("wca: error:")]
    assert len(lines) == 1 and "no such checkpoint file" in lines[0] and "eurosat x " in lines[0]
    assert "sweep: 2 cells, 1 written, 0 skipped, 1 failed" in err
    assert len(list((tmp_path / "out").glob("eurosat__*.json"))) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--output", "one.json"], "would both write"),
        (["--output", "r/{dataset}_{colour}.json"], "unknown field {colour}"),
        (["--data-root", "/data/same"], "several datasets need {dataset}"),
        (["--primary-method", "clip-d"], "--primary-method: clip-d is not among the methods"),
        (["--models-file", "/no/such/list.txt"], "list.txt: list file not found"),
    ],
)
def test_bad_sweeps_fail_before_any_work(
    sweep_world, tiny_descriptions, tmp_path, image_views, capsys, change, message
):
    args = _sweep_args(sweep_world, tiny_descriptions, tmp_path)
    if change[0] in ("--output", "--data-root"):
        index = args.index("--output" if change[0] == "--output" else change[0])
        args[index : index + 2] = change
    else:
        args += change
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wca: error: ") and "\n" not in err and message in err, err
    assert image_views == []


def test_a_folder_where_a_result_file_goes_fails_before_any_work(
    sweep_world, tiny_descriptions, tmp_path, image_views, capsys
):
    args = _sweep_args(sweep_world, tiny_descriptions, tmp_path, "--overwrite")
    args[args.index("--output") + 1] = str(tmp_path / "{dataset}")
    (tmp_path / "dtd").mkdir()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"wca: error: --output: {tmp_path / 'dtd'} is a folder; the result is a file"
    assert image_views == []


def test_model_fields_follow_clip_benchmark_names_without_paths(tmp_path, monkeypatch):
    checkpoint = tmp_path / "ViT-B-32.pt"
    checkpoint.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert model_fields("open_clip:ViT-B-32/openai") == {
        "model": "ViT-B-32",
        "pretrained": "openai",
        "file": None,
    }
    assert model_fields("ViT-B-32/openai") == model_fields("open_clip:ViT-B-32/openai")
    tuned = model_fields("open_clip:ViT-B-16@ViT-B-32.pt")
    assert tuned == {"model": "ViT-B-16", "pretrained": "ViT-B-32.pt", "file": str(checkpoint)}
    assert model_fields("open_clip:./ViT-B-32.pt") == {
        "model": "ViT-B-32",
        "pretrained": "ViT-B-32.pt",
        "file": str(checkpoint),
    }
    assert model_fields("open_clip:hf-hub:org/name")["model"] == "hf-hub:org/name"
    assert model_fields("hf:openai/clip-vit-base-patch32")["pretrained"] == "hf-hub"
    assert absolute_spec("open_clip:ViT-B-32@ViT-B-32.pt") == f"open_clip:ViT-B-32@{checkpoint}"
    assert absolute_spec("hf:openai/clip-vit-base-patch32") == "hf:openai/clip-vit-base-patch32"
    labels = {spec: model_label(spec) for spec in (
        "ViT-B-32/openai", "open_clip:ViT-B-16@ViT-B-32.pt", "ViT-B-32.pt", "demo",
        "open_clip:hf-hub:org/name", "hf:openai/clip-vit-base-patch32")}  # fmt: skip
    assert labels == {
        "ViT-B-32/openai": "ViT-B-32 openai",
        "open_clip:ViT-B-16@ViT-B-32.pt": "ViT-B-16 (ViT-B-32)",
        "ViT-B-32.pt": "ViT-B-32",
        "demo": "wca-demo-rn",
        "open_clip:hf-hub:org/name": "org/name",
        "hf:openai/clip-vit-base-patch32": "openai/clip-vit-base-patch32",
    }
    assert not any(str(tmp_path) in text for text in labels.values())


def test_two_checkpoints_of_one_name_keep_apart_in_file_names(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.pt").write_bytes(b"")
    specs = [f"open_clip:{tmp_path / folder / 'same.pt'}" for folder in "ab"]
    labels = model_labels([*specs, "ViT-B-32/openai"])
    assert labels["ViT-B-32/openai"] == "ViT-B-32 openai"
    assert len({labels[spec] for spec in specs}) == 2
    assert all(labels[spec].startswith("same ") and str(tmp_path) not in labels[spec]
               for spec in specs)  # fmt: skip


def test_output_paths_are_path_safe(tmp_path):
    values = {"dataset": "imagenet-a", "model": "open_clip:ViT-B-32/openai", "protocol": "pool"}
    path = output_path("r/{dataset}__{model}__{protocol}.json", values)
    assert path == Path("r/imagenet-a__open_clip-ViT-B-32-openai__pool.json")
    long_a, long_b = ("open_clip:arch@/" + "x" * 90 + f"/{d}/same.pt" for d in "ab")
    assert path_safe(long_a) != path_safe(long_b) and len(path_safe(long_a)) == 80
    assert "/" not in path_safe("../../etc") and path_safe("..") == "-"
    (tmp_path / "list.txt").write_text("a  # first\n\n  b\n")
    assert read_list(tmp_path / "list.txt") == ["a", "b"]


def test_an_adaptive_cell_writes_beside_the_fixed_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos" / "a").mkdir(parents=True)
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"")

    def output(*settings: str) -> str:
        cells = plan([str(weights)], ["imagefolder"], [str(tmp_path / "photos")],
                     settings=settings)  # fmt: skip
        return cells[0].output.name

    assert output() == "photos__model__pool.json"
    assert output("crop_budget=adaptive") == "photos__model__adaptive.json"
