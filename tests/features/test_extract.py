"""Feature extraction and the shard cache, with a small fake encoder (the Encoder interface)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import SUPPORT
from fake_encoder import FakeEncoder
from feature_world import TinyDataset, copy_features, extract, same_features
from wca import crops, preprocessing
from wca.features import MANIFEST, extract_features


def test_shapes_boxes_and_views_match_the_crop_sampler():
    dataset, encoder = TinyDataset(), FakeEncoder()
    features = extract(encoder, dataset, None)
    assert features.image_emb.shape == (7, 16)
    assert features.crop_emb.shape == (7, 5, 16)
    assert features.labels.tolist() == dataset.labels
    image, _ = dataset[4]
    boxes = crops.crop_boxes(image.height, image.width, 5, 0.5, 0.9, seed=3, image_index=4)
    assert torch.equal(features.boxes[4], boxes)
    views = preprocessing.fast_views(image, boxes, encoder.preprocessing)
    expected = FakeEncoder().encode_images(views)
    torch.testing.assert_close(features.image_emb[4], expected[0])
    torch.testing.assert_close(features.crop_emb[4], expected[1:])
    assert encoder.views == 7 * 6  # every view encoded once, batches packed across images


def test_batching_and_workers_do_not_change_features(tmp_path):
    dataset = TinyDataset()
    reference = extract(FakeEncoder(), dataset, None, batch_size=1000)
    for options in ({"batch_size": 5}, {"batch_size": 7, "num_workers": 1, "shard_size": 4}):
        features = extract(FakeEncoder(), dataset, None, **options)
        torch.testing.assert_close(features.crop_emb, reference.crop_emb)
        assert torch.equal(features.boxes, reference.boxes)


def test_fidelity_path_uses_the_model_preprocessing():
    dataset, encoder = TinyDataset(count=2), FakeEncoder()
    features = extract(encoder, dataset, None, fidelity=True)
    image, _ = dataset[1]
    views = preprocessing.fidelity_views(image, features.boxes[1], encoder.preprocess)
    torch.testing.assert_close(features.crop_emb[1], FakeEncoder().encode_images(views)[1:])


def test_cache_is_reused_without_encoding(tmp_path):
    dataset = TinyDataset()
    first = extract(FakeEncoder(), dataset, tmp_path)
    encoder = FakeEncoder()
    second = extract(encoder, dataset, tmp_path)
    assert encoder.calls == 0
    same_features(first, second)
    manifest = json.loads((second.source / MANIFEST).read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 3
    assert manifest["key"]["n_samples"] == 5 and manifest["key"]["seed"] == 3  # the cache key


def test_cache_key_separates_settings(tmp_path):
    dataset = TinyDataset()
    extract(FakeEncoder(), dataset, tmp_path)
    for options in ({"seed": 4}, {"alpha": 0.6}, {"n_crops": 4}, {"fp16_cache": True}):
        encoder = FakeEncoder()
        extract(encoder, dataset, tmp_path, **options)
        assert encoder.calls > 0, options
    encoder = FakeEncoder(seed=1)  # other weights
    extract(encoder, dataset, tmp_path)
    assert encoder.calls > 0


def test_killed_run_resumes_bit_identically(tmp_path):
    dataset = TinyDataset(count=10)
    uninterrupted = extract(FakeEncoder(), dataset, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        extract(FakeEncoder(fail_after=4), dataset, tmp_path / "b")  # 3 calls a shard
    folder = next((tmp_path / "b").glob("*/*"))
    assert sorted(p.name for p in folder.glob("shard-*")) == ["shard-00000.safetensors"]
    assert not list(folder.glob(".*tmp*"))  # no half-written files left behind
    encoder = FakeEncoder()
    resumed = extract(encoder, dataset, tmp_path / "b")
    assert encoder.views == 7 * 6  # only images 3..9
    same_features(uninterrupted, resumed)


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_corrupt_shard_is_detected_and_recomputed(tmp_path, damage):
    dataset = TinyDataset()
    clean = copy_features(extract(FakeEncoder(), dataset, tmp_path))
    shard = clean.source / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[-10] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[:8] = b"\xff" * 8
    shard.write_bytes(bytes(data))
    encoder = FakeEncoder()
    with pytest.warns(UserWarning, match="shard-00001"):
        again = extract(encoder, dataset, tmp_path)
    assert encoder.views == 3 * 6  # only the damaged shard
    same_features(clean, again)


def test_flipped_byte_without_verify_still_needs_intact_header(tmp_path):
    dataset = TinyDataset()
    clean = copy_features(extract(FakeEncoder(), dataset, tmp_path))
    shard = clean.source / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-4])
    with pytest.warns(UserWarning, match="size"):
        again = extract(FakeEncoder(), dataset, tmp_path, verify=False)
    same_features(clean, again)


def test_half_storage_and_chunks(tmp_path):
    features = extract(FakeEncoder(), TinyDataset(), tmp_path, fp16_cache=True)
    assert features.crop_emb.dtype == torch.float16
    chunks = list(features.chunks(2))
    assert [start for start, _ in chunks] == [0, 2, 3, 5, 6]  # never across a shard
    assert torch.equal(torch.cat([c.crop_emb for _, c in chunks]), features.crop_emb)
    assert torch.equal(torch.cat([c.labels for _, c in chunks]), features.labels)


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        extract(FakeEncoder(), TinyDataset(), None, alpha=0.95)
    with pytest.raises(ValueError, match="^n_crops: Input should be greater than or equal to 1"):
        extract(FakeEncoder(), TinyDataset(), None, n_crops=0)
    with pytest.raises(ValueError, match="no images"):
        extract(FakeEncoder(), TinyDataset(count=0), None)


@pytest.mark.parametrize("workers", [0, 1])
def test_decode_errors_surface_as_they_are(tmp_path, workers):
    class Broken(TinyDataset):
        def __getitem__(self, index):
            if index == 4:
                raise ValueError("img4.jpg: not a readable image")
            return super().__getitem__(index)

    with pytest.raises(ValueError, match="img4") as raised:
        extract(FakeEncoder(), Broken(), tmp_path, num_workers=workers)
    assert str(raised.value) == "img4.jpg: not a readable image"  # one line, from any worker
    del raised  # its traceback holds the loader: freed now, its workers stop at once
    encoder = FakeEncoder()
    extract(encoder, TinyDataset(), tmp_path)  # same key: shard 0 (images 0-2) kept
    assert encoder.views == 4 * 6


def test_manifest_is_json_with_checksums(tmp_path: Path):
    features = extract(FakeEncoder(), TinyDataset(), tmp_path)
    manifest = json.loads((features.source / MANIFEST).read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for entry in manifest["shards"].values():
            assert len(entry["sha256"]) == 64
            assert (features.source / entry["file"]).stat().st_size == entry["bytes"]


def _folder_dataset(root: Path, per_class: int = 3):
    """An image folder of 3 classes, images in path order (shard_size 3: one class a shard)."""
    from wca.datasets.folder import imagefolder

    for c in range(3):
        for k in range(per_class):
            path = root / f"c{c}" / f"{k}.png"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                TinyDataset(count=12)[3 * c + k][0].save(path)
    return imagefolder(root)


def test_changed_image_is_recomputed(tmp_path):
    root, cache = tmp_path / "images", tmp_path / "cache"
    dataset = _folder_dataset(root)
    extract(FakeEncoder(), dataset, cache)
    changed = dataset.paths[4]  # shard 1
    Image.new("RGB", (61, 47), (250, 10, 10)).save(changed)  # edited in place, same name
    encoder = FakeEncoder()
    with pytest.warns(UserWarning, match=r"shard-00001.*differ .*: 1 of 3 in content \(c1/1.png\)"):
        cached = copy_features(extract(encoder, _folder_dataset(root), cache))
    assert encoder.views == 3 * 6  # one shard, not the cache
    same_features(cached, extract(FakeEncoder(), _folder_dataset(root), None))
    assert len(list(cache.glob("*/*"))) == 1  # the same cache folder, nothing orphaned
    # touching a file (same bytes, new mtime) costs a read of it, not a re-encode
    stamp = changed.stat()
    os.utime(changed, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    encoder = FakeEncoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extract(encoder, _folder_dataset(root), cache)
    assert encoder.views == 0


def test_deleting_an_image_keeps_the_shards_before_it(tmp_path):
    root, cache = tmp_path / "images", tmp_path / "cache"
    dataset = _folder_dataset(root, per_class=4)  # 12 images, shards of 3
    extract(FakeEncoder(), dataset, cache)
    dataset.paths[7].unlink()  # image 7, in shard 2: images 7.. shift down one place
    smaller = _folder_dataset(root, per_class=0)
    assert len(smaller) == 11
    encoder = FakeEncoder()
    features = copy_features(extract(encoder, smaller, cache))
    assert encoder.views == (11 - 6) * 6  # shards 0 and 1 kept
    same_features(features, extract(FakeEncoder(), smaller, None))
    folder = next(cache.glob("*/*"))
    assert sorted(p.name for p in folder.glob("shard-*")) == sorted(
        f"shard-{s:05d}.{kind}" for s in range(4) for kind in ("safetensors", "images.json")
    )  # the files of shard 4 (past the end) deleted
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["complete"] and manifest["num_images"] == 11
    assert all(len(e["images_sha256"]) == 64 for e in manifest["shards"].values())


@pytest.mark.slow
def test_identical_runs_write_identical_shard_bytes(tmp_path):
    """safetensors writes several metadata entries in a random order (per process)."""
    script = (
        f"import sys; sys.path.insert(0, {str(SUPPORT)!r});"
        "from feature_world import TinyDataset, extract;"
        "from fake_encoder import FakeEncoder; extract(FakeEncoder(), TinyDataset(), sys.argv[1])"
    )
    for run in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / run)], check=True)
    shards = [sorted((tmp_path / run).glob("*/*/shard-*")) for run in ("a", "b", "c")]
    for files in zip(*shards, strict=True):
        assert len({f.read_bytes() for f in files}) == 1, files[0].name


def test_the_02_form_still_works_and_warns_with_the_new_spelling():
    encoder, dataset = FakeEncoder(), TinyDataset()
    with pytest.warns(FutureWarning, match=r"CropSpec\(n_crops=.., alpha"):
        old = extract_features(
            encoder, dataset, 5, 0.5, seed=3, batch_size=8, shard_size=3, progress=False
        )
    new = extract(encoder, dataset, None)
    assert torch.equal(old.crop_emb, new.crop_emb) and torch.equal(old.boxes, new.boxes)
    assert old.source is None  # the 0.2 form kept features in memory unless given cache_dir
