"""`wca eval --crop-budget adaptive` end to end with a tiny open_clip model: each image's crops
read in rounds, its prefix cached, a killed run resumed with the same numbers, a larger budget
encoding only the missing crops, a fixed pass's crops reused, runs that differ by crop seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli_world import EncoderCalls, build_world, count_encoder_calls, extract_args, shards
from wca.cli import main
from wca.encoders import Encoder
from wca.results import read_result


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path | str]:
    return build_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def image_calls(monkeypatch) -> EncoderCalls:
    return count_encoder_calls(monkeypatch, Encoder)


def adaptive_args(world, cache: Path, output: Path, *extra: str) -> list[str]:
    return [
        "eval", "--dataset", "imagefolder", "--data-root", str(world["images"]),
        "--descriptions", str(world["texts"]), "--model", world["spec"],
        "--cache-dir", str(cache), "--output", str(output), "--n-crops", "12", "--n-run", "1",
        "--patch-n", "4", "--batch-size", "16", "--shard-size", "4", "--no-progress",
        "--methods", "clip,wca,zero", "--crop-budget", "adaptive", "--min-crops", "2",
        "--crops-per-round", "2", "--margin-z", "6", *extra,
    ]  # fmt: skip


def stored(cache: Path) -> list[int]:
    """Each image's crops in the prefix stores of ``cache``."""
    paths = sorted(cache.glob("*/*/shard-*.safetensors"))
    return [n for path in paths for n in load_file(path)["counts"].tolist()]


def methods(output: Path) -> dict:
    return json.loads(output.read_text())["results"]["methods"]


def test_adaptive_eval_reads_prefixes_and_reuses_them(world, tmp_path, image_calls, capsys):
    cache, output = tmp_path / "cache", tmp_path / "result.json"
    assert main(adaptive_args(world, cache, output)) == 0
    config = json.loads(output.read_text())["config"]
    assert (config["crop_budget"], config["stop_rule"], config["margin_z"]) == (
        "adaptive", "margin", 6.0
    )  # fmt: skip
    first = stored(cache)
    assert len(first) == 9 and len(set(first)) > 1 and max(first) < 12
    assert sum(image_calls.views) == 9 + sum(first)  # full views and the crops read, once
    views = methods(output)["wca"]["views"]  # the result records each image's passes
    assert views["mean"] == pytest.approx(1 + sum(first) / 9) and views["max"] == 1 + max(first)

    image_calls.views.clear()
    assert main(adaptive_args(world, cache, output)) == 0
    assert image_calls.views == []  # judged on the stored crops alone
    assert methods(output) == methods(tmp_path / "result.json")

    image_calls.views.clear()  # a looser rule and a larger N: only the crops past the prefixes
    looser = adaptive_args(world, cache, tmp_path / "looser.json", "--margin-z", "10",
                           "--n-crops", "16")  # fmt: skip
    assert main(looser) == 0
    longer = stored(cache)
    assert sum(longer) > sum(first) and all(b >= a for a, b in zip(first, longer, strict=True))
    assert sum(image_calls.views) == sum(longer) - sum(first)


def test_killed_adaptive_run_resumes_with_the_same_numbers(world, tmp_path, image_calls, capsys):
    assert main(adaptive_args(world, tmp_path / "reference", tmp_path / "reference.json")) == 0
    image_calls.views.clear()
    image_calls.fail_after = 3
    args = adaptive_args(world, tmp_path / "cache", tmp_path / "result.json")
    assert main(args) == 130
    assert len(shards(tmp_path / "cache")) < 3
    image_calls.fail_after = None
    assert main(args) == 0
    reference, resumed = shards(tmp_path / "reference"), shards(tmp_path / "cache")
    assert reference.keys() == resumed.keys()
    for name, tensors in reference.items():
        for key, value in tensors.items():
            assert torch.equal(resumed[name][key], value), (name, key)
    for shard in (tmp_path / "reference").glob("*/*/shard-*.safetensors"):
        twin = next((tmp_path / "cache").glob(f"*/*/{shard.name}"))
        assert twin.read_bytes() == shard.read_bytes()
    assert methods(tmp_path / "result.json") == methods(tmp_path / "reference.json")


