"""torchvision's datasets under clip_benchmark's names: tiny copies of torchvision's layouts
(CIFAR-10's pickled batches, MNIST's idx files) written here, read by torchvision itself."""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import CIFAR10

from fake_encoder import FakeEncoder
from feature_world import extract
from wca.cli import main
from wca.datasets import DATASETS, load_dataset

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]  # fmt: skip


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar10(tmp_path, monkeypatch) -> tuple[Path, np.ndarray, list[int]]:
    """CIFAR-10's python layout with 4 test images; torchvision checks each file's MD5, so the
    published checksums are replaced by those of these files (torchvision's check still runs)."""
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    labels = [3, 0, 9, 3]

    def dump(name: str, entry: dict) -> list[str]:
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle)
        return [name, _md5(folder / name)]

    batch = {"data": images.reshape(4, -1), "labels": labels}
    train = [dump(f"data_batch_{i}", batch) for i in range(1, 6)]
    test = [dump("test_batch", batch)]
    meta = dump("batches.meta", {"label_names": CIFAR_CLASSES})
    monkeypatch.setattr(CIFAR10, "train_list", train)
    monkeypatch.setattr(CIFAR10, "test_list", test)
    monkeypatch.setattr(CIFAR10, "meta", {"filename": meta[0], "key": "label_names",
                                          "md5": meta[1]})  # fmt: skip
    return tmp_path / "cifar", images, labels


def _idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 + {1: 0x01, 3: 0x03}[array.ndim]  # unsigned bytes, 1 or 3 dimensions
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(struct.pack(">I", magic) + dims + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist(tmp_path) -> tuple[Path, np.ndarray]:
    """MNIST's raw idx files (3 test digits, 1 training digit)."""
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    digits = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _idx(raw / "t10k-images-idx3-ubyte", digits)
    _idx(raw / "t10k-labels-idx1-ubyte", np.array([7, 2, 1]))
    _idx(raw / "train-images-idx3-ubyte", digits[:1])
    _idx(raw / "train-labels-idx1-ubyte", np.array([5]))
    return tmp_path / "mnist", digits


def test_clip_benchmarks_torchvision_names_are_registered():
    for name in ("cifar10", "cifar100", "stl10", "mnist", "fgvc_aircraft", "cars", "flowers"):
        assert name in DATASETS


def test_cifar10_is_read_by_torchvision_with_its_class_names(cifar10):
    root, images, labels = cifar10
    dataset = load_dataset("cifar10", root)
    assert (dataset.name, dataset.split, len(dataset)) == ("cifar10", "test", 4)
    assert dataset.classnames == CIFAR_CLASSES and dataset.labels == labels
    image, label = dataset[2]
    assert label == 9 and image.mode == "RGB"
    assert np.array_equal(np.asarray(image), images[2].transpose(1, 2, 0))


def test_mnist_digits_are_named_as_clip_benchmark_names_them(mnist):
    root, digits = mnist
    dataset = load_dataset("mnist", root)
    assert dataset.classnames == [str(digit) for digit in range(10)]
    assert dataset.labels == [7, 2, 1]
    image, _ = dataset[1]
    assert image.mode == "RGB" and np.array_equal(np.asarray(image)[..., 0], digits[1])


def test_array_sets_are_cached_and_a_changed_file_recomputes(cifar10, tmp_path, monkeypatch):
    root, _, _ = cifar10
    cache = tmp_path / "cache"
    extract(FakeEncoder(), load_dataset("cifar10", root), cache, shard_size=2)
    encoder = FakeEncoder()
    extract(encoder, load_dataset("cifar10", root), cache, shard_size=2)
    assert encoder.views == 0
    batch = root / "cifar-10-batches-py" / "test_batch"
    with open(batch, "rb") as handle:
        entry = pickle.load(handle)
    entry["data"] = 255 - entry["data"]
    with open(batch, "wb") as handle:
        pickle.dump(entry, handle)
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(batch)]])
    encoder = FakeEncoder()
    with pytest.warns(UserWarning, match="its images differ"):
        extract(encoder, load_dataset("cifar10", root), cache, shard_size=2)
    assert encoder.views == 4 * 6  # every image again (5 crops and the full view each)


def test_a_missing_set_says_download_fetches_it(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["eval", "--dataset", "stl10", "--data-root", str(tmp_path / "empty"),
            "--model", "demo", "--cache-dir", "none"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"wca: error: {tmp_path / 'empty'}: not the expected layout: <root>/")
    assert err.endswith("set download to fetch it (pass --download)")
