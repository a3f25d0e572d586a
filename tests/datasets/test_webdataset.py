"""clip_benchmark's webdataset shards (``wds/NAME``): tiny shards written here with tarfile, read
by index, cached and resumed like a folder, from a folder or the Hugging Face cache."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fake_encoder import FakeEncoder
from feature_world import extract, same_features
from wca.cli import main
from wca.datasets import load_dataset

CLASSES = ["red square", "green circle", "blue bar"]
TEMPLATES = ["a photo of a {c}.", "a drawing of the {c}."]


def _image(label: int, index: int) -> Image.Image:
    pixels = np.zeros((24, 20, 3), dtype=np.uint8)
    pixels[..., label] = 100 + 7 * index  # one colour per class, a shade per sample
    return Image.fromarray(pixels)


def write_shards(root: Path, per_shard: int = 3, shards: int = 2, fmt: str = "png") -> list:
    """clip_benchmark's layout: classnames.txt, the templates, test/nshards.txt, test/N.tar
    with KEY.<image> and KEY.cls per sample; the samples as (image, label), in order."""
    (root / "test").mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")
    samples = []
    for shard in range(shards):
        with tarfile.open(root / "test" / f"{shard}.tar", "w") as archive:
            for k in range(per_shard):
                index = shard * per_shard + k
                label = index % len(CLASSES)
                image = _image(label, index)
                data = io.BytesIO()
                image.save(data, format="WEBP" if fmt == "webp" else "PNG", lossless=True)
                for name, payload in ((f"{index:06d}.{fmt}", data.getvalue()),
                                      (f"{index:06d}.cls", str(label).encode())):  # fmt: skip
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))
                samples.append((image, label))
    return samples


def test_shards_read_by_index_with_their_names_and_templates(tmp_path):
    samples = write_shards(tmp_path / "wds", fmt="webp")
    dataset = load_dataset("wds/tiny", tmp_path / "wds")
    assert (dataset.name, dataset.split, len(dataset)) == ("wds/tiny", "test", 6)
    assert dataset.classnames == CLASSES
    assert dataset.templates == ["a photo of a {}.", "a drawing of the {}."]
    assert dataset.labels == [label for _, label in samples]
    for index in (4, 0, 5):  # any order: a loader worker reads by index
        image, label = dataset[index]
        assert label == samples[index][1]
        assert np.array_equal(np.asarray(image), np.asarray(samples[index][0]))
    assert str(dataset.paths[4]).endswith("test/1.tar#000004")


def test_features_of_shards_are_cached_and_a_changed_shard_recomputed(tmp_path):
    root, cache = tmp_path / "wds", tmp_path / "cache"
    write_shards(root)
    first = extract(FakeEncoder(), load_dataset("wds/tiny", root), cache, shard_size=3)
    encoder = FakeEncoder()
    again = extract(encoder, load_dataset("wds/tiny", root), cache, shard_size=3)
    assert encoder.views == 0  # resumed: every cache shard is complete
    same_features(first, again)
    with tarfile.open(root / "test" / "1.tar", "w") as archive:  # shard 1 rewritten
        for index in range(3, 6):
            data = io.BytesIO()
            _image(2, index + 9).save(data, format="PNG")
            for name, payload in ((f"{index:06d}.png", data.getvalue()),
                                  (f"{index:06d}.cls", b"2")):  # fmt: skip
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    encoder = FakeEncoder()
    with pytest.warns(UserWarning, match="its images differ"):
        extract(encoder, load_dataset("wds/tiny", root), cache, shard_size=3)
    assert encoder.views == 3 * 6  # the second cache shard's 3 images, 6 views each


def test_a_sample_without_its_label_is_named(tmp_path):
    write_shards(tmp_path, shards=1)
    with tarfile.open(tmp_path / "test" / "0.tar", "a") as archive:
        info = tarfile.TarInfo("lonely.jpg")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(ValueError, match=r"0\.tar: sample 'lonely' has an image but no \.cls"):
        load_dataset("wds/tiny", tmp_path)


@pytest.mark.slow
def test_eval_on_shards_runs_clip_and_the_shards_templates_without_descriptions(tmp_path, capsys):
    write_shards(tmp_path / "wds")
    out = tmp_path / "r.json"
    argv = ["eval", "--dataset", "wds/tiny", "--data-root", str(tmp_path / "wds"), "--model",
            "demo", "--n-crops", "2", "--patch-n", "2", "--n-run", "1", "--cache-dir", "none",
            "--no-progress", "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "wca: skipped clip-d, waffle, cupl, wca: their texts are missing" in err
    result = json.loads(out.read_text())
    assert list(result["results"]["methods"]) == ["clip", "clip-e"]
    assert result["dataset"] == "wds/tiny" and result["results"]["n_images"] == 6
    assert result["config"]["descriptions"] == "the class names and the dataset's templates " \
        "(no descriptions)"


@pytest.fixture
def hub_cache(monkeypatch, tmp_path):
    """A Hugging Face cache holding one dataset snapshot, and a Hub that refuses connections."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    snapshot = cache / "datasets--org--wds_tiny" / "snapshots" / "0123abcd"
    write_shards(snapshot)
    (cache / "datasets--org--wds_tiny" / "refs").mkdir()
    (cache / "datasets--org--wds_tiny" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)
    return snapshot


@pytest.mark.parametrize("root", ["org/wds_tiny", "hf://datasets/org/wds_tiny",
                                  "https://huggingface.co/datasets/org/wds_tiny/tree/main"])
def test_a_hub_repository_is_read_from_the_cache_offline(hub_cache, root):
    dataset = load_dataset("wds/tiny", root)
    assert len(dataset) == 6 and dataset.root == hub_cache


def test_an_uncached_hub_repository_offline_is_one_line(hub_cache, capsys):
    argv = ["eval", "--dataset", "wds/other", "--data-root", "org/wds_other", "--model",
            "demo", "--cache-dir", "none"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "wca: error: org/wds_other: no such folder, nor a dataset repository in the Hugging "
        "Face cache, and the Hub cannot be reached (offline?): run once online, or give the "
        "shards' folder"
    )
