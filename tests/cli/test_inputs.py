"""Command-line inputs: folder classification takes every image format PIL decodes and counts
what it leaves out; one-line argument errors, no command, the decompression-bomb limit,
one-line cache warnings, `reproduce`'s up-front check."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import pytest
from PIL import Image

from mini_datasets import write_image
from tiny_models import save_open_clip_model
from wca.cli import _warnings_as_log_lines, main
from wca.cli.classifier_options import image_paths, image_suffixes

CLASSES = ("red fox", "blue whale", "green frog")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A tiny model, an image folder of 3 classes x 2 images and its texts (cupl.json)."""
    base = tmp_path_factory.mktemp("inputs-world")
    spec = save_open_clip_model(base / "model")
    for name in CLASSES:
        for k in range(2):
            path = base / "data" / "imagefolder" / name.replace(" ", "_") / f"{k}.jpg"
            write_image(path, (30 + k, 28))
    texts = base / "texts" / "imagefolder"  # {dataset} of reproduce's templates
    texts.mkdir(parents=True)
    sentences = {name: [f"a photo of a {name}.", f"a {name} outdoors."] for name in CLASSES}
    (texts / "cupl.json").write_text(json.dumps(sentences))
    return {"spec": spec, "base": base, "texts": texts, "sentences": sentences}


# -- folder classification -----------------------------------------------------------


def test_every_format_pil_decodes_is_an_image_suffix():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    suffixes = image_suffixes()
    assert set(IMG_EXTENSIONS) | {".gif", ".jfif"} <= suffixes
    assert not {".h5", ".grib", ".eps", ".pdf", ".txt", ".json"} & suffixes


def test_folder_takes_gif_and_counts_what_it_skips(tmp_path, caplog):
    folder = tmp_path / "photos"
    taken = [write_image(folder / name) for name in ("a.gif", "b.JPG", "c.webp", "sub/d.png")]
    (folder / "e.txt").write_text("notes")
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    (folder / "README").write_text("no suffix")
    with caplog.at_level(logging.DEBUG, logger="wca"):
        found = image_paths([folder])
    assert found == sorted(taken)
    messages = [record.getMessage() for record in caplog.records]
    counts = [m for m in messages if "skipped" in m and record_level(caplog, m) == logging.INFO]
    assert counts == [f"{folder}: 4 image files; skipped 3 other entries (-v names them)"]
    named = [m for m in messages if record_level(caplog, m) == logging.DEBUG]
    assert any("dangling.jpg: skipped (a broken link)" in m for m in named)
    assert any("e.txt: skipped (.txt: not an image format" in m for m in named)
    assert any("README: skipped (no suffix" in m for m in named)


def record_level(caplog, message: str) -> int:
    return next(r.levelno for r in caplog.records if r.getMessage() == message)


def test_a_broken_link_given_by_name_says_so(tmp_path):
    os.symlink(tmp_path / "gone.jpg", tmp_path / "link.jpg")
    with pytest.raises(FileNotFoundError, match="link.jpg: a broken link"):
        image_paths([tmp_path / "link.jpg"])


