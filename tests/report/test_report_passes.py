"""Encoder passes per image in `wca report` (the views/img column and the CSV's summary of
them), and results of another crop budget never pooled with the fixed one's, on constructed
result files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wca import report
from wca.cli import main
from wca.errors import SettingError
from wca.evaluate import Evaluation, MethodResult, result_file
from wca.results import Settings

RUNS, IMAGES, PATCH_N = 3, 40, 10
ADAPTIVE = torch.tensor([8, 13] * (IMAGES // 2))  # crops read: 9 and 14 passes, mean 11.5


def write(path: Path, budget: str | None = None, counts: torch.Tensor | None = None) -> Path:
    """A result file of clip and wca on the same images; ``budget`` recorded when given."""
    correct = np.random.default_rng(len(path.name)).random((RUNS, IMAGES)) < 0.7
    scored = {
        name: MethodResult(
            name, (100 * correct.mean(1)).tolist(), [90.0] * RUNS, [70.0], name == "wca",
            ece=[0.1] * RUNS, nll=[0.5] * RUNS, brier=[0.3] * RUNS, correct=correct,
        )
        for name in ("clip", "wca")
    }  # fmt: skip
    evaluation = Evaluation(scored, IMAGES, RUNS, PATCH_N, 60, 0, "pool", counts=counts)
    settings = {
        "dataset": "cub", "model": "open_clip:ViT-B-32/openai", "crop_strategy": "random",
        "n_crops": 60, "patch_n": PATCH_N, "n_run": RUNS, "seed": 0, "protocol": "pool",
        "images_sha256": "0123456789abcdef", **({"crop_budget": budget} if budget else {}),
    }  # fmt: skip
    result = result_file(evaluation, settings, dataset="cub", model="ViT-B-32", pretrained="openai")
    return result.write(path)


def without_passes(path: Path) -> Path:
    """``path`` as written before the passes record."""
    document = json.loads(path.read_text())
    for method in document["results"]["methods"].values():
        del method["views"]
    path.write_text(json.dumps(document))
    return path


def test_the_views_column_is_the_recorded_mean_and_the_csv_has_its_summary(tmp_path, capsys):
    write(tmp_path / "adaptive.json", counts=ADAPTIVE)
    out_csv = tmp_path / "t.csv"
    assert main(["report", str(tmp_path), "--markdown", "--csv", str(out_csv)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    column = header.index("views/img")
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:4]]
    assert [(row[2], row[column]) for row in cells] == [("clip", "1.0"), ("wca", "11.5")]
    with out_csv.open() as handle:
        clip, wca = csv.DictReader(handle)
    assert float(wca["views_per_image"]) == 11.5 and float(clip["views_per_image"]) == 1.0
    assert (wca["views_min"], wca["views_max"]) == ("9", "14")
    assert [float(wca[f"views_p{q}"]) for q in (10, 50, 90)] == [9.0, 11.5, 14.0]
    assert json.loads(wca["views_histogram"]) == {"9": 20, "14": 20}
    assert float(wca["acc1"]) == pytest.approx(float(wca["top1_mean"]) / 100)


def test_files_before_the_record_show_one_plus_n(tmp_path):
    without_passes(write(tmp_path / "old.json"))
    wca = report.load_rows([tmp_path])[1].record()
    assert wca["method"] == "wca" and wca["views_per_image"] == 1 + PATCH_N
    assert json.loads(wca["views_histogram"]) == {str(1 + PATCH_N): IMAGES}


def test_another_budget_is_another_row_and_an_old_file_is_the_fixed_one(tmp_path):
    without_passes(write(tmp_path / "old.json"))  # no budget recorded: the fixed one
    write(tmp_path / "fixed.json", budget="fixed")
    write(tmp_path / "adaptive.json", budget="adaptive", counts=ADAPTIVE)
    rows = report.load_rows([tmp_path])
    assert [row.name for row in rows] == [
        "clip [crop_budget adaptive]", "wca [crop_budget adaptive]",
        "clip [crop_budget fixed]", "wca [crop_budget fixed]",
    ]  # fmt: skip
    adaptive, fixed = rows[1].record(), rows[3].record()
    assert (adaptive["files"], adaptive["views_per_image"]) == (1, 11.5)
    assert (fixed["files"], fixed["views_per_image"]) == (2, 1 + PATCH_N)  # old and fixed pool
    assert rows[1].delta is not None and rows[3].delta is not None  # each to its own clip


def test_a_setting_added_after_a_file_reads_as_its_default():
    old = Settings(dataset="cub")  # written before the budget existed
    assert old.identity()["crop_budget"] == "fixed"
    assert old.differs_from(Settings(dataset="cub", crop_budget="fixed")) is None
    assert old.differs_from(Settings(dataset="cub", crop_budget="adaptive")) == "crop_budget"


def test_passes_of_other_images_are_a_skipped_file(tmp_path, capsys):
    path = write(tmp_path / "bad.json", counts=ADAPTIVE)
    document = json.loads(path.read_text())
    document["results"]["methods"]["wca"]["views"]["histogram"] = {"9": 3}
    path.write_text(json.dumps(document))
    write(tmp_path / "good.json")
    assert main(["report", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    expected = f"passes of 3 images, not {IMAGES} or {IMAGES * RUNS}"
    assert f"{path}: results.methods.wca.views: {expected}" in err


def test_passes_of_every_run_are_read(tmp_path, capsys):
    """An adaptive result counts every image of every run (its runs read other crop seeds)."""
    path = write(tmp_path / "runs.json", counts=ADAPTIVE)
    document = json.loads(path.read_text())
    document["results"]["methods"]["wca"]["views"]["histogram"] = {"9": IMAGES * RUNS}
    path.write_text(json.dumps(document))
    assert main(["report", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    row = next(line for line in captured.out.splitlines() if " wca " in line)
    assert captured.err == "" and "9.0" in row.split()


def test_a_baseline_of_other_settings_pairs_the_adaptive_row_with_the_fixed_one(tmp_path):
    write(tmp_path / "fixed.json", budget="fixed")
    write(tmp_path / "adaptive.json", budget="adaptive", counts=ADAPTIVE)
    rows = {row.name: row for row in report.load_rows([tmp_path], baseline="wca")}
    assert rows["wca [crop_budget adaptive]"].delta_note == "the baseline"  # each to its own
    rows = report.load_rows([tmp_path], baseline="wca[crop_budget=fixed]")
    by_name = {row.name: row for row in rows}
    adaptive, fixed = by_name["wca [crop_budget adaptive]"], by_name["wca [crop_budget fixed]"]
    assert fixed.delta_note == "the baseline" and adaptive.delta is not None  # one row
    assert by_name["clip [crop_budget adaptive]"].delta is not None  # to the fixed wca as well


@pytest.mark.parametrize(
    "text", ["wca[crop_budget=fixed", "[crop_budget=fixed]", "wca[budget=fixed]", "wca[n_run]"]
)
def test_a_malformed_baseline_names_the_setting(text):
    with pytest.raises(SettingError, match="baseline"):
        report.Baseline.parse(text)
