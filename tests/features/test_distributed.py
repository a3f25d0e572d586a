"""Distributed extraction: `wca extract` and `wca eval` under torchrun (CPU, gloo, 2 processes
started by ``torch.distributed.run``), the ranks' barrier, and views made on the device."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import distributed as dist

from conftest import SUPPORT
from fake_encoder import FakeEncoder
from tiny_models import save_openai_state_dict
from wca.cli import main
from wca.crops import CropSpec
from wca.features import ShardCache, extract_features
from wca.features.cache import SHARD_TENSORS
from wca.features.distributed import RankError, Ranks, rank_device, resolve_timeout
from wca.options import RunOptions

CLASSES = ("red fox", "blue whale")
TIMEOUT = 600  # seconds a torchrun may take on a loaded machine (idle: about 10)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path | str]:
    """A tiny OpenAI-format model (loadable in any process), 2 classes x 4 JPEGs, sentences."""
    base = tmp_path_factory.mktemp("dist")
    generator = torch.Generator().manual_seed(1)
    for c, name in enumerate(CLASSES):
        for k in range(4):
            pixels = torch.randint(0, 256, (30 + 4 * c, 34 + 3 * k, 3), generator=generator)
            path = base / "images" / name.replace(" ", "_") / f"{k}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.to(torch.uint8).numpy()).save(path)
    sentences = base / "sentences.json"
    sentences.write_text(json.dumps({name: [f"a photo of a {name}."] for name in CLASSES}))
    return {
        "spec": save_openai_state_dict(base / "model"),
        "images": base / "images",
        "sentences": sentences,
    }


def _args(world, cache: Path, command: str = "extract") -> list[str]:
    return [
        command, "--dataset", "imagefolder", "--data-root", str(world["images"]),
        "--model", world["spec"], "--device", "cpu", "--cache-dir", str(cache),
        "--n-crops", "3", "--batch-size", "6", "--shard-size", "1", "--no-progress",
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(launch: list[str], entry: list[str], **popen) -> subprocess.Popen:
    """``python -m torch.distributed.run LAUNCH ENTRY``, one thread per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", *launch, *entry]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, **popen)


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _shards(cache: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_file(p) for p in sorted(cache.glob("*/*/shard-*.safetensors"))}


def _assert_same_features(reference: Path, cache: Path) -> None:
    first, second = _shards(reference), _shards(cache)
    assert first.keys() == second.keys() and len(first) == 8
    for name, tensors in first.items():
        assert second[name].keys() == tensors.keys()
        for key, value in tensors.items():
            assert torch.equal(second[name][key], value), (name, key)
    manifest = json.loads(next(cache.glob("*/*/manifest.json")).read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 8
    assert not list(cache.glob("*/*/shard-?????.json"))  # every rank's records merged


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory) -> Path:
    """The features of one process (same device, precision, batch size, one thread)."""
    cache = tmp_path_factory.mktemp("reference")
    with _one_thread():
        assert main(_args(world, cache)) == 0
    return cache


