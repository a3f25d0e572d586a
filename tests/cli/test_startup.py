"""Parsing the command line imports no model, plotting
or web library; the CLI's defaults are the API's (one place, wca.defaults); every command's
--model help is its own and lists the spec forms the registry accepts."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from inspect import signature

import pytest

from wca import defaults
from wca.cli import build_parser, options
from wca.cli.classifier_options import classifier_crops


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


HEAVY = ("torch", "torchvision", "transformers", "open_clip", "gradio", "matplotlib")
# --help of every command, argument errors, and the parsing of commands that would run
PARSED = [
    ["--help"],
    ["--version"],
    *[[command, "--help"] for command in _commands(build_parser())],
    ["demo", "train", "--help"],
    ["descriptions", "check", "--help"],
    ["classify"],
    ["eval", "--frobnicate"],
    ["eval", "--precision", "fp64"],
    ["classify", "x.jpg", "--classes", "a,b", "--model", "demo"],
    ["eval", "--dataset", "cub", "--data-root", "d"],
    ["serve", "--port", "80"],
    ["reproduce", "--data-root", "d/{dataset}"],
]
PROBE = """
import contextlib, io, json, sys
from wca.cli import build_parser
parser = build_parser()
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit:
            pass
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_parsing_imports_no_model_plotting_or_web_library():
    """`wca --help`, `--version`, every `COMMAND --help` and argument errors
    answer before any heavy import (the handlers import what they need)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(PARSED)],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = set(json.loads(done.stdout))
    assert imported & set(HEAVY) == set(), done.stdout
    assert "wca" in imported


# settings that are wrong: each is refused by checking the settings (EvalConfig, the method
# and dataset registries), which needs no model library
SETTING_ERRORS = [
    ["--alpha", "2"],
    ["--n-run", "-3"],
    ["--dataset", "nosuch"],
    ["--methods", "nosuch"],
    ["--set", "nosuch=3"],
]
SETTINGS_PROBE = """
import contextlib, io, json, sys
from wca.cli import main
answers = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    loaded = sorted({name.split(".")[0] for name in sys.modules})
    answers.append({"code": code, "err": err.getvalue(), "modules": loaded})
print(json.dumps(answers))
"""


def test_argument_errors_are_answered_without_model_or_web_libraries(tmp_path):
    """`wca eval` with a wrong setting exits 2 with one line naming its flag, and has imported
    no torch, torchvision, open_clip or transformers by then: the method registry's options
    and the dataset registry are known without them (wca.deferred). `wca serve` checks its
    arguments before importing Gradio."""
    argvs = [["eval", *error, "--dataset", "cub", "--data-root", str(tmp_path)]
             for error in SETTING_ERRORS]  # fmt: skip
    argvs[2] = ["eval", "--dataset", "nosuch", "--data-root", str(tmp_path)]
    flags = [
        error[1].split("=")[0] if error[0] == "--set" else error[0] for error in SETTING_ERRORS
    ]
    argvs += [["serve", "--port", "99999"], ["serve", "--batch-size", "0"]]  # before Gradio
    flags += ["--port", "--batch-size"]
    done = subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE, json.dumps(argvs)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    for argv, flag, answer in zip(argvs, flags, json.loads(done.stdout), strict=True):
        lines = answer["err"].splitlines()
        assert answer["code"] == 2 and len(lines) == 1, (argv, answer["err"])
        assert lines[0].startswith("wca: error: ") and flag in lines[0], lines
        loaded = set(answer["modules"]) & {*HEAVY, "open_clip", "transformers"}
        assert loaded == set(), (argv, loaded)


def test_module_entry_point_help_imports_nothing_heavy():
    """`python -m wca --help` as the user runs it, read by -X importtime."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "wca", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "wca.cli" in modules
    assert {name.split(".")[0] for name in modules} & set(HEAVY) == set()


