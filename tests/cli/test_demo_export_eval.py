"""`wca eval` runs on a `wca demo --export` folder with its defaults."""

from __future__ import annotations

import csv
import json

import pytest

from wca.cli import main


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from wca.demo.run import export

    return export(tmp_path_factory.mktemp("demo") / "export", per_class=1)


def test_eval_on_the_demo_export_skips_methods_without_texts(export, tmp_path, capsys):
    out = tmp_path / "result.json"
    argv = [
        "eval", "--dataset", "imagefolder", "--data-root", str(export),
        "--descriptions", str(export), "--model", f"open_clip:{export / 'wca-demo-rn.pt'}",
        "--n-crops", "3", "--patch-n", "3", "--n-run", "2", "--cache-dir", "none", "--no-progress",
        "--output", str(out),
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    (skipped,) = [line for line in err.splitlines() if line.startswith("wca: skipped")]
    assert skipped == (
        "wca: skipped clip-e, waffle: their texts are missing (clip-e needs "
        "templates (clip-e.json); waffle needs a word list (waffle-words.json))"
    )
    result = json.loads(out.read_text())
    assert set(result["results"]["methods"]) == {"clip", "clip-d", "cupl", "wca"}
    assert result["results"]["n_images"] == 24  # read from export/images, one image per class


def test_a_method_asked_for_by_name_still_fails(export, tmp_path, capsys):
    argv = [
        "eval", "--dataset", "imagefolder", "--data-root", str(export),
        "--descriptions", str(export), "--model", f"open_clip:{export / 'wca-demo-rn.pt'}",
        "--methods", "clip,clip-e", "--cache-dir", "none", "--output", str(tmp_path / "r.json"),
    ]
    assert main(argv) == 2
    assert "method 'clip-e' needs templates (clip-e.json)" in capsys.readouterr().err


def test_the_export_names_each_file_by_its_role(export):
    files = sorted(path.name for path in export.iterdir() if path.is_file())
    assert files == [
        "README.txt", "classnames.json", "clip-d.json", "cupl.json", "wca-demo-rn.json",
        "wca-demo-rn.pt",
    ]
    readme = (export / "README.txt").read_text()
    for name in files[1:]:
        assert name in readme
    assert "cupl.json" in readme and "descriptions of cupl and wca" in readme


@pytest.mark.parametrize("name, bare", [("cupl.json", False), ("clip-d.json", True)])
def test_check_warns_on_bare_phrases(descriptors_dir, export, capsys, name, bare):
    for folder in (descriptors_dir / "cub", export):
        classes = folder / "classnames.json"
        assert main(["descriptions", "check", str(folder / name), "--classes-file",
                     str(classes)]) == 0
        out = capsys.readouterr().out
        assert ("warning: only" in out and "CLIP-D descriptor phrases" in out) == bare
        assert out.strip().endswith("ok")


def test_the_readme_command_of_the_export_runs(export, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(export)
    argv = ["eval", "--dataset", "imagefolder", "--data-root", ".", "--descriptions", ".",
            "--model", "open_clip:wca-demo-rn.pt", "--methods", "clip,wca", "--n-crops", "2",
            "--patch-n", "2", "--n-run", "1", "--cache-dir", "none",
            "--output", str(tmp_path / "r.json")]
    assert main(argv) == 0


def _eval(export, out, *extra):
    return [
        "eval", "--dataset", "imagefolder", "--data-root", str(export),
        "--model", f"open_clip:{export / 'wca-demo-rn.pt'}", "--n-crops", "3", "--patch-n", "3",
        "--n-run", "2", "--cache-dir", "none", "--no-progress", "--output", str(out), *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_without_descriptions_the_methods_that_need_none_run(export, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(_eval(export, out)) == 0
    err = capsys.readouterr().err
    (skipped,) = [line for line in err.splitlines() if line.startswith("wca: skipped")]
    assert skipped.startswith("wca: skipped clip-e, clip-d, waffle, cupl, wca: their texts are")
    result = json.loads(out.read_text())
    assert list(result["results"]["methods"]) == ["clip"]
    assert result["config"]["descriptions"] == "the class names (no descriptions)"
    assert main(_eval(export, tmp_path / "w.json", "--methods", "clip,wca")) == 2
    assert "method 'wca' needs sentences (cupl.json)" in capsys.readouterr().err


@pytest.mark.slow
def test_the_readme_flow_reports_a_difference_for_every_method(export, tmp_path, capsys):
    """The export's eval command, then eval again with the peers and online methods: one
    result file holds them all, and `report --baseline wca` pairs every method with wca."""
    results = tmp_path / "results"
    base = _eval(export, results / "r.json", "--descriptions", str(export))
    assert main(base) == 0
    peers = "zero,mta,awt,lazsl,tda,dmn,boostadapter,onzeta,tda+wca"
    assert main([*base, "--methods", peers]) == 0
    err = capsys.readouterr().err
    assert "kept clip, clip-d, cupl, wca beside this run's methods" in err
    assert [path.name for path in results.iterdir()] == ["r.json"]
    report = ["report", str(results), "--baseline", "wca", "--csv", str(tmp_path / "r.csv")]
    assert main(report) == 0
    out = capsys.readouterr().out
    assert "n/a" not in out and "no Δ" not in out
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    methods = {row["method"] for row in rows}
    assert methods == {"clip", "clip-d", "cupl", "wca", *peers.split(",")}
    assert all(row["delta_top1"] != "" for row in rows if row["method"] != "wca")
    assert {row["model_fullname"] for row in rows} == {"wca-demo-rn"}  # no path
    assert "per-dataset values that ran: dataset=imagenet (lazsl, tda, dmn, boostadapter, " \
        "tda+wca), dataset=other (onzeta)" in " ".join(out.split())
    # a method again with other options goes beside, named by its methods; nothing is lost
    assert main([*base, "--methods", "onzeta", "--set", "methods.onzeta.dataset=imagenet"]) == 0
    beside = sorted(path.name for path in results.iterdir())
    assert beside[0] == "r.json" and beside[1].startswith("r__onzeta-") and len(beside) == 2
    assert f"wrote {results / beside[1]}" in capsys.readouterr().err
    assert len(json.loads((results / "r.json").read_text())["results"]["methods"]) == 13
