"""Issue 10, item 17: `wca eval` runs on a `wca demo --export` folder with its defaults."""

from __future__ import annotations

import json

import pytest

from wca.cli import main


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from wca.demo.run import export

    return export(tmp_path_factory.mktemp("demo") / "export", per_class=1)


def test_item17_eval_on_the_demo_export_skips_methods_without_texts(export, tmp_path, capsys):
    out = tmp_path / "result.json"
    argv = [
        "eval", "--dataset", "imagefolder", "--data-root", str(export),
        "--descriptions", str(export), "--model", f"open_clip:{export / 'wca-demo-rn.pt'}",
        "--n-crops", "3", "--patch-n", "3", "--n-run", "2", "--no-cache", "--no-progress",
        "--out", str(out),
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if line.startswith("wca: skipped")]
    assert [line.split()[2] for line in skipped] == ["clip-e:", "waffle:"]
    result = json.loads(out.read_text())
    assert set(result["results"]["methods"]) == {"clip", "clip-d", "cupl", "wca"}
    assert result["results"]["n_images"] == 24  # read from export/images, one image per class


def test_item17_a_method_asked_for_by_name_still_fails(export, tmp_path, capsys):
    argv = [
        "eval", "--dataset", "imagefolder", "--data-root", str(export),
        "--descriptions", str(export), "--model", f"open_clip:{export / 'wca-demo-rn.pt'}",
        "--methods", "clip,clip-e", "--no-cache", "--out", str(tmp_path / "r.json"),
    ]
    assert main(argv) == 2
    assert "method 'clip-e' needs templates (clip-e.json)" in capsys.readouterr().err
