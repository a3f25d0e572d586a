"""The `wca` command shell: every command is listed and reachable, errors are one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wca import __version__
from wca.cli import main

COMMANDS = [
    "demo",
    "eval",
    "extract",
    "classify",
    "explain",
    "serve",
    "describe",
    "descriptions",
    "models",
    "report",
    "reproduce",
]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listed = capsys.readouterr().out
    assert all(command in listed for command in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: wca {command}")


def test_installed_console_script_and_module_entry_point():
    script = shutil.which("wca", path=str(Path(sys.executable).parent))
    assert script is not None, "the wca console script is not installed beside this Python"
    out = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"wca {__version__}"
    module = subprocess.run(
        [sys.executable, "-m", "wca", "--version"], capture_output=True, text=True, check=True
    )
    assert module.stdout.strip() == f"wca {__version__}"