def test_model_libraries_load_with_the_first_model_of_their_backend():
    """Before a model loads, a command has imported torch and torchvision only: open_clip and
    transformers come with the first model of their backend (here the demo's open_clip one)."""
    probe = (
        "import sys, wca.encoders, wca.classifier, wca.pipeline\n"
        "before = {m for m in ('open_clip', 'transformers') if m in sys.modules}\n"
        "wca.encoders.load_encoder('demo', device='cpu')\n"
        "print(sorted(before), 'open_clip' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "True"]


@pytest.mark.parametrize(
    "argv",
    [
        ["eval"],
        ["extract"],
        ["classify", "x.jpg", "--classes", "a,b"],
        ["explain", "x.jpg", "--classes", "a,b", "--descriptions", "d.json"],
        ["serve"],
        ["reproduce", "--data-root", "d/{dataset}"],
    ],
)
def test_flags_left_out_give_the_api_defaults(argv):
    """Every command that loads a model: a flag left out is None, so the run options are the
    API's own (RunOptions(), load_encoder's defaults, wca.defaults)."""
    from wca.encoders import load_encoder
    from wca.encoders.base import resolve_batch_size
    from wca.options import RunOptions

    args = build_parser().parse_args(argv)
    names = options.SPEED if argv[0] in ("classify", "explain", "serve") else None
    api, run = signature(load_encoder).parameters, options.run_options(args, names)
    assert args.device is None and args.precision is None and args.batch_size is None
    assert run == RunOptions()
    assert run.device == defaults.DEVICE == api["device"].default
    assert run.precision == defaults.PRECISION == api["precision"].default
    assert run.batch_size == defaults.BATCH_SIZE == resolve_batch_size(api["batch_size"].default)
    assert (run.num_workers, run.shard_size) == (defaults.NUM_WORKERS, defaults.SHARD_SIZE)


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "x.jpg", "--classes", "a,b"],
        ["explain", "x.jpg", "--classes", "a,b", "--descriptions", "d.json"],
    ],
)
def test_classifier_crop_defaults_are_the_api_defaults(argv):
    from wca.classifier import WCAClassifier
    from wca.crops import CropSpec

    args = build_parser().parse_args(argv)
    assert classifier_crops(args) == CropSpec()
    assert (CropSpec().n_crops, CropSpec().alpha, CropSpec().seed) == (
        defaults.N_CROPS, defaults.ALPHA, defaults.SEED
    )  # fmt: skip
    for name in ("n_crops", "alpha", "seed", "crop_strategy"):  # None: the crops of CropSpec()
        assert signature(WCAClassifier).parameters[name].default is None


def test_demo_defaults_are_the_paper_defaults():
    args = build_parser().parse_args(["demo"])
    assert (args.n_crops, args.patch_n, args.alpha, args.seed) == (
        defaults.N_CROPS,
        defaults.N_CROPS,
        defaults.ALPHA,
        defaults.SEED,
    )


@pytest.mark.parametrize("command", ["eval", "extract", "classify", "reproduce"])
def test_every_setting_has_one_flag_whose_help_shows_its_default(command):
    """The flags are made from the settings' fields: one flag a field, named after it, whose
    help shows the field's own default (and the authors' per-dataset values)."""
    from wca.cli.settings import flag_of, shown_default
    from wca.config import EvalConfig
    from wca.crops import CropSpec
    from wca.options import RunOptions

    parser = _commands(build_parser())[command]
    models = {
        "eval": (EvalConfig, RunOptions),
        "extract": (EvalConfig, RunOptions),
        "classify": (CropSpec,),
        "reproduce": (),
    }[command]
    for model in models:
        for name, field in model.model_fields.items():
            if command == "extract" and name in ("n_run", "patch_n", "protocol", "methods"):
                continue  # the extraction computes no runs
            actions = [a for a in parser._actions if a.dest == name and a.help != "==SUPPRESS=="]
            assert len(actions) == 1, (command, name, actions)
            (action,) = actions
            assert action.option_strings[0] == flag_of(name)
            assert f"(default: {shown_default(field)}" in " ".join(action.help.split()), name
    if command == "eval":
        (n_crops,) = [a for a in parser._actions if a.dest == "n_crops"]
        assert "(default: 100; imagenet, imagenet-sketch, imagenet-r, imagenet-a: 60)" in " ".join(
            n_crops.help.split()
        )


def test_model_help_lists_every_spec_form_the_registry_accepts():
    """The import-free help text agrees with wca.encoders.registry."""
    from wca.encoders.registry import CHECKPOINT_SUFFIXES, NAMED_MODELS, SPEC_FORMS

    forms = {form for backend in SPEC_FORMS.values() for form, _, _ in backend}
    assert forms == set(options.MODEL_FORMS)
    assert set(options.CHECKPOINT_FILES.split("/")) == set(CHECKPOINT_SUFFIXES)
    assert {name: what for name, (what, _) in NAMED_MODELS.items()} == options.NAMED_MODELS


def _model_help(command: list[str]) -> str:
    parser = build_parser()
    for name in command:
        parser = _commands(parser)[name]
    (action,) = [a for a in parser._actions if "--model" in a.option_strings]
    return action.help


@pytest.mark.parametrize("command", [["eval"], ["extract"], ["classify"], ["explain"], ["serve"]])
def test_each_command_has_its_own_model_help(command):
    text = _model_help(command)
    for form in (*options.MODEL_FORMS, ".safetensors", "demo (the shipped demo model)"):
        assert form in text, (command, form)
    if command[0] == "serve":
        assert "default: demo" in text
    if command[0] in ("classify", "explain"):
        assert "required" in text


def test_help_keeps_hyphenated_specs_whole(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["classify", "--help"])
    out = capsys.readouterr().out
    assert "open_clip:hf-hub:ORG/NAME" in out and "open_clip:local-dir:/path/folder" in out
