"""`wca descriptions check`: missing, extra, duplicate and empty classes."""

from __future__ import annotations

import json

import pytest

from wca.cli import main
from wca.descriptions import load_classnames, load_descriptions, match_descriptions
from wca.descriptions.check import check_descriptions


def test_published_cub_set_is_clean(descriptors_dir, capsys):
    cub = descriptors_dir / "cub"
    report = check_descriptions(cub / "cupl.json", load_classnames(cub / "classnames.json"))
    assert report.ok and report.n_classes == 200
    args = ["descriptions", "check", str(cub / "clip-d.json"), "--classes-file",
            str(cub / "classnames.json")]
    assert main(args) == 0
    assert capsys.readouterr().out.strip().endswith("ok")


def test_problems_are_found_and_exit_is_nonzero(tmp_path, capsys):
    path = tmp_path / "d.json"
    path.write_text(
        '{"owl": ["Round face."], "Cat": ["Whiskers."], "cat": ["Paws."], '
        '"dragon": ["Big."], "ant": ["", "  "], "bee": [], "elk": "Antlers.", '
        '"owl": ["Again."], "sea_gull": ["White."]}'
    )
    classes = ["owl", "cat", "ant", "bee", "elk", "fox", "sea gull", "fox"]
    report = check_descriptions(path, classes)
    assert report.missing == ["fox"]
    assert report.extra == ["dragon"]
    assert report.duplicate_keys == ["cat (same as Cat)", "owl"]
    assert report.duplicate_classes == ["fox"]
    assert report.unusable == ["ant", "bee", "elk"]
    assert not report.ok

    classes_file = tmp_path / "classes.json"
    classes_file.write_text(json.dumps(classes))
    assert main(["descriptions", "check", str(path), "--classes-file", str(classes_file)]) == 1
    out = capsys.readouterr().out
    assert "missing classes" in out and "  fox" in out and "problems found" in out


def test_agrees_with_match_descriptions(tmp_path):
    """check's missing + unusable classes are exactly those match_descriptions rejects."""
    path = tmp_path / "d.json"
    data = {"Owl": ["Round face."], "big cat": [" "], "sea_gull": ["White."]}
    path.write_text(json.dumps(data))
    classes = ["owl", "big cat", "sea gull", "fox"]
    report = check_descriptions(path, classes)
    with pytest.raises(ValueError, match="2 classes: 'big cat', 'fox'"):
        match_descriptions(classes, load_descriptions(path))
    assert sorted(report.missing + report.unusable) == ["big cat", "fox"]


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        check_descriptions(tmp_path / "none.json", ["a"])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        check_descriptions(tmp_path / "bad.json", ["a"])
    (tmp_path / "list.json").write_text('["a"]')
    with pytest.raises(ValueError, match="expected an object"):
        check_descriptions(tmp_path / "list.json", ["a"])


def test_over_long_descriptions_are_reported_with_clips_bpe(tmp_path, capsys):
    path = tmp_path / "d.json"
    long = "A small bird with a red head, " * 12  # about 100 CLIP tokens
    path.write_text(json.dumps({"finch": ["A finch.", long], "owl": [long + "and more."]}))
    report = check_descriptions(path, ["finch", "owl"])
    assert report.tokenizer == "CLIP's BPE" and report.context == 77
    assert [(t.label, t.tokens > 77) for t in report.long_texts] == [("finch", True), ("owl", True)]
    assert not report.ok
    (tmp_path / "classes.json").write_text('["finch", "owl"]')
    args = ["descriptions", "check", str(path), "--classes-file", str(tmp_path / "classes.json")]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "descriptions longer than the 77-token text context of CLIP's BPE" in out
    assert "  finch: 'A small bird with a red head," in out and "problems found" in out


def test_check_counts_with_the_models_tokenizer_when_given(tmp_path, capsys):
    import tiny_models

    spec = tiny_models.save_hf_siglip_model(tmp_path / "siglip")  # a 16-token text context
    path = tmp_path / "d.json"
    text = "A finch with a red head, a short thick bill and brown wings with white bars."
    path.write_text(json.dumps({"finch": [text]}))
    (tmp_path / "classes.json").write_text('["finch"]')
    args = ["descriptions", "check", str(path), "--classes-file", str(tmp_path / "classes.json")]
    assert main(args) == 0  # fits CLIP's 77 tokens
    assert main([*args, "--model", spec]) == 1
    out = capsys.readouterr().out
    assert f"longer than the 16-token text context of {spec}'s tokenizer" in out
