"""`wca demo` end to end at a reduced size, `wca demo --export`, and `wca demo train`."""

from __future__ import annotations

import json

import numpy
import open_clip
import pytest
import torch

from wca.cli import main
from wca.config import MethodConfig
from wca.datasets import load_dataset
from wca.demo.train import TrainConfig, normalise, train
from wca.demo.world import DemoTestSet
from wca.results import read_result


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--output", str(out), "--per-class", "1", "--n-crops", "6", "--n-run", "2"]
    assert main(args + ["--patch-n", "6"]) == 0
    printed = capsys.readouterr().out
    legend = printed.split("legend:\n", 1)[1].splitlines()
    assert [line.split(":")[0].strip() for line in legend[:6]] == [
        "clip", "clip-d", "cupl", "wca", "wca-tuned", "ECE"]  # fmt: skip
    assert f"next: `wca report {out} --baseline clip`" in printed
    results = json.loads((out / "results.json").read_text())["results"]
    assert set(results["methods"]) >= {"clip", "clip-d", "cupl", "wca"}
    for method in results["methods"].values():
        assert 0 <= method["top1"]["mean"] <= 100
        assert len(method["top1"]["runs"]) == 2
    assert results["n_images"] == 24
    assert (out / "explanation.png").stat().st_size > 0
    assert "wca" in (out / "results.md").read_text()
    document = read_result(out / "results.json")  # the result schema, like wca eval's
    assert document.dataset == "wca-demo" and document.config.n_crops == 6
    assert document.results.methods["wca"].calibration is not None
    wca_options = document.results.methods["wca"].options  # every option, as wca eval's
    assert wca_options == MethodConfig(name="wca").resolved_options()


def test_export_reads_back_as_an_imagefolder(tmp_path):
    assert main(["demo", "--export", str(tmp_path), "--per-class", "2"]) == 0
    original = DemoTestSet(per_class=2)
    loaded = load_dataset("imagefolder", tmp_path / "images")
    assert loaded.classnames == original.classnames
    assert len(loaded) == len(original)
    for index in (0, 17, len(original) - 1):
        (image, label), (expected_image, expected_label) = loaded[index], original[index]
        assert label == expected_label
        assert numpy.array_equal(numpy.asarray(image), numpy.asarray(expected_image))
    names = json.loads((tmp_path / "classnames.json").read_text())
    assert names == original.classnames
    assert set(json.loads((tmp_path / "cupl.json").read_text())) == set(names)
    assert set(json.loads((tmp_path / "clip-d.json").read_text())) == set(names)
    assert (tmp_path / "wca-demo-rn.pt").is_file() and (tmp_path / "wca-demo-rn.json").is_file()


def test_demo_rejects_bad_sizes(capsys):
    assert main(["demo", "--per-class", "0"]) == 2
    assert "--per-class must be >= 1" in capsys.readouterr().err


def test_training_saves_what_an_openai_loader_rebuilds(tmp_path):
    path = tmp_path / "tiny.pt"
    model = train(TrainConfig(steps=2, batch_size=8, warmup_steps=1), path, log=lambda _: None)
    loaded = open_clip.load_openai_model(str(path), device="cpu")
    images = normalise(torch.rand(2, 3, 64, 64))
    tokens = open_clip.tokenize(["a red circle.", "a zorbel with a tiny blue circle on the side."])
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images), loaded.encode_image(images), atol=1e-4)
        assert torch.allclose(model.encode_text(tokens), loaded.encode_text(tokens), atol=1e-4)


@pytest.mark.slow
def test_training_is_seeded(tmp_path):
    config = TrainConfig(steps=3, batch_size=8, warmup_steps=1, frozen_text_steps=1)
    a = train(config, tmp_path / "a.pt", log=lambda _: None).state_dict()
    b = train(config, tmp_path / "b.pt", log=lambda _: None).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_rejects_bad_steps(tmp_path, capsys):
    assert main(["demo", "train", "--output", str(tmp_path / "m.pt"), "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _few_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
