"""Smoke test: every benchmark script runs at its ``--quick`` size and prints its table, so the
scripts in benchmarks/ cannot rot. The speeds themselves are not checked (they depend on the
machine); what is checked is that every row was measured and that the proposed variants give
the library's results."""

from __future__ import annotations

import importlib
import math
import sys
import time
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(capsys, script: str, *args: str) -> str:
    """Run ``benchmarks/<script>.py`` in this process (as ``python benchmarks/<script>.py``
    would, with benchmarks/ on the path) and return what it printed."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        module = importlib.import_module(script)
        assert module.main(list(args)) == 0
    finally:
        sys.path.remove(str(BENCHMARKS))
    return capsys.readouterr().out


def tables(output: str) -> list[list[list[str]]]:
    """The body rows of every markdown table printed, in order."""
    lines = output.splitlines()
    found = []
    for header, line in enumerate(lines):
        if line.startswith("|-"):
            rows = []
            for body in lines[header + 1 :]:
                if not body.startswith("|"):
                    break
                rows.append([cell.strip() for cell in body.strip("|").split("|")])
            found.append(rows)
    return found


def table_rows(output: str) -> list[list[str]]:
    """The body rows of the last markdown table printed."""
    return tables(output)[-1]


def test_preprocess_quick(capsys):
    output = run(capsys, "preprocess", "--quick")
    assert "machine: " in output and "torch " in output
    rows, profile = tables(output)
    assert sorted({row[1] for row in rows}) == ["0", "1"]  # both worker counts measured
    assert len(rows) == 10 and all(float(row[2]) > 0 for row in rows)
    assert len(profile) == 10 and all(float(row[1]) > 0 for row in profile)
    agreement = next(line for line in output.splitlines() if line.startswith("view agreement"))
    assert float(agreement.rsplit(" ", 1)[1]) < 1e-4  # the fast path's views, before and now


def test_extract_quick(capsys):
    rows = table_rows(run(capsys, "extract", "--quick"))
    labels = ["fp32 batch 4 workers 0", "bf16 batch 4 workers 1 float_views"]
    assert [row[0] for row in rows] == labels
    assert all(float(row[1]) > 0 and float(row[3]) > 0 for row in rows)


def test_identity_quick(capsys):
    rows = table_rows(run(capsys, "identity", "--quick"))
    assert len(rows) == 5 and [row[0].split(",")[0] for row in rows[2:4]] == ["reuse check"] * 2
    assert all(float(cell) > 0 for row in rows for cell in row[1:])


@pytest.mark.slow
def test_startup_quick(capsys):
    rows = table_rows(run(capsys, "startup", "--quick"))
    assert [row[0] for row in rows] == ["`wca eval --alpha 2`"]
    assert all(float(cell) > 0 for cell in rows[0][1:])


@pytest.mark.slow
def test_distributed_quick(capsys):
    rows = table_rows(run(capsys, "distributed", "--quick"))
    assert [row[0] for row in rows] == [
        "1 process, OMP_NUM_THREADS=2",
        "torchrun 2 processes, OMP_NUM_THREADS=1",
        "2 processes / 1 process",
    ]
    # a quick run can take less than the timer's resolution: numbers, never a crash on zero
    assert all(float(row[1]) >= 0 for row in rows[:2])
    assert all(math.isnan(float(row[2])) or float(row[2]) >= 0 for row in rows)  # nan: untimed


def test_scoring_quick(capsys):
    output = run(capsys, "scoring", "--quick")
    rows = table_rows(output)
    assert [row[0] for row in rows] == ["library", "per-run"]
    assert all(float(row[4]) < 1e-9 for row in rows)  # both ways score WCA identically
    per_head = tables(output)[-2]
    assert {"zero", "mta", "awt", "wca-paper"} <= {row[0] for row in per_head}
    assert all(float(row[1]) > 0 for row in per_head)


def test_scoring_online_quick(capsys):
    output = run(capsys, "scoring", "--quick", "--online-only")
    rows = table_rows(output)
    names = ["tda", "tda+wca", "dmn", "boostadapter", "onzeta", "lazsl (beside awt)"]
    assert [row[0] for row in rows] == names
    assert all(float(row[1]) > 0 and float(row[2]) > 0 and float(row[3]) > 0 for row in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: the GPU mode would run")
@pytest.mark.parametrize("script", ["preprocess", "extract"])
def test_gpu_mode_is_skipped_without_cuda(capsys, script):
    output = run(capsys, script, "--device", "cuda", "--quick")
    assert "GPU mode skipped" in output


@pytest.mark.slow
def test_views_quick(capsys):
    output = run(capsys, "views", "--quick")
    rows = table_rows(output)
    assert [row[0] for row in rows] == ["random", "diverse", "bifta", "grid", "rrc"]
    assert all(len(row) == 3 for row in rows)  # N=1 and N=4 measured for every strategy


@pytest.mark.slow
def test_anytime_wall_quick(capsys):
    """Extraction at the default adaptive budget against fixed N, both timed in one run: the
    adaptive pass reads fewer views, each image at least its full view and min_crops crops."""
    (rows,) = tables(run(capsys, "anytime_wall", "--quick"))
    assert [row[0] for row in rows] == ["fixed", "adaptive"]
    assert float(rows[0][1]) == 9.0  # N = 8 in the quick mode, and the full view
    assert 5.0 <= float(rows[1][1]) <= 9.0
    assert all(float(row[2]) > 0 and 0 <= float(row[5]) <= 100 for row in rows)


@pytest.mark.slow
def test_anytime_quick(capsys, tmp_path):
    """The anytime-views study at its smallest: the fixed-N curve, both stopping rules swept,
    the default budget per order, a peer on WCA's stops and as its own stopping head, the plot."""
    plot = tmp_path / "anytime.png"
    output = run(capsys, "anytime", "--quick", "--plot", str(plot))
    fixed, rules, per_order, peers, own = tables(output)
    assert [row[0] for row in fixed] == ["1", "2", "4", "6", "8"]  # N <= 8 in the quick mode
    swept = [row for row in rules if row[0] in ("margin", "patience")]
    assert {row[0] for row in swept} == {"margin", "patience"}
    assert all(5 <= float(row[2]) <= 9 for row in swept)  # 1 + min_crops (4) .. 1 + N views
    assert all(row[4].count("[") == 1 and 0 <= float(row[5]) <= 100 for row in rules)
    assert [row[0] for row in per_order] == ["random"] and [row[0] for row in peers] == ["zero"]
    assert [row[2] for row in own] == ["-", "jackknife", "prefix"]
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_paths_quick(capsys):
    output = run(capsys, "paths", "--quick")
    difference = next(line for line in output.splitlines() if line.startswith("mean absolute"))
    assert float(difference.split(": ")[1].split()[0]) < 0.02
    assert [row[0] for row in table_rows(output)] == ["clip", "clip-d", "cupl", "wca"]


