"""`wca report` over result files: rows that never mix settings, a report that names, skips and
counts bad files, calibration, paired intervals and the figures. The schema itself is
tests/test_results.py's."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wca import report
from wca.cli import main
from wca.correctness import pack_correct
from wca.evaluate import Evaluation, MethodResult, result_file
from wca.paired import paired_bootstrap
from wca.report.plot import dataset_figure, plot

RUNS, IMAGES = 4, 200


def correctness(accuracy: float, seed: int, runs: int = RUNS, images: int = IMAGES):
    """Synthetic top-1 correctness ``bool [runs, images]``: image i is right when its
    difficulty is below ``accuracy`` (so methods share their hard images), a little run noise."""
    difficulty = np.random.default_rng(0).random(images)
    noise = np.random.default_rng(seed).normal(0, 0.02, (runs, images))
    return difficulty + noise < accuracy


def write_result(
    path: Path,
    methods: dict[str, np.ndarray],
    *,
    options: dict[str, dict] | None = None,
    dataset: str = "cub",
    strategy: str = "random",
    pretrained: str = "openai",
    seed: int = 0,
    image_list: str = "fedcba9876543210",
) -> Path:
    """A result file as `wca eval` writes it, every method's numbers from its correctness."""
    scored = {}
    for name, correct in methods.items():
        top1 = (100 * correct.mean(1)).tolist()
        scored[name] = MethodResult(
            name, top1, [99.0] * len(top1), [50.0, 60.0], name != "clip",
            ece=[0.05 + 0.01 * len(name)] * len(top1), nll=[0.5] * len(top1),
            brier=[0.25] * len(top1), correct=correct, options=(options or {}).get(name, {}),
        )  # fmt: skip
    runs, images = next(iter(methods.values())).shape
    evaluation = Evaluation(scored, images, runs, 16, 60, seed, "pool")
    model = "ViT-B-32/openai" if pretrained == "openai" else f"ViT-B-32@{pretrained}"
    settings = {
        "dataset": dataset, "split": "test", "data_root": f"/data/{dataset}",
        "model": f"open_clip:{model}", "crop_strategy": strategy, "n_crops": 60,
        "patch_n": 16, "alpha": 0.5, "effective_alpha": 0.5, "beta": 0.9, "protocol": "pool",
        "n_run": runs, "seed": seed, "precision": "fp32", "views": "fast",
        "descriptions_sha256": "0123456789abcdef", "images_sha256": image_list,
        "seconds": {"features": 2, "scoring": 1},
    }  # fmt: skip
    result = result_file(
        evaluation, settings, dataset=dataset, model="ViT-B-32", pretrained=pretrained
    )
    return result.write(path)


@pytest.fixture
def two_strategies(tmp_path) -> Path:
    """One cell on random crops and on rrc views: zero differs, clip is the same."""
    folder = tmp_path / "results"
    clip = correctness(0.80, 1)
    write_result(folder / "random.json", {"clip": clip, "zero": correctness(0.86, 2)})
    write_result(folder / "rrc.json", {"clip": clip, "zero": correctness(0.78, 3)}, strategy="rrc")
    return folder


def version_1(source: Path, target: Path) -> Path:
    """``source`` as wca 0.2 wrote it: no schema version, fewer settings, no calibration or
    per-image correctness."""
    document = json.loads(source.read_text())
    del document["schema_version"]
    recorded_since = ("descriptions_sha256", "model_sha256", "images_sha256")
    for name in ("crop_strategy", "precision", "views", *recorded_since):
        document["config"].pop(name, None)
    for method in document["results"]["methods"].values():
        method.pop("correct"), method.pop("calibration")
    target.write_text(json.dumps(document))
    return target


# ------------------------------------------------------------------ rows never mix


def test_files_of_other_settings_are_rows_labelled_by_the_difference(two_strategies):
    rows = report.load_rows([two_strategies])
    assert [row.name for row in rows] == [
        "clip [random]", "zero [random]", "clip [rrc]", "zero [rrc]",
    ]  # fmt: skip
    zero = {row.label: row for row in rows if row.method == "zero"}
    assert zero["random"].record()["top1_mean"] != zero["rrc"].record()["top1_mean"]
    assert all(len(row.top1) == RUNS and row.record()["files"] == 1 for row in rows)


def test_files_of_equal_settings_pool_their_runs(tmp_path):
    a = correctness(0.8, 1)
    write_result(tmp_path / "a.json", {"clip": a, "wca": correctness(0.9, 5)})
    write_result(tmp_path / "again" / "a.json", {"clip": a, "wca": correctness(0.9, 6)})
    rows = report.load_rows([tmp_path])
    assert [row.name for row in rows] == ["clip", "wca"]
    assert rows[1].record()["runs"] == 2 * RUNS and rows[1].record()["files"] == 2
    assert rows[1].delta is not None  # paired over both files' runs


