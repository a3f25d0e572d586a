"""`wca report` (rows, CSV with clip_benchmark's build columns, markdown, plot, the paper's
numbers) and `wca reproduce` end to end on miniature datasets with a tiny model. The report's
items (settings, calibration, paired intervals, the plot's layout): test_issue18_report.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mini_datasets import make_dtd, make_pets
from tiny_models import save_openai_state_dict
from wca import report
from wca.cli import main
from wca.encoders import Encoder
from wca.evaluate import Evaluation, MethodResult, result_file

BUILD_COLUMNS = ("acc1", "acc5", "mean_per_class_recall", "dataset", "model", "pretrained")


def _write(path: Path, dataset: str, model: str, pretrained: str, wca: list[float]) -> Path:
    """A result file as `wca eval` writes it, with clip at 50 % and wca at ``wca`` per run."""
    methods = {
        "clip": MethodResult("clip", [50.0] * len(wca), [80.0] * len(wca), [40.0, 60.0], False),
        "wca": MethodResult("wca", wca, [90.0] * len(wca), [50.0, None, 70.0], True),
    }
    evaluation = Evaluation(methods, 10, len(wca), 60, 100, 0, "pool")
    config = {"model": f"open_clip:{model}/{pretrained}", "seconds": {"features": 3, "scoring": 1}}
    document = result_file(
        evaluation, config, dataset=dataset, model=model, pretrained=pretrained, primary="wca"
    )
    return document.write(path)


@pytest.fixture
def results(tmp_path) -> Path:
    folder = tmp_path / "results"
    _write(folder / "cub-a.json", "cub", "ViT-B-32", "openai", [56.0, 58.0])
    _write(folder / "more" / "cub-b.json", "cub", "ViT-B-32", "openai", [57.0, 57.0])
    _write(folder / "dtd.json", "dtd", "ViT-B-32", "laion2b_s34b_b79k", [40.0, 42.0])
    (folder / "notes.json").write_text('{"not": "a result"}')
    return folder


def test_rows_pool_the_runs_of_files_of_one_cell(results):
    skipped: list[str] = []
    rows = report.load_rows([results], on_skip=skipped.append)  # files of equal settings pool
    assert skipped == [f"{results / 'notes.json'}: not a wca result file (no results.methods)"]
    assert [(r.dataset, r.pretrained, r.method) for r in rows] == [
        ("cub", "openai", "clip"),
        ("cub", "openai", "wca"),
        ("dtd", "laion2b_s34b_b79k", "clip"),
        ("dtd", "laion2b_s34b_b79k", "wca"),
    ]
    record = rows[1].record()
    assert record["top1_mean"] == pytest.approx(57.0) and record["runs"] == 4
    assert record["top1_std"] == pytest.approx((0.5) ** 0.5)  # runs 56, 58, 57, 57
    assert record["acc1"] == pytest.approx(0.57) and record["files"] == 2
    assert record["mean_per_class_recall"] == pytest.approx(0.60)  # classes 50 and 70 %
    assert record["views_per_image"] == 61 and rows[0].record()["views_per_image"] == 1
    assert record["seconds"] == 4 and record["model_fullname"] == "ViT-B-32 openai"


def test_paper_numbers_and_differences(results):
    records, missing = report.with_paper(report.load_rows([results], on_skip=print))
    cub_wca = records[1]
    assert cub_wca["paper_top1"] == 56.91  # ViT-B/32 WCA on CUB as the paper publishes it
    assert cub_wca["diff_top1"] == pytest.approx(57.0 - 56.91)
    assert records[0]["paper_top1"] == 51.21  # CLIP on CUB
    assert records[3]["paper_top1"] is None  # LAION weights are not the paper's
    assert ("cub", "ViT-B-32", "wca") not in missing and ("dtd", "ViT-B-32", "wca") in missing
    published = report.paper_numbers()
    assert len(published) == 5 * 6 and published["places365", "ViT-L-14", "wca"] == 42.23


def test_report_command_writes_csv_markdown_and_plot(results, tmp_path, capsys):
    out_csv, png = tmp_path / "table.csv", tmp_path / "top1.png"
    args = ["report", str(results), "--csv", str(out_csv), "--plot", str(png), "--markdown"]
    assert main([*args, "--paper"]) == 0
    out, err = capsys.readouterr()
    assert "| cub | ViT-B-32 openai | wca | 57.00 ± 0.71 |" in out and "| +0.09 |" in out
    assert "paper cells with no result" in out
    with out_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and set(BUILD_COLUMNS + ("task", "model_fullname")) <= set(rows[0])
    assert rows[1]["task"] == "zeroshot_classification" and float(rows[1]["acc1"]) == 0.57
    for dataset in ("cub", "dtd"):  # one figure per dataset
        assert (tmp_path / f"top1-{dataset}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wca: skipped 1 file(s) that are not readable results" in err
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "nothing: no such file or folder" in capsys.readouterr().err


def test_result_files_read_as_clip_benchmark_build_reads_them(results):
    """clip_benchmark's build: metrics flattened into the row, model_fullname added."""
    data = json.loads((results / "cub-a.json").read_text())
    row = {**data["metrics"], **data}
    row["model_fullname"] = row["model"] + " " + row["pretrained"]
    assert row["acc1"] == pytest.approx(0.57) and row["model_fullname"] == "ViT-B-32 openai"
    assert row["task"] == "zeroshot_classification" and row["dataset"] == "cub"