def test_classify_quick(capsys):
    rows = table_rows(run(capsys, "classify", "--quick"))
    assert [row[0] for row in rows] == [
        "extract_features",
        "predict (list, packed batches)",
        "predict (one call per image)",
    ]
    assert all(float(row[1]) > 0 for row in rows) and rows[0][3] == "1"


@pytest.mark.slow
def test_peers_quick(capsys, tmp_path):
    """Every method on both view sets: top-1, its expected tail and the paired difference to
    WCA per cell, then each cell as `wca report` prints it (calibration, the difference to
    CLIP); the same tables again from the result files alone."""
    output = run(capsys, "peers", "--quick", "--out", str(tmp_path))
    assert tables(run(capsys, "peers", "--tables-from", str(tmp_path))) == tables(output)
    assert "load average before:" in output
    summary, tails, to_wca, *cells = tables(output)
    methods = [row[0] for row in summary]
    assert methods[-15:] == [
        "tda", "dmn", "boostadapter", "onzeta", "dota", "cosmic", "ecalp", "bca", "oga",
        "tda+wca", "dota+wca", "cosmic+wca", "ecalp+wca", "bca+wca", "oga+wca",
    ]  # fmt: skip
    assert "bifta" in methods
    assert all(len(row) == 3 and all("±" in cell for cell in row[1:]) for row in summary)
    assert [row[0] for row in tails] == methods == [row[0] for row in to_wca]
    assert all(cell.endswith("(worst run)") for row in tails for cell in row[1:])  # 2 runs
    wca = methods.index("wca")
    assert to_wca[wca][1:] == ["(baseline)", "(baseline)"]
    assert all(row[1].count("[") == 1 for i, row in enumerate(to_wca) if i != wca)
    assert len(cells) == 2 and all(len(cell) == len(summary) for cell in cells)
    for cell in cells:
        assert cell[0][:2] == ["clip", summary[0][1 + cells.index(cell)]]
        assert cell[0][3] == "(baseline)"  # after the tail
        assert all(row[3].count("[") == 1 and float(row[5]) >= 0 for row in cell[1:])


def test_gpu_quick(capsys):
    """The GPU script's code (decoding, device views, encoder floor, every head) on a tiny
    model, on the CPU when there is no GPU."""
    output = run(capsys, "gpu", "--quick")
    models, heads = tables(output)[-2:]
    assert [row[1] for row in models] == ["fp16", "bf16"]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in models)
    assert {"clip", "zero", "mta", "awt", "wca"} <= {row[0] for row in heads}
    assert "awt floor: [views x prompts] product" in {row[0] for row in heads}


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: the script would run")
def test_gpu_script_is_skipped_without_cuda(capsys):
    assert "GPU script skipped" in run(capsys, "gpu")


@pytest.mark.slow
def test_pointing_quick(capsys):
    rows = table_rows(run(capsys, "pointing", "--quick"))
    assert [row[0] for row in rows] == [
        "uniformly random peak (expected)",
        "before 0.3: covering crops' weighted mean, WCA's crops",
        "contrast t, WCA's 60 crops",
        "contrast t, explanation crops",
    ]
    shares = [[float(cell) for cell in row[1:]] for row in rows]
    assert all(len(row) == 4 and all(0 <= s <= 100 for s in row) for row in shares)
    assert 0 < shares[0][0] < 10  # a random peak rarely lands on the body


def test_ratio_guards_its_denominator():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _common import ratio
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert ratio(3.0, 2.0) == 1.5
    assert all(math.isnan(ratio(3.0, d)) for d in (0.0, -1.0, 1e-15, math.inf, math.nan))


@pytest.mark.parametrize("script", ["preprocess", "extract", "identity", "scoring", "classify"])
def test_quick_modes_survive_a_clock_that_does_not_move(script, capsys, monkeypatch):
    """A quick run can be too short to time: a ratio of zero-length times prints ``nan``."""
    monkeypatch.setattr(time, "perf_counter", lambda: 0.0)
    args = ["--quick", "--no-profile"] if script == "preprocess" else ["--quick"]
    assert "|" in run(capsys, script, *args)