@pytest.mark.slow
def test_two_ranks_eval_matches_one_process(world, reference, tmp_path):
    out = tmp_path / "result.json"
    entry = ["-m", "wca", *_args(world, tmp_path / "cache", "eval")]
    entry += ["--descriptions", str(world["sentences"]), "--methods", "clip,wca"]
    entry += ["--n-run", "2", "--patch-n", "2", "--output", str(out)]
    launch = ["--nproc-per-node", "2", "--master-port", str(_free_port())]
    process = _torchrun(launch, entry, stdout=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr
    assert stdout.count("| wca |") == 1  # rank 0 alone scores and reports
    assert stderr.count("torchrun: 2 ranks share the feature pass: rank r encodes the cache") == 1
    assert set(json.loads(out.read_text())["results"]["methods"]) == {"clip", "wca"}
    _assert_same_features(reference, tmp_path / "cache")


@pytest.mark.slow
def test_dead_rank_is_named_and_the_rerun_resumes(world, reference, tmp_path):
    """Two one-rank "nodes"; rank 1 kills itself after its first shard (tests/dying_rank.py).
    Rank 0 fails naming it once the timeout passes; a rerun (here in one process) computes only
    the shards that are missing, keeping those of both ranks."""
    cache = tmp_path / "cache"
    port = str(_free_port())
    nodes = [
        _torchrun(
            ["--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1"]
            + ["--master-addr", "127.0.0.1", "--master-port", port],
            [str(SUPPORT / "dying_rank.py"), *_args(world, cache), "--dist-timeout", "4"],
            stdout=subprocess.DEVNULL,
        )
        for node in (0, 1)
    ]
    errors = [node.communicate(timeout=TIMEOUT)[1] for node in nodes]
    assert nodes[0].returncode != 0 and nodes[1].returncode != 0
    assert "wca: error: rank 1 of 2 did not finish the feature pass within 4 s" in errors[0]
    folder = next(cache.glob("*/*"))
    assert not (folder / "manifest.json").exists()  # rank 0 never got past the barrier
    kept = {p.name: p.stat().st_ino for p in folder.glob("shard-*.safetensors")}
    assert set(kept) == {f"shard-{s:05d}.safetensors" for s in (0, 1, 2, 4, 6)}
    assert (folder / "shard-00001.json").is_file()  # rank 1's record of its finished shard

    with _one_thread():
        assert main(_args(world, cache)) == 0
    assert {name: (folder / name).stat().st_ino for name in kept} == kept  # not recomputed
    _assert_same_features(reference, cache)


def test_shard_records_are_read_checked_and_merged(tmp_path):
    key = {"dataset": {"name": "mini", "split": None}}
    cache = ShardCache(tmp_path, key, num_images=4, shard_size=2)
    cache.write_shard(1, {name: torch.zeros(2, 1) for name in SHARD_TENSORS}, record=True)
    assert not cache.manifest_path.exists() and cache.record_path(1).is_file()
    assert ShardCache(tmp_path, key, 4, 2).load(1) is not None  # a rank's shard, resumable
    assert ShardCache(tmp_path, key, 4, 1).load(1) is None  # another layout: not that shard
    cache.merge_records()
    manifest = json.loads(cache.manifest_path.read_text())
    assert list(manifest["shards"]) == ["1"] and not manifest["complete"]
    assert not cache.record_path(1).exists()


def _two_ranks(timeout: float = 5.0) -> tuple[Ranks, Ranks]:
    store = dist.HashStore()
    return Ranks(0, 2, store, timeout), Ranks(1, 2, store, timeout)


def test_barrier_waits_for_every_rank():
    first, second = _two_ranks()
    thread = threading.Thread(target=second.barrier, args=("the test",))
    thread.start()
    first.barrier("the test")
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_failing_rank_stops_the_others_at_once_naming_it():
    first, second = _two_ranks(timeout=120)
    with pytest.raises(ValueError, match="unreadable"), second.together("the feature pass"):
        raise ValueError("image 3: unreadable")
    # named as failed, not as late: waiting out the timeout would say "did not finish"
    with pytest.raises(RankError, match=r"rank 1 of 2 failed in the feature pass: ValueError"):
        first.barrier("the feature pass")


def test_a_missing_rank_is_named_after_the_timeout():
    first, _ = _two_ranks(timeout=0.3)
    with pytest.raises(RankError, match=r"rank 1 of 2 did not finish the test within 0.3 s"):
        first.barrier("the test")


def test_timeout_and_device_settings(monkeypatch):
    monkeypatch.delenv("WCA_DIST_TIMEOUT", raising=False)
    assert resolve_timeout(None) == 1800 and resolve_timeout(2) == 2
    monkeypatch.setenv("WCA_DIST_TIMEOUT", "90")
    assert resolve_timeout(None) == 90
    monkeypatch.setenv("WCA_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="WCA_DIST_TIMEOUT"):
        resolve_timeout(None)
    with pytest.raises(ValueError, match="> 0"):
        resolve_timeout(0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_device("cpu") == "cpu"
    expected = "cuda:1" if torch.cuda.is_available() else "auto"
    assert rank_device("auto") == expected


@pytest.mark.parametrize("workers", [0, 1])
def test_views_on_the_device_equal_the_fast_path(workers):
    sizes = [(20 + 7 * i, 26 - 3 * i) for i in range(4)]
    dataset = [(Image.new("RGB", size, (40 * i, 90, 9 * i)), i % 2) for i, size in enumerate(sizes)]
    encoder = FakeEncoder()
    options = RunOptions(
        cache_dir=None, batch_size=5, num_workers=workers, progress=False, shard_size=3
    )
    crops = CropSpec(n_crops=4, alpha=0.5)
    cpu = extract_features(
        encoder, dataset, crops, options.model_copy(update={"views_on_device": False})
    )
    device = extract_features(
        encoder, dataset, crops, options.model_copy(update={"views_on_device": True})
    )
    assert torch.allclose(device.crop_emb, cpu.crop_emb, atol=1e-6, rtol=0)
    assert torch.allclose(device.image_emb, cpu.image_emb, atol=1e-6, rtol=0)
    assert torch.equal(device.boxes, cpu.boxes)
    with pytest.raises(ValueError, match="fast path"):
        on_device = options.model_copy(update={"views_on_device": True})
        extract_features(encoder, dataset, crops, on_device, fidelity=True)


@pytest.mark.slow
def test_several_cells_are_spread_over_the_ranks(world, tmp_path):
    """clip_benchmark's --distributed: with two cells, rank r runs cell r whole (its own feature
    pass, its own result file); rank 0 reports the sweep. Each result equals a one-process run."""
    import shutil

    roots = [tmp_path / "one", tmp_path / "two"]
    for root in roots:
        shutil.copytree(world["images"], root)
    template = str(tmp_path / "out" / "{dataset}.json")
    common = [
        "eval", "--dataset", "imagefolder", "--model", world["spec"], "--device", "cpu",
        "--n-crops", "3", "--batch-size", "6", "--no-progress", "--descriptions",
        str(world["sentences"]), "--methods", "clip,wca", "--n-run", "2", "--patch-n", "2",
        "--output", template, "--data-root", str(roots[0]), "--data-root", str(roots[1]),
    ]  # fmt: skip
    launch = ["--nproc-per-node", "2", "--master-port", str(_free_port())]
    entry = ["-m", "wca", *common, "--cache-dir", str(tmp_path / "cache")]
    process = _torchrun(launch, entry, stdout=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr
    assert stderr.count("sweep: 2 cells, 2 written, 0 skipped, 0 failed") == 1  # rank 0 alone
    assert stderr.count("torchrun: 2 ranks split the 2 cells: rank r runs the cells i") == 1
    spread = {
        name: json.loads((tmp_path / "out" / f"{name}.json").read_text()) for name in ("one", "two")
    }
    with _one_thread():
        assert main([*common, "--output", str(tmp_path / "single" / "{dataset}.json"),
                     "--cache-dir", str(tmp_path / "cache-single")]) == 0  # fmt: skip
    for name, document in spread.items():
        single = json.loads((tmp_path / "single" / f"{name}.json").read_text())
        for method in ("clip", "wca"):
            got, expected = (d["results"]["methods"][method] for d in (document, single))
            assert got["top1"]["runs"] == expected["top1"]["runs"], (name, method)