def test_files_of_other_images_are_other_rows(tmp_path):
    a = correctness(0.8, 1)  # the same count of images, another list (a file renamed, added...)
    write_result(tmp_path / "a.json", {"clip": a}, image_list="a" * 16)
    write_result(tmp_path / "b.json", {"clip": a}, image_list="b" * 16)
    rows = report.load_rows([tmp_path])
    assert [row.name for row in rows] == ["clip [images aaaaaaaa]", "clip [images bbbbbbbb]"]


def test_group_by_shows_settings_as_columns(two_strategies, capsys):
    args = ["report", str(two_strategies), "--markdown"]
    assert main([*args, "--group-by", "dataset,model,crop_strategy"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| dataset | model | crop_strategy | method | top-1 (%) |")
    assert lines[4].startswith("| cub | ViT-B-32 openai | rrc | clip |")  # no label needed
    assert main([*args, "--group-by", "method,crop_strategy"]) == 0  # the method once
    assert capsys.readouterr().out.startswith("| crop_strategy | method | top-1 (%) |")
    assert main([*args, "--group-by", "dataset,colour"]) == 2
    assert "--group-by: unknown column 'colour'" in capsys.readouterr().err


def test_unknown_settings_never_merge(two_strategies, tmp_path):
    old = version_1(two_strategies / "random.json", tmp_path / "old.json")
    older = version_1(two_strategies / "random.json", tmp_path / "older.json")
    rows = report.load_rows([two_strategies / "random.json", old, older])
    zero = [row for row in rows if row.method == "zero"]
    assert len(zero) == 3 and all(row.record()["files"] == 1 for row in zero)
    assert len({row.label for row in zero}) == 3  # told apart, the old ones by their file
    assert "from old.json" in zero[1].label and "from older.json" in zero[2].label
    assert zero[1].delta is None and "schema-1" in zero[1].delta_note
    assert any("schema-1 files do not record crop_strategy" in line for line in report.notes(rows))


def test_folders_without_images_are_not_classes(tmp_path, caplog):
    from wca.datasets import load_dataset

    for name in ("cat", "dog"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "photos" / name / "1.png")
    (tmp_path / "photos" / "results").mkdir()
    (tmp_path / "photos" / "results" / "r.json").write_text("{}")
    (tmp_path / "photos" / "empty").mkdir()
    with caplog.at_level(logging.INFO, logger="wca"):
        dataset = load_dataset("imagefolder", tmp_path / "photos")
    assert dataset.classnames == ["cat", "dog"] and len(dataset) == 2
    assert "folders without images are not classes: empty, results" in caplog.text


@pytest.mark.slow
def test_the_export_readme_command_runs_twice(tmp_path, monkeypatch, capsys):
    """`wca demo --export DIR --per-class 1`, then its README's command from inside DIR, twice:
    the results/ the first run wrote is not a class of the second."""
    export = tmp_path / "export"
    assert main(["demo", "--export", str(export), "--per-class", "1"]) == 0
    readme = (export / "README.txt").read_text()
    command = readme[readme.index("  wca eval") :].split("\n(")[0].replace("\\\n", " ")
    argv = shlex.split(command)[1:]
    assert argv[:5] == ["eval", "--dataset", "imagefolder", "--data-root", "."]
    small = ["--n-crops", "2", "--patch-n", "2", "--n-run", "1", "--no-progress"]
    monkeypatch.chdir(export)
    for _ in range(2):
        assert main(argv + small) == 0
        [written] = (export / "results").glob("*.json")
        result = json.loads(written.read_text())
        assert result["results"]["n_images"] == 24 and result["dataset"] == "export"
        assert len(result["config"]["dataset_info"]["classnames"]) == 24
    capsys.readouterr()
    assert main(["report", "results"]) == 0


# --- per-file robustness


@pytest.fixture
def with_bad_files(two_strategies) -> Path:
    (two_strategies / "notes.json").write_text('{"not": "a result"}')
    (two_strategies / "broken.json").write_text('{"results": ')
    (two_strategies / "latin1.json").write_bytes(b'{"caf\xe9": 1}')
    bad = json.loads((two_strategies / "rrc.json").read_text())
    bad["results"]["methods"]["zero"]["top1"] = "high"
    (two_strategies / "sub").mkdir()
    (two_strategies / "sub" / "invalid.json").write_text(json.dumps(bad))
    bad = json.loads((two_strategies / "rrc.json").read_text())
    bad["results"]["methods"]["zero"]["top1"]["runs"] = []
    (two_strategies / "sub" / "no-runs.json").write_text(json.dumps(bad))
    bad = json.loads((two_strategies / "rrc.json").read_text())
    bad["results"]["methods"]["clip"]["correct"] = "bm90IHpsaWI="  # base64, not zlib
    (two_strategies / "sub" / "damaged.json").write_text(json.dumps(bad))
    return two_strategies


def test_each_bad_file_is_named_skipped_and_counted(with_bad_files, capsys):
    assert main(["report", str(with_bad_files)]) == 0
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if line.startswith("wca: skipped ")]
    assert len(skipped) == 7 and skipped[-1] == (
        "wca: skipped 6 file(s) that are not readable results"
    )
    names = ("broken", "latin1", "notes", "invalid", "no-runs", "damaged")
    for name in names:
        assert sum(f"{name}.json" in line for line in skipped) == 1
    assert "notes.json: not a wca result file" in captured.err
    assert "invalid.json: results.methods.zero.top1" in captured.err
    assert "no-runs.json: results.methods.zero.top1: no runs" in captured.err
    assert f"damaged.json: results.methods.clip.correct: not {RUNS} x {IMAGES} bits" in captured.err
    assert "zero [rrc]" in captured.out  # the good files are reported


def test_nan_a_missing_metrics_by_method_and_a_bad_schema_version_are_named(two_strategies, capsys):
    """A NaN top-1 is never pooled ("nan ± nan"), a file without metrics_by_method is not a
    result, and a schema_version that is no number is not called newer: each file is named
    and skipped."""
    good = json.loads((two_strategies / "rrc.json").read_text())
    bad = json.loads(json.dumps(good))
    bad["results"]["methods"]["zero"]["top1"]["runs"][0] = float("nan")
    (two_strategies / "nan.json").write_text(json.dumps(bad))  # NaN, as json writes it
    bad = json.loads(json.dumps(good))
    del bad["metrics_by_method"]
    (two_strategies / "no-metrics.json").write_text(json.dumps(bad))
    bad = {**good, "schema_version": "x"}
    (two_strategies / "version-x.json").write_text(json.dumps(bad))
    assert main(["report", str(two_strategies)]) == 0
    captured = capsys.readouterr()
    assert "nan" not in captured.out.lower()
    assert f"{two_strategies / 'nan.json'}: holds NaN (NaN and infinities are never" in captured.err
    assert f"{two_strategies / 'no-metrics.json'}: metrics_by_method: Field required" in (
        captured.err
    )
    assert f"{two_strategies / 'version-x.json'}: schema_version 'x' is not a result schema" in (
        captured.err
    )
    assert "newer" not in captured.err
    assert "wca: skipped 3 file(s) that are not readable results" in captured.err


def test_a_baseline_no_result_has_is_an_error(two_strategies, capsys):
    """`--baseline nosuch` names the methods the results have (exit 2); the default baseline
    may be missing (each row then says so)."""
    assert main(["report", str(two_strategies), "--baseline", "nosuch"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("wca: error: --baseline nosuch: no result has this method (they have")
    assert main(["report", str(two_strategies), "--baseline", "zero"]) == 0


def test_report_is_not_all_or_nothing(with_bad_files, tmp_path, capsys):
    assert main(["report", str(with_bad_files), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "broken.json" in err and "--strict: 6 file(s) skipped" in err
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "notes.json").write_text("[]")
    assert main(["report", str(only_bad)]) == 2
    err = capsys.readouterr().err
    assert "notes.json: not a wca result file" in err and "no wca result files in" in err
    assert main(["report", str(tmp_path / "missing"), str(with_bad_files / "rrc.json")]) == 0
    assert "missing: no such file or folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory) -> Path:
    from wca.demo.run import run_demo

    out = tmp_path_factory.mktemp("demo")
    run_demo(out, per_class=1, n_crops=3, n_run=3, patch_n=3, log=lambda *_: None)
    return out


@pytest.mark.slow
def test_the_demo_results_report_like_any_other(demo_results, tmp_path, capsys):
    png = tmp_path / "demo.png"
    assert main(["report", str(demo_results), "--plot", str(png), "--markdown"]) == 0
    out = capsys.readouterr().out
    for method in ("clip", "clip-d", "cupl", "wca", "wca-tuned"):
        assert f"| wca-demo | wca-demo-rn | {method} |" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [row] = [row for row in report.load_rows([demo_results]) if row.method == "wca"]
    assert row.delta is not None and row.images == 24 and len(row.top1) == 3


# --------------------------------------------------------------------- calibration


def test_calibration_columns_in_the_table_and_csv(two_strategies, tmp_path, capsys):
    out_csv = tmp_path / "t.csv"
    assert main(["report", str(two_strategies), "--markdown", "--csv", str(out_csv)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    zero = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert header[7:10] == ["ECE (%)", "NLL", "Brier"]
    assert zero[2] == "zero [random]" and zero[7:10] == ["9.00", "0.500", "0.250"]
    with out_csv.open() as handle:
        records = list(csv.DictReader(handle))
    assert float(records[1]["ece"]) == pytest.approx(0.09)
    assert records[1]["crop_strategy"] == "random" and records[3]["label"] == "rrc"


def test_zero_mta_and_awt_probabilities_are_their_own():
    from wca.evaluate import MIN_PROBABILITY
    from wca.methods.awt import AWTHead
    from wca.methods.mta import MTAHead
    from wca.methods.zero import ZeroHead

    g = torch.Generator().manual_seed(0)
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
    classes, images, crops = unit(5, 16), unit(3, 16), unit(3, 9, 16)
    zero = ZeroHead(classes, logit_scale=30.0)
    votes = zero.logits(images, crops)
    shares = zero.probabilities(votes, 30.0)
    assert torch.allclose(shares, votes / votes.sum(-1, keepdim=True))
    assert torch.allclose(shares.sum(-1), torch.ones(3)) and bool((shares == 0).any())
    assert -np.log(MIN_PROBABILITY) == pytest.approx(27.63, abs=0.01)  # NLL of a 0 share
    for head in (
        MTAHead(classes, logit_scale=30.0),
        AWTHead(classes[:, None], torch.ones(5, 1, dtype=torch.bool), logit_scale=30.0),
    ):
        logits = head.logits(images, crops)  # at the model's temperature already
        assert torch.allclose(head.probabilities(logits, 30.0), logits.softmax(-1))


# ------------------------------------------------------- paired confidence intervals


def test_paired_bootstrap_interval():
    baseline = correctness(0.70, 1).mean(0)
    better = correctness(0.80, 2).mean(0)
    first = paired_bootstrap(better, baseline)
    assert first == paired_bootstrap(better, baseline)  # seeded
    assert first.diff == pytest.approx(100 * (better.mean() - baseline.mean()))
    assert first.low < first.diff < first.high and first.excludes_zero
    same = paired_bootstrap(baseline, baseline)
    assert (same.diff, same.low, same.high) == (0, 0, 0) and not same.excludes_zero
    unpaired_width = 2 * 1.96 * 100 * np.sqrt(0.7 * 0.3 / IMAGES)
    assert first.high - first.low < unpaired_width  # pairing removes the shared difficulty
    with pytest.raises(ValueError, match="same non-empty images"):
        paired_bootstrap(better, baseline[:-1])


def test_report_marks_differences_whose_interval_excludes_zero(tmp_path, capsys):
    clip = correctness(0.70, 1)
    methods = {"clip": clip, "wca": correctness(0.85, 2), "cupl": correctness(0.705, 3)}
    write_result(tmp_path / "r" / "a.json", methods)
    write_result(tmp_path / "r" / "b.json", {"clip": correctness(0.7, 1, images=150)}, seed=1)
    write_result(tmp_path / "r" / "c.json", {"wca": correctness(0.9, 2, images=150)}, seed=2)
    assert main(["report", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    wca = next(line for line in out.splitlines() if line.startswith("cub") and " wca " in line)
    cupl = next(line for line in out.splitlines() if " cupl " in line)
    assert "] *" in wca
    assert "] *" not in cupl
    assert "no Δ for cub ViT-B-32 openai wca [seed 2]: no clip row with the same settings" in out
    assert "1000 resamples" in out
    rows = report.load_rows([tmp_path / "r"], baseline="cupl")
    assert next(r for r in rows if r.method == "clip" and r.delta).delta.diff < 0


def test_a_baseline_with_options_is_found_unless_ambiguous(tmp_path):
    methods = {"clip": correctness(0.7, 1), "wca": correctness(0.8, 2)}
    write_result(tmp_path / "a.json", methods, options={"wca": {"image_scale": 4.0}})
    rows = report.load_rows([tmp_path], baseline="wca")
    assert rows[0].method == "clip" and rows[0].delta.diff < 0
    other = {"wca": correctness(0.85, 3)}
    write_result(tmp_path / "b.json", other, options={"wca": {"image_scale": 3.0}})
    rows = report.load_rows([tmp_path], baseline="wca")
    assert [row.name for row in rows] == ["clip", "wca [image_scale=4.0]", "wca [image_scale=3.0]"]
    assert rows[0].delta_note == "2 wca rows with these settings (other options)"


def test_images_that_differ_cannot_be_paired(tmp_path):
    more = IMAGES + 10
    write_result(tmp_path / "a.json", {"clip": correctness(0.7, 1), "wca": correctness(0.8, 2)})
    other = {"clip": correctness(0.7, 1, images=more), "wca": correctness(0.8, 2, images=more)}
    write_result(tmp_path / "b.json", other)
    rows = report.load_rows([tmp_path / "a.json", tmp_path / "b.json"])  # pooled: 200 and 210
    assert rows[1].delta is None and rows[1].delta_note == "its files' images differ"
    write_result(tmp_path / "c" / "clip.json", {"clip": correctness(0.7, 1)})
    write_result(tmp_path / "c" / "wca.json", {"wca": correctness(0.8, 2, images=more)})
    rows = report.load_rows([tmp_path / "c"])
    assert rows[1].delta_note == f"its images differ from clip's ({more} vs {IMAGES})"


def test_stored_correctness_at_imagenet_size_fits_30_mb(tmp_path):
    """50,000 images, 20 runs, 13 methods: the packed strings and the whole file, at the worst
    case for compression (runs that disagree at random, accuracy 50 %)."""
    rng = np.random.default_rng(0)
    images, runs = 50_000, 20
    methods = {f"method-{i}": rng.random((runs, images)) < 0.5 for i in range(13)}
    packed = sum(len(pack_correct(correct)) for correct in methods.values())
    assert packed < 30e6
    path = write_result(tmp_path / "imagenet.json", methods)
    assert path.stat().st_size < 30e6
    assert packed / len(methods) == pytest.approx(4 / 3 * runs * images / 8, rel=0.01)


# ---------------------------------------------------------------------- the plot


def text_boxes(figure):
    """The window extents of every visible, non-empty text of a drawn figure."""
    from matplotlib.text import Text

    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    texts = [
        t for t in figure.findobj(Text) if t.get_visible() and t.get_text().strip() and t.figure
    ]
    return texts, [t.get_window_extent(renderer) for t in texts]


def test_every_label_is_inside_the_figure_and_none_overlap(tmp_path):
    long_path = "/very/long/folder/of/checkpoints/my-finetuned-weights.pt"
    names = ["clip", "clip-e", "clip-d", "waffle", "cupl", "wca", "wca-uniform-crops",
             "wca-uniform-text", "wca-full-view", "wca-paper", "zero", "mta", "awt"]  # fmt: skip
    for strategy in ("random", "rrc"):
        methods = {name: correctness(0.6 + 0.02 * i, i) for i, name in enumerate(names)}
        path = tmp_path / f"{strategy}.json"
        write_result(path, methods, strategy=strategy, pretrained=long_path)
    rows = report.load_rows([tmp_path])
    figure = dataset_figure(rows)
    texts, boxes = text_boxes(figure)
    inside = figure.bbox
    assert len(texts) >= 2 * 2 * len(names)  # a name and a value per row
    for text, box in zip(texts, boxes, strict=True):
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, text.get_text()
        assert inside.y0 <= box.y0 and box.y1 <= inside.y1, text.get_text()
        assert "/very" not in text.get_text()
    for (a, box_a), (b, box_b) in itertools.combinations(zip(texts, boxes, strict=True), 2):
        assert not box_a.overlaps(box_b), (a.get_text(), b.get_text())
    assert figure.axes[0].get_legend() is None  # named on the axis: no legend over the data
    colours = [tick.get_color() for tick in figure.axes[0].get_yticklabels()]
    assert len(set(map(str, colours))) == len(rows)  # no colour repeats
    ticks = [tick.get_text() for tick in figure.axes[0].get_yticklabels()]
    means = [next(r for r in rows if r.name == t).record()["top1_mean"] for t in ticks]
    assert means == sorted(means)  # sorted by top-1, the best on top
    assert "95% paired bootstrap interval" in figure.axes[0].get_xlabel()
    assert "(my-finetuned-weights)" in figure.axes[0].get_title()


def test_one_figure_per_dataset(two_strategies, tmp_path):
    write_result(two_strategies / "dtd.json", {"clip": correctness(0.5, 1)}, dataset="dtd")
    written = plot(report.load_rows([two_strategies]), tmp_path / "top1.png")
    assert sorted(path.name for path in written) == ["top1-cub.png", "top1-dtd.png"]
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in written)
    [only] = plot(report.load_rows([two_strategies / "rrc.json"]), tmp_path / "one.png")
    assert only == tmp_path / "one.png"
