"""The evaluation pipeline as a library (wca.pipeline, wca.sweep, the result schema): the same
numbers, cache key and features as before the restructuring, from the CLI and from Python."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from golden_world import EVAL_FLAGS, GOLDEN, build_world
from mini_datasets import make_imagefolder, write_image
from wca import sweep
from wca.cli import main
from wca.config import resolve_config
from wca.datasets import Dataset
from wca.errors import SettingError
from wca.options import RunOptions
from wca.pipeline import check_scorable, run_cell
from wca.results import SCHEMA_VERSION, read_result


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("golden")
    return {"base": base, **build_world(base)}


def _compare_numbers(document: dict, golden: dict) -> None:
    for name, expected in golden["results"]["methods"].items():
        got = document["results"]["methods"][name]
        for key in ("top1", "top5"):
            assert got[key]["runs"] == pytest.approx(expected[key]["runs"], abs=1e-9), name
        assert got["per_class_top1"] == pytest.approx(expected["per_class_top1"]), name
        for key, value in golden["metrics_by_method"][name].items():
            assert document["metrics_by_method"][name][key] == pytest.approx(value), name


def test_eval_gives_the_golden_numbers_cache_key_and_features(world, tmp_path, capsys):
    golden = json.loads(GOLDEN.read_text())
    out, cache = tmp_path / "result.json", tmp_path / "cache"
    argv = ["eval", *EVAL_FLAGS, "--data-root", str(world["images"]), "--descriptions",
            str(world["texts"]), "--model", world["spec"], "--cache-dir", str(cache),
            "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    document = json.loads(out.read_text())
    _compare_numbers(document, golden)
    manifest = next(cache.rglob("manifest.json"))
    key = json.loads(manifest.read_text().replace(str(world["base"]), "<base>"))["key"]
    expected = dict(golden["cache_key"])
    for keys in (key, expected):  # the weights fingerprint holds the file's mtime
        keys["encoder"] = keys["encoder"].split("#")[0]
    assert key == expected
    rows = []
    for shard in sorted(manifest.parent.glob("shard-*.safetensors")):
        tensors = load_file(shard)
        for i in range(len(tensors["labels"])):
            rows.append((tensors, i))
    assert len(rows) == len(golden["features"])
    for (tensors, i), expected in zip(rows, golden["features"], strict=True):
        assert int(tensors["labels"][i]) == expected["label"]
        assert tensors["boxes"][i].tolist() == expected["boxes"]
        assert float(tensors["image_emb"][i].double().sum()) == pytest.approx(
            expected["image_sum"], abs=1e-5
        )
        assert float(tensors["crop_emb"][i].double().abs().sum()) == pytest.approx(
            expected["crop_abs"], abs=1e-5
        )
    assert document["schema_version"] == SCHEMA_VERSION
    assert document["dataset"] == "images"  # an image folder is named by its folder


def test_run_cell_from_python_equals_the_cli(world, tmp_path):
    golden = json.loads(GOLDEN.read_text())
    flags = {flag: EVAL_FLAGS[i + 1] for i, flag in enumerate(EVAL_FLAGS) if flag == "--methods"}
    config = resolve_config(
        "imagefolder",
        overrides={
            "data_root": str(world["images"]),
            "model": world["spec"],
            "methods": flags["--methods"],
            "n_crops": 8,
            "n_run": 3,
            "patch_n": 4,
            "seed": 3,
        },
    )
    options = RunOptions(descriptions=world["texts"], cache_dir=None, progress=False)
    result = run_cell(config, options, output=tmp_path / "r.json")
    _compare_numbers(result.model_dump(mode="json"), golden)
    again = read_result(tmp_path / "r.json")
    assert again.results.methods["wca"].top1 == result.results.methods["wca"].top1
    assert again.config.descriptions_sha256 and again.config.fidelity is False
    correct = again.results.methods["wca"].correct_matrix(3, again.results.n_images)
    assert (correct.mean(1) * 100).tolist() == pytest.approx(again.results.methods["wca"].top1.runs)


def test_outputs_are_never_written_inside_the_dataset(world, tmp_path, capsys):
    inside = Path(world["images"]) / "red_fox" / "result.json"
    argv = ["eval", *EVAL_FLAGS, "--data-root", str(world["images"]), "--descriptions",
            str(world["texts"]), "--model", world["spec"], "--cache-dir", "none",
            "--output", str(inside)]  # fmt: skip
    assert main(argv) == 2
    assert "is inside the dataset's folder" in capsys.readouterr().err
    assert not inside.exists()


def test_an_evaluation_of_one_class_is_refused_before_any_model(tmp_path, capsys):
    """One class to choose from is every method's answer (100 %): eval, sweeps and run_cell
    refuse it, naming the dataset, before any model loads or any file is written."""
    root = make_imagefolder(tmp_path / "owls", {"owl": 3})
    out = tmp_path / "r.json"
    argv = ["eval", "--dataset", "imagefolder", "--data-root", str(root), "--model", "demo",
            "--cache-dir", "none", "--output", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"wca: error: {root}: ") and "one class to choose from ('owl')" in line
    assert not out.exists()
    config = resolve_config("imagefolder", overrides={"data_root": str(root), "model": "demo"})

    def no_model():
        raise AssertionError("a model was loaded")

    with pytest.raises(ValueError, match="one class to choose from"):
        run_cell(config, RunOptions(cache_dir=None), encoder=no_model, output=out)
    assert not out.exists()


def test_an_evaluation_of_one_image_is_refused(tmp_path):
    """An accuracy over one image is 0 or 100 %: never a result."""
    image = write_image(tmp_path / "owl" / "0.jpg")
    dataset = Dataset(name="owls", split="all", root=tmp_path, paths=[image], labels=[0],
                      classnames=["owl", "cat"], descriptions_name=None)  # fmt: skip
    with pytest.raises(ValueError, match="has one image; an evaluation needs at least two"):
        check_scorable(dataset)
    check_scorable(
        Dataset(
            name="owls",
            split="all",
            root=tmp_path,
            paths=[image, image],
            labels=[0, 1],
            classnames=["owl", "cat"],
            descriptions_name=None,
        )
    )


def test_run_cell_checks_its_arguments_before_any_work(tmp_path):
    """A folder as the output, or settings that are not an EvalConfig, are refused at once
    (naming the setting), not after the whole cell was computed."""
    root = make_imagefolder(tmp_path / "pets", {"cat": 2, "dog": 2})
    config = resolve_config("imagefolder", overrides={"data_root": str(root), "model": "demo"})

    def no_model():
        raise AssertionError("a model was loaded")

    with pytest.raises(SettingError, match="is a folder; the result is a file") as folder:
        run_cell(config, RunOptions(cache_dir=None), encoder=no_model, output=tmp_path)
    assert folder.value.setting == "output"
    with pytest.raises(SettingError, match="expected an EvalConfig, got a dict") as mapping:
        run_cell({"dataset": "imagefolder", "data_root": str(root)}, encoder=no_model)
    assert mapping.value.setting == "config"


@pytest.mark.parametrize("spec", ["foo:bar", "open_clip:", "hf: padded"])
def test_a_sweep_refuses_a_malformed_model_spec_when_planned(tmp_path, spec):
    root = make_imagefolder(tmp_path / "pets", {"cat": 2, "dog": 2})
    with pytest.raises(SettingError, match="model spec") as error:
        sweep.plan(["demo", spec], ["imagefolder"], [str(root)])
    assert error.value.setting == "model"


def test_an_output_that_can_never_be_written_is_refused_when_planned(tmp_path):
    """/dev/null/x.json (under a file) is refused before any work, saying why, not after the
    cell was computed; run_cell too."""
    root = make_imagefolder(tmp_path / "pets", {"cat": 2, "dog": 2})
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for output in (tmp_path / "a-file" / "x.json", tmp_path / "a-file" / "deeper" / "x.json"):
        with pytest.raises(SettingError, match=f"cannot be written: {blocker} is not a folder"):
            sweep.plan(["demo"], ["imagefolder"], [str(root)], template=str(output))
        config = resolve_config("imagefolder", overrides={"data_root": str(root)})
        with pytest.raises(SettingError, match="is not a folder") as error:
            run_cell(config, RunOptions(cache_dir=None), encoder=lambda: 1 / 0, output=output)
        assert error.value.setting == "output"
