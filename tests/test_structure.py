"""The shape of the package: no module over 400 lines, dependencies pointing inward (nothing
imports the command line or the web page; the core imports no front end), and library
messages that name settings, never command-line flags."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "wca"
MODULES = sorted(PACKAGE.rglob("*.py"))
FRONT_ENDS = ("wca.cli", "wca.web")
# The core: what the command line, the web page, reports and explanations are built on.
CORE = ("scoring", "crops", "preprocessing", "registry", "errors", "checks", "defaults",
        "config", "options", "results", "methods", "features", "encoders", "datasets")  # fmt: skip
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
LOGGING = {"debug", "info", "warning", "error", "warn", "exception"}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_module_is_over_400_lines():
    long = {_name(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_dependencies_point_inward(path):
    name = _name(path)
    imported = _imports(ast.parse(path.read_text()))
    if not name.startswith(FRONT_ENDS) and name != "wca.__main__":
        assert not {m for m in imported if m.startswith(FRONT_ENDS)}, name
    if name.split(".")[1:2] and name.split(".")[1] in CORE:
        assert not {m for m in imported if m.startswith(("wca.report", "wca.explain"))}, name
    if name == "wca.scoring":  # the paper's equations: torch alone (imported when first used)
        assert imported <= {"__future__", "math", "typing", "torch", "wca.deferred"}


def _messages(tree: ast.AST) -> list[str]:
    """The strings of what a module raises, warns and logs."""
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            calls.append(node.exc)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LOGGING
        ):
            calls.append(node)
    texts = []
    for call in calls:
        for argument in [*call.args, *(k.value for k in call.keywords)]:
            for part in ast.walk(argument):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    texts.append(part.value)
    return texts


@pytest.mark.parametrize("path", [p for p in MODULES if not _name(p).startswith(FRONT_ENDS)],
                         ids=_name)  # fmt: skip
def test_library_messages_name_settings_not_flags(path):
    flags = [m for m in _messages(ast.parse(path.read_text())) if FLAG.search(m)]
    assert flags == [], _name(path)


def test_the_flag_pattern_finds_flags():
    assert FLAG.search("raise it with --max-image-pixels N") and FLAG.search("--n-crops: bad")
    assert not FLAG.search("a well-known --- rule") and not FLAG.search("x--y")
