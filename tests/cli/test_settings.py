"""Settings on the command line and in config files: the authors' files, validation before any
work, one-line errors, one name per concept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wca.cli import main
from wca.config import resolve_config

# The seven config files of the WCA authors' release, in their shape: (file stem, dataset,
# data_path, alpha, n_samples). Their method key for WCA is `ours`; `data_path : ...` has a
# space before the colon; dtd, food101 and oxford_pet point at the folder above the dataset.
AUTHORS_CONFIGS = [
    ("cub", "cub", "data/CUB_200_2011", 0.5, 100),
    ("dtd", "dtd", "data", 0.5, 100),
    ("food101", "food101", "data", 0.5, 100),
    ("imagenet", "imagenet", "data/imagenet", 0.5, 60),
    ("imagenetv2", "imagenetv2", "data/imagenetv2", 0.5, 100),
    ("oxford_pet", "oxford_pet", "data", 0.5, 100),
    ("place365", "place365", "data/place365", 0.7, 100),
]
METHODS = ("clip", "clip-e", "clip-d", "waffle", "cupl")


def authors_yaml(dataset: str, data_path: str, alpha: float, n_samples: int) -> str:
    lines = [
        "model_size: ViT-B/32",
        "batch_size: 32",
        f"dataset: {dataset}",
        f"data_path : {data_path} ",
        "",
        f"alpha: {alpha}",
        f"n_samples: {n_samples}",
        "n_run: 20",
        "patch_n: 60",
        "",
        "methods:",
    ]
    for name in METHODS:
        lines += [f"  - {name}: ", f"      name: {name}", "      enabled: True"]
    lines += ["  - ours:", "      name: ours", "      enabled: True"]
    lines += ["      image_scale: 4.0", "      text_scale: 2.0", ""]
    return "\n".join(lines)


@pytest.mark.parametrize("stem, dataset, data_path, alpha, n_samples", AUTHORS_CONFIGS)
def test_the_authors_config_files_load(
    tmp_path, monkeypatch, stem, dataset, data_path, alpha, n_samples
):
    folder = tmp_path / "cfgs"
    folder.mkdir()
    path = folder / f"{stem}.yaml"
    path.write_text(authors_yaml(dataset, data_path, alpha, n_samples))
    monkeypatch.chdir(tmp_path)
    (tmp_path / data_path).mkdir(parents=True)  # where their main.py runs
    config = resolve_config(path=path)
    assert config.dataset in {"cub", "dtd", "food101", "imagenet", "imagenetv2",
                              "oxford_pets", "places365"}
    assert [m.name for m in config.enabled_methods()] == [*METHODS, "wca"]
    assert config.enabled_methods()[-1].options == {"image_scale": 4.0, "text_scale": 2.0}
    assert (config.alpha, config.n_crops) == (alpha, n_samples)
    assert config.data_root == data_path  # relative to the working directory, as theirs


def test_relative_data_path_falls_back_to_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "cfgs"
    (folder / "data" / "CUB_200_2011").mkdir(parents=True)
    path = folder / "cub.yaml"
    path.write_text(authors_yaml("cub", "data/CUB_200_2011", 0.5, 100))
    monkeypatch.chdir(tmp_path)  # no data/ here
    config = resolve_config(path=path)
    assert Path(config.data_root) == folder / "data" / "CUB_200_2011"
    assert any("config's folder" in note for note in config.notes)


def test_authors_configs_crop_as_their_code_unless_alpha_is_set(tmp_path):
    path = tmp_path / "place365.yaml"
    path.write_text(authors_yaml("place365", "data", 0.7, 100))
    config = resolve_config(path=path)
    assert (config.alpha, config.crop_alpha) == (0.7, 0.1)
    assert any("U(0.1, 0.9)" in note for note in config.notes)
    assert config.to_dict()["effective_alpha"] == 0.1
    for explicit in (
        resolve_config(path=path, overrides={"alpha": 0.5}),
        resolve_config(path=path, settings=["alpha=0.5"]),
    ):
        assert explicit.crop_alpha == 0.5 and not any("alpha" in n for n in explicit.notes)
    # our own shape without `ours`, and the classifier's / demo's defaults, keep 0.5
    assert resolve_config("cub").crop_alpha == 0.5


def test_the_result_records_the_model_that_ran():
    config = resolve_config("cub", overrides={"model": "hf:/somewhere/model"})
    assert config.to_dict()["model"] == "hf:/somewhere/model"
    assert "model_size" not in config.to_dict()  # the authors' name, read from their files


@pytest.mark.parametrize(
    "setting, message",
    [
        ("methods.wca.image_scale=abc", "methods.wca.image_scale: Input should be a valid number"),
        ("methods.wca.image_scale=inf", "finite number"),
        ("methods.wca.image_scale=.nan", "finite number"),
        ("methods.wca.image_scale=1000", "less than or equal to 50"),
        ("methods.waffle.draws=0", "methods.waffle.draws: Input should be greater than"),
        ("methods.clip-d.aggregate=median", "methods.clip-d.aggregate: Input should be"),
        ("alpha=nan", "alpha: Input should be a finite number"),
        ("n_run=2.5", "n_run: Input should be a valid integer"),
    ],
)
def test_every_setting_is_validated_before_work(setting, message):
    with pytest.raises(ValueError, match=message):
        resolve_config("cub", settings=[setting])


@pytest.mark.parametrize("flag", ["--image-scale", "--text-scale"])
@pytest.mark.parametrize("value", ["inf", "nan", "1000"])
def test_scale_flags_fail_before_any_extraction(tmp_path, capsys, flag, value):
    # the data root does not exist: a valid setting would fail later, on the dataset
    code = main(["eval", "--dataset", "cub", "--data-root", str(tmp_path / "none"), flag, value])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"wca: error: {flag}: Input should be") and "\n" not in err


def test_the_api_validates_method_options_the_same_way():
    from wca.methods import TextSources, build_head

    sources = TextSources(["a", "b"], sentences={"a": ["x"], "b": ["y"]})
    with pytest.raises(ValueError, match="image_scale: Input should be a finite number"):
        build_head("wca", lambda texts: None, sources, image_scale=float("inf"))


@pytest.mark.parametrize(
    "argv",
    [
        ["descriptions", "check", "{dir}", "--classes-file", "{classes}"],
        ["descriptions", "check", "{file}", "--classes-file", "{dir}"],
        ["descriptions", "clean", "{dir}", "--output", "{tmp}/out.json"],
        ["classify", "{file}", "--classes-file", "{dir}", "--descriptions", "{file}",
         "--model", "open_clip:RN50/openai"],
        ["describe", "--classes-file", "{dir}", "--output", "{tmp}/o.json", "--llm", "m"],
        ["eval", "--config", "{dir}", "--dataset", "cub", "--data-root", "{tmp}"],
    ],
)
def test_a_folder_where_a_file_belongs_is_one_line(tmp_path, capsys, argv):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    file = tmp_path / "d.json"
    file.write_text(json.dumps({"a": ["x"], "b": ["y"]}))
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\n")
    argv = [a.format(dir=folder, file=file, classes=classes, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"wca: error: {folder}: is a folder") and "\n" not in err


def test_demo_export_onto_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "existing.txt"
    target.write_text("keep me")
    assert main(["demo", "--export", str(target)]) == 2
    assert "is a file, expected a folder" in capsys.readouterr().err
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("kind", ["classes.txt", "classes.json", "descriptions.json"])
def test_non_utf8_files_are_named(tmp_path, kind):
    from wca.descriptions import load_classnames, load_descriptions

    path = tmp_path / kind
    path.write_bytes("caf\u00e9\n".encode("latin-1"))
    loader = load_descriptions if kind.startswith("desc") else load_classnames
    with pytest.raises(ValueError, match=f"{path}: not UTF-8 text"):
        loader(path)


def test_one_name_per_concept_old_spellings_kept():
    from wca.cli import build_parser
    from wca.compat import renamed_flags

    parser = build_parser()

    def parsed(argv: list[str]) -> dict:
        with pytest.warns(FutureWarning, match="is deprecated, use"):
            return vars(parser.parse_args(renamed_flags(argv)))

    for old, new in [("--n-samples", "--n-crops"), ("--runs", "--n-run")]:
        assert parsed(["eval", old, "7"]) == vars(parser.parse_args(["eval", new, "7"]))
    assert parsed(["eval", "--no-cache", "--out", "r.json", "--skip-bad-images"]) == vars(
        parser.parse_args(["eval", "--cache-dir", "none", "--output", "r.json", "--bad-images",
                           "skip"])
    )  # fmt: skip
    demo_old = parsed(["demo", "--crops", "5", "--runs", "2", "--out", "d"])
    assert demo_old == vars(parser.parse_args(["demo", "--n-crops", "5", "--n-run", "2",
                                               "--output", "d"]))  # fmt: skip
    classify = parsed(
        ["classify", "x.jpg", "--classes", "a,b", "--descriptions", "d.json", "--n-samples", "3"]
    )
    assert classify["n_crops"] == 3


def test_unknown_flag_names_the_sub_command_and_its_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--frobnicate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err  # one line, not the whole usage
    assert err == "wca eval: error: unrecognized arguments: --frobnicate (see wca eval --help)\n"


def test_methods_errors_name_the_flag(tmp_path, capsys):
    assert main(["eval", "--dataset", "cub", "--data-root", str(tmp_path),
                 "--methods", "wca,foo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wca: error: --methods: foo: unknown method 'foo'")


def test_version_and_verbosity_flags(capsys):
    with pytest.raises(SystemExit):
        main(["-V"])
    assert capsys.readouterr().out.startswith("wca ")
    from wca.cli import build_parser

    args = build_parser().parse_args(["-q", "eval"])
    assert args.quiet and not args.verbose
    check = ["descriptions", "check", "d.json", "--classes-file", "c.txt"]
    for argv in (["report", "x", "-q"], [*check, "-q"], ["report", "-v", "x"]):
        after = build_parser().parse_args(argv)  # after the command as well
        assert (after.quiet, after.verbose) == ("-q" in argv, "-v" in argv), argv
    assert build_parser().parse_args(["-q", "report", "x"]).quiet  # not reset by the command
    with pytest.raises(SystemExit) as exit_:
        main(["-v", "report", "x", "-q"])
    assert exit_.value.code == 2
    assert "-q and -v exclude each other" in capsys.readouterr().err


def test_dataset_names_are_the_same_everywhere():
    from wca.datasets import canonical_name

    assert canonical_name("oxford_pet") == canonical_name("oxford-pets") == "oxford_pets"
    assert canonical_name("place365") == "places365"
    assert resolve_config("oxford_pet").dataset == "oxford_pets"


def test_descriptions_fetch_takes_the_eval_dataset_names():
    from wca.descriptions.fetch import published_file

    assert published_file("oxford_pets", "cupl") == published_file("oxford_pet", "cupl")
    assert published_file("places365", "cupl") == published_file("place365", "cupl")


def test_cache_dir_none_from_the_command_line_keeps_features_in_memory():
    """`--cache-dir none` arrives as a path; it still means no cache (no ./none folder)."""
    from wca.cli import build_parser
    from wca.cli.options import run_options

    for command in (["eval"], ["extract"]):
        args = build_parser().parse_args([*command, "--cache-dir", "none"])
        assert run_options(args).cache_dir is None
