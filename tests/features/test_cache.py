"""The feature cache: a full disk reported in one line, and processes that fill one cache at
once share its shards."""

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
from safetensors import SafetensorError

import wca.features.cache as cache_module
from cache_worker import IMAGES, SHARD_SIZE
from cli_world import build_world, extract_args, shards
from conftest import SUPPORT
from fake_encoder import FakeEncoder
from feature_world import TinyDataset, extract, same_features
from wca.cli import main
from wca.features import MANIFEST

TIMEOUT = 600  # seconds a worker may take on a loaded machine (idle: a few): a hang guard only


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The command-line tests' tiny model, image folder and description set."""
    return build_world(tmp_path_factory.mktemp("world"))


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
        "shard-00000.images.json",
        "shard-00000.safetensors",
    ]  # no temporary file, no shard lock, nothing of the shard that did not fit
    manifest = json.loads((folder / MANIFEST).read_text())
    assert list(manifest["shards"]) == ["0"] and not manifest["complete"]

    assert main(extract_args(world, cache)) == 0  # space again: resumes after shard 0
    reference, resumed = shards(tmp_path / "reference"), shards(cache)
    assert reference.keys() == resumed.keys() and len(reference) == 3
    for name, tensors in reference.items():
        for key, value in tensors.items():
            assert torch.equal(resumed[name][key], value), (name, key)


# ------------------------------------------------------------------ concurrent fills


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
