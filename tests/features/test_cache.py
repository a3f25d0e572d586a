"""The feature cache: images identified by content as well as size and mtime, a full disk
reported in one line, and processes that fill one cache at once share its shards."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import SafetensorError

import wca.features.cache as cache_module
from cache_worker import IMAGES, SHARD_SIZE
from cli_world import build_world, extract_args, shards
from conftest import SUPPORT
from fake_encoder import FakeEncoder
from feature_world import TinyDataset, copy_features, extract, same_features
from wca.cli import main
from wca.features import MANIFEST
from wca.files import FINGERPRINT_BLOCK, FileLock, file_fingerprint

TIMEOUT = 600  # seconds a worker may take on a loaded machine (idle: a few): a hang guard only


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The command-line tests' tiny model, image folder and description set."""
    return build_world(tmp_path_factory.mktemp("world"))


# ------------------------------------------------------------------ image identity


def _png_folder(root: Path) -> list[Path]:
    """3 classes x 2 uncompressed PNGs: images of one size have files of one size."""
    paths = []
    for c in range(3):
        for k in range(2):
            path = root / f"c{c}" / f"{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            TinyDataset(count=6)[2 * c + k][0].resize((40, 30)).save(path, compress_level=0)
            paths.append(path)
    return paths


def test_same_size_replacement_with_restored_mtime_is_recomputed(tmp_path):
    from wca.datasets.folder import imagefolder

    root, cache = tmp_path / "images", tmp_path / "cache"
    paths = _png_folder(root)
    extract(FakeEncoder(), imagefolder(root), cache, shard_size=2)
    target = paths[2]  # shard 1
    before = target.stat()
    Image.new("RGB", (40, 30), (250, 10, 10)).save(target, compress_level=0)  # as `cp -p` does
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    encoder = FakeEncoder()
    with pytest.warns(UserWarning, match="shard-00001.*images changed on disk"):
        cached = copy_features(extract(encoder, imagefolder(root), cache, shard_size=2))
    assert encoder.views == 2 * 6  # that shard alone
    same_features(cached, extract(FakeEncoder(), imagefolder(root), None, shard_size=2))
    encoder = FakeEncoder()
    extract(encoder, imagefolder(root), cache, shard_size=2)
    assert encoder.views == 0


def test_shards_of_an_older_wca_are_recomputed_once(tmp_path):
    from wca.datasets.folder import imagefolder

    root, cache = tmp_path / "images", tmp_path / "cache"
    _png_folder(root)
    first = copy_features(extract(FakeEncoder(), imagefolder(root), cache, shard_size=2))
    manifest_path = next(cache.glob(f"*/*/{MANIFEST}"))
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["shards"].values():  # as wca 0.3.0 wrote them: size and mtime only
        del entry["identity"]
    manifest_path.write_text(json.dumps(manifest))

    encoder = FakeEncoder()
    with pytest.warns(UserWarning, match="older wca.*recomputing its shards once") as caught:
        same_features(extract(encoder, imagefolder(root), cache, shard_size=2), first)
    assert encoder.views == 6 * 6 and len(caught) == 1  # one warning, not one per shard
    encoder = FakeEncoder()
    extract(encoder, imagefolder(root), cache, shard_size=2)
    assert encoder.views == 0