def test_adaptive_eval_reads_a_fixed_pass_crops(world, tmp_path, image_calls, capsys):
    cache = tmp_path / "cache"
    fixed = extract_args(world, cache)
    fixed[fixed.index("--n-crops") + 1] = "12"
    assert main(fixed) == 0
    image_calls.views.clear()
    assert main(adaptive_args(world, cache, tmp_path / "result.json")) == 0
    assert image_calls.views == []


def test_adaptive_needs_a_crop_method(world, tmp_path, capsys):
    args = adaptive_args(world, tmp_path / "cache", tmp_path / "result.json")
    args[args.index("--methods") + 1] = "clip"
    assert main(args) != 0
    error = capsys.readouterr().err
    assert "--crop-budget" in error and "reads crops" in error


def test_a_fixed_eval_reads_prefixes_that_reach_its_n(world, tmp_path, image_calls, capsys):
    cache = tmp_path / "cache"
    adaptive = adaptive_args(world, cache, tmp_path / "adaptive.json", "--min-crops", "6")
    assert main(adaptive) == 0
    assert min(stored(cache)) >= 6
    fixed = adaptive_args(world, cache, tmp_path / "fixed.json", "--crop-budget", "fixed",
                          "--n-crops", "6")  # fmt: skip
    image_calls.views.clear()
    assert main(fixed) == 0
    assert image_calls.views == []  # every image's first 6 crops were stored
    fresh = [*fixed[: fixed.index("--cache-dir") + 1], str(tmp_path / "fresh"),
             *fixed[fixed.index("--cache-dir") + 2 :]]  # fmt: skip
    fresh[fresh.index("--output") + 1] = str(tmp_path / "fresh.json")
    assert main(fresh) == 0
    assert sum(image_calls.views) == 9 * 7
    for name, method in methods(tmp_path / "fresh.json").items():
        reused = methods(tmp_path / "fixed.json")[name]
        assert reused["top1"]["runs"] == pytest.approx(method["top1"]["runs"])
        assert reused["views"] == method["views"]


def test_adaptive_runs_differ_by_their_crop_seed(world, tmp_path, image_calls, capsys):
    one = adaptive_args(world, tmp_path / "cache", tmp_path / "one.json")
    assert main(one) == 0
    first = stored(tmp_path / "cache")
    image_calls.views.clear()
    assert main([*one, "--n-run", "3", "--output", str(tmp_path / "three.json")]) == 0
    assert len(list((tmp_path / "cache").glob("*/*"))) == 3  # a prefix store per crop seed
    reads = stored(tmp_path / "cache")  # seeds 0 (reused), 1 and 2
    assert sum(image_calls.views) == 2 * 9 + sum(reads) - sum(first)
    wca, alone = methods(tmp_path / "three.json")["wca"], methods(tmp_path / "one.json")["wca"]
    assert len(wca["top1"]["runs"]) == 3 and wca["top1"]["runs"][0] == alone["top1"]["runs"][0]
    assert wca["views"]["mean"] == pytest.approx(1 + sum(reads) / len(reads))
    assert sum(wca["views"]["histogram"].values()) == 3 * 9  # every image of every run
    table = read_result(tmp_path / "three.json").table()
    assert "3 runs, run r reading each image's adaptive prefix of its" in table
    capsys.readouterr()
    assert main(["report", str(tmp_path / "three.json")]) == 0  # every run's passes are read
    assert "skipped" not in capsys.readouterr().err


def test_extract_fills_the_prefix_store_that_eval_reads(world, tmp_path, image_calls, capsys):
    cache = tmp_path / "cache"
    args = adaptive_args(world, cache, tmp_path / "result.json")
    extract = ["extract", *args[1:]]
    for option in ("--output", "--n-run", "--patch-n", "--methods"):  # eval's alone
        at = extract.index(option)
        del extract[at : at + 2]
    assert main(extract) == 0
    assert f"9 images, {9 + sum(stored(cache))} views in" in capsys.readouterr().out
    image_calls.views.clear()
    assert main(args) == 0
    assert image_calls.views == []
