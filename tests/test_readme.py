"""Every `wca` command line in the README parses with the real parser : a
renamed or removed flag fails here. The Python snippets run in tests/test_explain.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from wca.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """The `wca ...` lines of the README's bash blocks, continuation lines joined, comments cut
    (also `torchrun ... -m wca ...`)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "-m" in words and "wca" in words[words.index("-m") + 1 :][:1]:
                words = words[words.index("-m") + 2 :]
            elif words[:1] in (["wca"], [".venv/bin/wca"]):
                words = words[1:]
            else:
                continue
            commands.append(shlex.join(words))
    return commands


def test_the_readme_has_commands():
    assert len(readme_commands()) >= 15


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command, capsys):
    parser = build_parser()
    args, unknown = parser.parse_known_args(shlex.split(command))
    assert not unknown, f"{command}: unknown arguments {unknown}"
    assert hasattr(args, "handler"), f"{command}: no such command"