def test_classify_reads_a_gif_in_a_folder(world, tmp_path, capsys):
    folder = tmp_path / "in"
    write_image(folder / "one.gif", (30, 30))
    write_image(folder / "two.jpg", (30, 30))
    (folder / "list.csv").write_text("x")
    args = ["classify", str(folder), "--classes", ",".join(CLASSES), "--model", world["spec"]]
    assert main([*args, "--n-crops", "2", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "one.gif" in captured.out and "two.jpg" in captured.out
    assert "2 image files; skipped 1 other entry" in captured.err


# -- manners ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["classify", "x.jpg"], "wca classify: error: one of the arguments --classes "),
        (["eval", "--precision", "fp64"], "wca eval: error: argument --precision: invalid "),
        (["frobnicate"], "wca: error: argument COMMAND: invalid choice: 'frobnicate'"),
        (["demo", "train"], "wca demo train: error: the following arguments are required: --out"),
    ],
)
def test_argument_errors_are_one_line_with_the_help_to_see(argv, line, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    command = line.split(": error")[0]
    assert err.startswith(line) and err.endswith(f" (see {command} --help)\n")
    assert err.count("\n") == 1 and "usage:" not in err


@pytest.mark.parametrize(("argv", "command"), [([], "wca"), (["descriptions"], "wca descriptions")])
def test_no_command_exits_2(argv, command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{command}: error: no command given; choose one of ")
    assert err.count("\n") == 1


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_message_quotes_one_limit(tmp_path, monkeypatch):
    from wca.images import load_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's own guard (restored after)
    big = write_image(tmp_path / "big.png", (100, 100))  # 10,000 > 2 x 1000: PIL refuses
    with pytest.raises(ValueError) as error:
        load_image(big, 1000)
    message = str(error.value)
    assert "(10000 pixels; the limit is 1000 pixels" in message
    assert "2000" not in message and "DOS attack" not in message
    medium = write_image(tmp_path / "medium.png", (40, 40))  # 1600: above the limit, below 2x
    with pytest.raises(ValueError, match=r"\(1600 pixels; the limit is 1000 pixels"):
        load_image(medium, 1000)
    assert load_image(big, 0).size == (100, 100)  # 0: no limit, PIL's own guard lifted
    assert Image.MAX_IMAGE_PIXELS == 1000


def _extract(world, cache: Path) -> list[str]:
    data = world["base"] / "data" / "imagefolder"
    return [
        "extract", "--dataset", "imagefolder", "--data-root", str(data),
        "--model", world["spec"], "--cache-dir", str(cache), "--n-crops", "2",
        "--shard-size", "2", "--no-progress",
    ]  # fmt: skip


def test_cache_warnings_are_one_line_without_the_source_echo(world, tmp_path, capsys):
    assert main(_extract(world, tmp_path / "cache")) == 0
    shard = next((tmp_path / "cache").glob("*/*/shard-00001.safetensors"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x55
    shard.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(_extract(world, tmp_path / "cache")) == 0
    (warning,) = [w for w in caught if "shard-00001" in str(w.message)]
    assert "/wca/" in warning.filename.replace(os.sep, "/")  # the package's own warning
    with _warnings_as_log_lines():  # as main shows it
        shown = warnings.formatwarning(
            warning.message, warning.category, warning.filename, warning.lineno, warning.line
        )
        other = warnings.formatwarning("x", UserWarning, "/elsewhere/lib.py", 3, "warn('x')")
        logging.getLogger("wca").setLevel(logging.ERROR)  # -q
        quiet = warnings.formatwarning(
            warning.message, warning.category, warning.filename, warning.lineno, warning.line
        )
    assert shown == f"wca: {warning.message}\n" and "shard-00001" in shown
    assert "UserWarning" not in shown and "warnings.warn" not in shown
    assert other.startswith("/elsewhere/lib.py:3: UserWarning: x")  # others as Python shows
    assert quiet == ""
    assert warnings.formatwarning is not None and "wca:" not in warnings.formatwarning(
        "y", UserWarning, warning.filename, 1, ""
    )  # restored after main


def _configs(folder: Path) -> Path:
    """Two configs in the authors' shape: ``mine`` (an image folder) and ``sat`` (EuroSAT)."""
    folder.mkdir()
    body = "n_samples: 2\nn_run: 1\npatch_n: 2\nmethods:\n  - clip: {name: clip, enabled: True}\n"
    body += "  - wca: {name: wca, enabled: True}\n"
    (folder / "mine.yaml").write_text("dataset: imagefolder\ndataset_name: mine\n" + body)
    (folder / "sat.yaml").write_text("dataset: eurosat\n" + body)
    return folder


def _reproduce(world, tmp_path, *extra: str) -> list[str]:
    return [
        "reproduce", "--configs", str(_configs(tmp_path / "configs")),
        "--data-root", str(world["base"] / "data" / "{dataset}"), "--models", world["spec"],
        "--descriptions", str(world["base"] / "texts" / "{dataset}"),
        "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "paper"),
        "--no-progress", *extra,
    ]  # fmt: skip


def test_reproduce_checks_what_it_needs_in_one_table_first(world, tmp_path, capsys):
    assert main(_reproduce(world, tmp_path)) == 1  # sat is missing: the rest still runs
    captured = capsys.readouterr()
    table = captured.err.split("\n== ")[0].splitlines()
    assert table[0].split() == ["needs", "where", "status"]
    rows = {line.split("  ")[0].strip(): line for line in table[1:]}
    assert set(rows) == {"dataset mine", "dataset sat", f"weights {world['spec']}"}
    assert "ok: 6 images; texts " in rows["dataset mine"]
    assert "missing: " in rows["dataset sat"] and "does not exist" in rows["dataset sat"]
    assert rows[f"weights {world['spec']}"].endswith("  ok")
    assert captured.err.count("== ") == 1  # only mine ran
    assert [p.name.split("__")[0] for p in (tmp_path / "paper").glob("*.json")] == ["mine"]
    assert "| mine" in captured.out  # the report of what ran


def test_reproduce_with_nothing_there_does_no_work_and_no_report(world, tmp_path, capsys):
    args = _reproduce(world, tmp_path)
    args[args.index("--data-root") + 1] = str(tmp_path / "none" / "{dataset}")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "nothing to run: every dataset above is missing" in err
    assert "no such file" not in err.lower() and "== " not in err
    assert not (tmp_path / "paper").exists()


def test_reproduce_descriptions_need_dataset_for_several(world, tmp_path, capsys):
    args = _reproduce(world, tmp_path)
    args[args.index("--descriptions") + 1] = str(world["texts"])
    assert main(args) == 2
    assert "--descriptions" in capsys.readouterr().err
