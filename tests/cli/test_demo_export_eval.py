"""`wca eval` runs on a `wca demo --export` folder with its defaults."""

from __future__ import annotations

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
    skipped = [line for line in err.splitlines() if line.startswith("wca: skipped")]
    assert [line.split()[2] for line in skipped] == ["clip-e:", "waffle:"]
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
