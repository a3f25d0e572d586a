"""Every `wca` command line of the README and the guides (docs/*.md) parses with the real
parser: a renamed or removed flag fails here. Their Python runs in tests/test_docs.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from wca.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


def commands(path: Path) -> list[str]:
    """The `wca ...` lines of a markdown file's bash blocks, continuation lines joined, comments
    cut (also `torchrun ... -m wca ...`)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "-m" in words and "wca" in words[words.index("-m") + 1 :][:1]:
                words = words[words.index("-m") + 2 :]
            elif words[:1] in (["wca"], [".venv/bin/wca"]):
                words = words[1:]
            else:
                continue
            found.append(shlex.join(words))
    return found


def test_the_readme_shows_the_main_commands():
    shown = {command.split()[0] for command in commands(README)}
    assert shown >= {"demo", "eval", "report", "reproduce", "classify", "explain", "describe",
                     "descriptions", "serve", "methods", "datasets", "models"}  # fmt: skip


@pytest.mark.parametrize(
    "command",
    [(path.relative_to(ROOT).as_posix(), command) for path in DOCS for command in commands(path)],
    ids=str,
)
def test_a_documented_command_parses(command):
    where, line = command
    args, unknown = build_parser().parse_known_args(shlex.split(line))
    assert not unknown, f"{where}: {line}: unknown arguments {unknown}"
    assert hasattr(args, "handler"), f"{where}: {line}: no such command"