def test_fingerprint_reads_both_ends_of_a_file(tmp_path):
    path = tmp_path / "big.bin"
    data = bytearray(os.urandom(3 * FINGERPRINT_BLOCK))
    path.write_bytes(data)
    original = file_fingerprint(path, len(data))
    for where, seen in ((0, True), (len(data) - 1, True), (len(data) // 2, False)):
        changed = bytearray(data)
        changed[where] ^= 0xFF
        path.write_bytes(changed)
        assert (file_fingerprint(path, len(data)) != original) is seen, where
    small = tmp_path / "small.bin"
    small.write_bytes(data[:1000])
    assert file_fingerprint(small, 1000) != file_fingerprint(path, len(data))


# ------------------------------------------------------------------ disk full


def _disk_full_after(monkeypatch, shards: int, how: str) -> None:
    """The shard writer writes ``shards`` shards, then finds the disk full halfway through a
    temporary file, as safetensors reports it or as an OS error."""
    real = cache_module.save_file
    written = []

    def save_file(tensors, path, metadata=None):
        if len(written) < shards:
            written.append(path)
            return real(tensors, path, metadata=metadata)
        Path(path).write_bytes(b"half a shard")
        if how == "safetensors":
            raise SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache_module, "save_file", save_file)


@pytest.mark.parametrize("how", ["safetensors", "oserror"])
def test_disk_full_is_one_line_and_keeps_the_finished_shards(
    world,
    tmp_path,
    monkeypatch,
    capsys,
    how,
):
    cache = tmp_path / "cache"
    assert main(extract_args(world, tmp_path / "reference")) == 0
    capsys.readouterr()
    with monkeypatch.context() as patch:
        _disk_full_after(patch, shards=1, how=how)
        assert main(extract_args(world, cache)) == 1
    err = capsys.readouterr().err
    folder = next(cache.glob("*/*"))
    assert err.count("\n") == 1 and err.startswith(f"wca: error: {folder}: ")
    assert "no space left on device" in err and "shard-00001.safetensors" in err
    assert "finished shards are kept" in err and "(errno ENOSPC)" in err
    assert sorted(p.name for p in folder.iterdir()) == [
        MANIFEST,
        "manifest.lock",
        "shard-00000.safetensors",
    ]  # no temporary file, no shard lock left
    manifest = json.loads((folder / MANIFEST).read_text())
    assert list(manifest["shards"]) == ["0"] and not manifest["complete"]

    assert main(extract_args(world, cache)) == 0  # space again: resumes after shard 0
    reference, resumed = shards(tmp_path / "reference"), shards(cache)
    assert reference.keys() == resumed.keys() and len(reference) == 3
    for name, tensors in reference.items():
        for key, value in tensors.items():
            assert torch.equal(resumed[name][key], value), (name, key)


# ------------------------------------------------------------------ concurrent fills


def test_a_lock_file_removed_by_its_holder_is_locked_anew(tmp_path):
    path = tmp_path / "shard-00000.lock"
    first, second = FileLock(path), FileLock(path)
    assert first.acquire(wait=False)
    assert f"pid {os.getpid()} on " in second.holder()
    assert not second.acquire(wait=False)  # another open file of the same process: excluded
    first.release(remove=True)
    assert not path.exists()
    assert second.acquire(wait=False) and path.exists()
    second.release()
    assert path.exists()  # kept unless asked


def _worker(cache: Path, *hold: Path) -> subprocess.Popen:
    command = [sys.executable, str(SUPPORT / "cache_worker.py"), str(cache)]
    if hold:
        command += ["--hold", *map(str, hold)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_file(path: Path, process: subprocess.Popen) -> None:
    """Until ``path`` exists (the process created it); fails if the process ends first."""
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"worker ended ({process.returncode}): {process.stderr.read()}")
        time.sleep(0.01)


def _wait_for_line(process: subprocess.Popen, text: str) -> list[str]:
    """Read the process's stderr until a line holds ``text``; fails at its end."""
    lines = []
    for line in process.stderr:
        lines.append(line)
        if text in line:
            return lines
    pytest.fail(f"worker ended without {text!r}: {''.join(lines)}")


def _views(process: subprocess.Popen) -> int:
    out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, err
    return json.loads(out)["views"]


def _assert_complete_and_exact(cache: Path) -> None:
    """The cache holds every shard once, equal to one process's features, and no lock."""
    encoder = FakeEncoder()
    features = extract(encoder, TinyDataset(IMAGES), cache, shard_size=SHARD_SIZE)
    assert encoder.views == 0  # all loaded
    fresh = extract(FakeEncoder(), TinyDataset(IMAGES), None, shard_size=SHARD_SIZE)
    same_features(features, fresh)
    folder = features.source
    assert not list(folder.glob("shard-*.lock")) and not list(folder.glob(".*"))
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["complete"] and len(manifest["shards"]) == IMAGES // SHARD_SIZE


@pytest.mark.slow
def test_two_processes_on_one_cache_encode_each_shard_once(tmp_path):
    cache, started, release = tmp_path / "cache", tmp_path / "started", tmp_path / "release"
    first = _worker(cache, started, release)  # stops inside its first shard, holding it
    _wait_for_file(started, first)
    second = _worker(cache)
    lines = _wait_for_line(second, "waiting for shard")  # it took every shard it could
    assert "which another process is encoding (pid " in lines[-1]
    release.touch()
    views = [_views(first), _views(second)]
    assert sum(views) == IMAGES * 6 and min(views) > 0  # every view once, both worked
    _assert_complete_and_exact(cache)


@pytest.mark.slow
def test_a_shard_whose_process_was_killed_is_taken_over(tmp_path):
    cache, started = tmp_path / "cache", tmp_path / "started"
    first = _worker(cache, started, tmp_path / "never")  # holds its shards until killed
    _wait_for_file(started, first)
    second = _worker(cache)
    _wait_for_line(second, "waiting for shard")
    first.kill()  # SIGKILL: no clean-up, its locks die with it
    first.communicate(timeout=TIMEOUT)
    assert _views(second) == IMAGES * 6  # the first wrote nothing: the second did it all
    _assert_complete_and_exact(cache)