@pytest.mark.slow
def test_reproduce_runs_the_paper_table_and_resumes(tmp_path, descriptors_dir, monkeypatch, capsys):
    # OpenAI's own file name, so the report matches the tiny model to the paper's ViT-B/32
    spec = save_openai_state_dict(tmp_path / "model")
    weights = Path(spec.split(":", 1)[1]).rename(tmp_path / "model" / "ViT-B-32.pt")
    dtd_images = ["banded/banded_0002.jpg", "braided/braided_0003.jpg"]  # one image is no result
    make_dtd(tmp_path / "data" / "dtd", descriptors_dir, {"test1": dtd_images})
    make_pets(tmp_path / "data" / "oxford_pets", descriptors_dir, {"test": [0, 36]})
    views: list[int] = []
    original = Encoder.encode_images
    monkeypatch.setattr(
        Encoder, "encode_images", lambda s, p: views.append(len(p)) or original(s, p)
    )
    args = [
        "reproduce", "--data-root", str(tmp_path / "data" / "{dataset}"),
        "--models", f"open_clip:{weights}", "--datasets", "dtd,oxford_pets",
        "--descriptions-dir", str(descriptors_dir), "--cache-dir", str(tmp_path / "cache"),
        "--output-dir", str(tmp_path / "paper"), "--csv", str(tmp_path / "paper.csv"),
        "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert sum(views) == 4 * 101  # the authors' pool of 100 crops + the full view
    files = sorted((tmp_path / "paper").glob("*.json"))
    assert [f.name.split("__")[0] for f in files] == ["dtd", "oxford_pets"]
    document = json.loads(files[1].read_text())
    assert list(document["results"]["methods"]) == [
        "clip",
        "clip-e",
        "clip-d",
        "waffle",
        "cupl",
        "wca",
    ]
    assert (document["results"]["n_run"], document["results"]["patch_n"]) == (20, 60)
    assert document["config"]["model_file"] == str(weights)
    assert "| oxford_pets | ViT-B-32 " in out and "| 89.89 |" in out  # the paper's WCA on Pets
    with (tmp_path / "paper.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 12

    views.clear()
    assert main(args) == 0  # resumed: every cell is complete
    assert views == [] and capsys.readouterr().err.count("skip ") == 2


def test_reproduce_gives_imagenet_configs_the_published_name_lists(tmp_path, descriptors_dir):
    from wca.options import RunOptions
    from wca.reproduce import config_files, config_options, model_specs

    assert model_specs(["ViT-B-32/openai,hf:/m", "ViT-L-14/openai"]) == [
        "open_clip:ViT-B-32/openai",
        "hf:/m",
        "open_clip:ViT-L-14/openai",
    ]
    configs = config_files()
    assert len(configs) == 10 and config_files(None, ["imagenet-a"])[0].stem == "imagenet-a"
    options = RunOptions(descriptions_dir=descriptors_dir)
    imagenet = config_options(options, config_files(None, ["imagenet"])[0], None, "imagenet")
    assert imagenet.allow_duplicate_classes
    assert imagenet.descriptions == descriptors_dir / "cupl-original" / "imagenet_prompts_base.json"
    cub = config_options(options, config_files(None, ["cub"])[0], None, "cub")
    assert not cub.allow_duplicate_classes
    assert main(["reproduce", "--data-root", "d", "--datasets", "cub"]) == 2
    assert main(["reproduce", "--data-root", "d/{dataset}", "--datasets", "mnist"]) == 2
