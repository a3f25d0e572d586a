"""The expected tail accuracy (OGA, arXiv 2501.04352: the mean top-1 of the worst 10 % of
runs) in the result file, its table and ``wca report``, on constructed runs."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from wca import report
from wca.cli import main
from wca.evaluate import Evaluation, MethodResult, result_file
from wca.results import RunStats, expected_tail, read_result, tail_text


def shuffled(values, seed=0):
    values = list(values)
    random.Random(seed).shuffle(values)
    return values


def test_ten_runs_the_worst_one():
    runs = shuffled([60.0 + k for k in range(10)])
    assert expected_tail(runs) == 60.0
    assert tail_text(expected_tail(runs), len(runs)) == "60.00"


def test_twenty_runs_the_mean_of_the_two_worst():
    runs = shuffled([50.0, 52.0] + [70.0 + k for k in range(18)], seed=1)
    assert expected_tail(runs) == pytest.approx(51.0)
    assert tail_text(expected_tail(runs), 20) == "51.00"


def test_fewer_than_ten_runs_the_worst_run_said_as_such():
    runs = [57.5, 55.25, 58.0]
    assert expected_tail(runs) == 55.25
    assert tail_text(expected_tail(runs), len(runs)) == "55.25 (worst run)"
    assert expected_tail([42.0]) == 42.0


def test_a_tail_of_part_runs_weighs_the_edge_run_in_part():
    runs = shuffled([40.0, 46.0] + [90.0] * 13, seed=2)  # 15 runs: a tail of 1.5 runs
    assert expected_tail(runs) == pytest.approx((40.0 + 0.5 * 46.0) / 1.5)
    with pytest.raises(ValueError, match="no runs"):
        expected_tail([])


def test_run_stats_carry_the_tail_for_accuracies_and_none_from_older_files():
    runs = shuffled([60.0 + k for k in range(20)], seed=3)
    assert RunStats.of(runs, tail=True).tail == pytest.approx(60.5)
    assert RunStats.of(runs).tail is None  # calibration: lower is better, no tail
    older = RunStats.model_validate({"mean": 1.0, "std": 0.0, "runs": [1.0]})
    assert older.tail is None


def write(path: Path, wca: list[float], tail_field: bool = True) -> Path:
    """A result file as `wca eval` writes it, clip at 50 % in every run and wca at ``wca``;
    without ``tail_field`` as files written before the tail was stored."""
    runs = len(wca)
    methods = {
        "clip": MethodResult("clip", [50.0] * runs, [80.0] * runs, [40.0, 60.0], False),
        "wca": MethodResult("wca", wca, [90.0] * runs, [50.0, 70.0], True),
    }
    evaluation = Evaluation(methods, 10, runs, 60, 100, 0, "pool")
    config = {"model": "open_clip:ViT-B-32/openai"}
    document = result_file(
        evaluation, config, dataset="cub", model="ViT-B-32", pretrained="openai", primary="wca"
    )
    document.write(path)
    if not tail_field:
        data = json.loads(path.read_text())
        for method in data["results"]["methods"].values():
            for key in ("top1", "top5"):
                del method[key]["tail"]
        path.write_text(json.dumps(data))
    return path


def test_the_result_file_stores_the_tail_and_its_table_shows_it(tmp_path):
    path = write(tmp_path / "r.json", [58.0, 55.0, 57.0])
    document = read_result(path)
    assert document.results.methods["wca"].top1.tail == 55.0
    assert document.results.methods["wca"].top5.tail == 90.0
    table = document.table()
    assert "| method | top-1 (%) | tail top-1 (%) | top-5 (%) |" in table
    assert "| wca | 56.67 ± 1.25 | 55.00 (worst run) | 90.00 ± 0.00 |" in table
    assert "worst 10 % of runs" in table
    older = read_result(write(tmp_path / "old.json", [58.0, 55.0, 57.0], tail_field=False))
    assert older.results.methods["wca"].top1.tail is None
    assert "| wca | 56.67 ± 1.25 | 55.00 (worst run) |" in older.table()  # from the runs


def test_report_gives_the_tail_of_the_pooled_runs(tmp_path, capsys):
    folder = tmp_path / "results"
    write(folder / "a.json", [61.0, 62.0, 63.0, 64.0, 65.0])
    write(folder / "b.json", [59.0, 63.0, 64.0, 65.0, 64.0], tail_field=False)  # mean 63
    [_, wca] = report.load_rows([folder])
    record = wca.record()  # ten runs together: the worst of them, not each file's
    assert record["runs"] == 10 and record["top1_tail"] == 59.0
    assert record["top1_tail_worst_run"] is False
    out_csv = tmp_path / "t.csv"
    assert main(["report", str(folder), "--markdown", "--csv", str(out_csv)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    row = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert header[3:5] == ["top-1 (%)", "tail top-1 (%)"]
    assert row[2:5] == ["wca", "63.00 ± 1.79", "59.00"]
    assert any(line.startswith("tail: mean top-1 of the worst 10 % of runs") for line in lines)
    with out_csv.open() as handle:
        records = list(csv.DictReader(handle))
    assert float(records[1]["top1_tail"]) == 59.0 and records[1]["top1_tail_worst_run"] == "False"


def test_report_says_when_the_tail_is_the_worst_run(tmp_path, capsys):
    folder = tmp_path / "results"
    write(folder / "a.json", [58.0, 55.0, 57.0])
    assert main(["report", str(folder), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| wca | 56.67 ± 1.25 | 55.00 (worst run) |" in out
