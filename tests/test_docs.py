"""The README and the guides: the README stays a five-minute read that opens with the two
commands of a fresh machine, their Python runs as written, every relative link points to a
file (and heading) that exists, and every `wca.module.name` they cite exists. The `wca` command
lines of both parse: tests/test_readme.py."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs").glob("*.md"))
LINKED = [README, *GUIDES, ROOT / "benchmarks" / "README.md"]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def python_blocks(path: Path) -> str:
    """The ```python blocks of a markdown file, in order, as one script."""
    return "\n".join(re.findall(r"^```python\n(.*?)^```", path.read_text(), re.S | re.M))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings (a repeated one gets -1, -2, ...)."""
    found: set[str] = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            base = anchor = slug(match.group(1))
            count = 0
            while anchor in found:
                count += 1
                anchor = f"{base}-{count}"
            found.add(anchor)
    return found


def relative_links(path: Path) -> list[str]:
    """The link targets of a markdown file outside its code blocks, but web addresses."""
    targets = LINK.findall(FENCE.sub("", path.read_text()))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_the_readme_is_short_and_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200
    assert lines[2:6] == [
        "```bash",
        "bash scripts/setup.sh && .venv/bin/wca demo        # fresh machine: set up .venv/, "
        "run the offline demo",
        "bash scripts/test.sh                               # lint (ruff) + the test suite",
        "```",
    ]


def test_the_readme_links_every_guide():
    linked = {(README.parent / target).resolve() for target in relative_links(README)}
    assert {path.resolve() for path in GUIDES} <= linked


@pytest.mark.parametrize("path", LINKED, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    broken = []
    for target in relative_links(path):
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == []


def named_objects(path: Path) -> list[str]:
    """The `wca.module.name` references of a markdown file (in code spans and blocks)."""
    return re.findall(r"`(wca(?:\.\w+)+)", path.read_text())


def resolves(name: str) -> bool:
    """Whether a dotted name is a module of the package or an attribute of one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        try:
            for part in parts[cut:]:
                found = getattr(found, part)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("path", [README, *GUIDES], ids=lambda path: path.name)
def test_every_named_module_and_object_exists(path):
    assert [name for name in named_objects(path) if not resolves(name)] == []


def test_the_link_checks_find_what_is_broken(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# A title: `with code`\n## Twice\n## Twice\n[ok](page.md#a-title-with-code) "
        "[web](https://example.com/x) ![image](missing.png)\n```\n[in code](nowhere.md)\n```\n"
    )
    assert anchors(page) == {"a-title-with-code", "twice", "twice-1"}
    assert relative_links(page) == ["page.md#a-title-with-code", "missing.png"]
    assert resolves("wca.results.IDENTITY") and resolves("wca.features")
    assert not resolves("wca.results.NO_SUCH") and not resolves("wca.no_such_module.x")


@pytest.mark.slow  # loads the demo model and classifies one image with 60 crops
def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    code = python_blocks(README)
    assert len(code.strip().splitlines()) <= 12, "the README's example is meant to be short"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    truth = namespace["test_set"].classnames[namespace["label"]]
    assert printed.startswith(f"[{{'label': '{truth}', 'score': 0.9")  # right, and sure of it
    assert f"[{{'label': '{truth}', 'score': 0.9" in code  # as the README's comment says
    assert f"DescriptionScore(description='a {truth}, which has" in printed


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """The demo's exported test set (one image per class), texts and model, as
    `wca demo --export wca-demo-data` writes them."""
    from wca.demo.run import export

    return export(tmp_path_factory.mktemp("demo") / "wca-demo-data", per_class=1)


@pytest.mark.slow  # each guide loads the demo model; explanations encode ~1000 views per image
@pytest.mark.parametrize(
    "guide", ["classifying", "evaluation", "explanations", "reproducing", "aux-models"]
)
def test_the_python_of_a_guide_runs_as_written(guide, demo_data, monkeypatch):
    """Each guide's blocks run in order, from the folder holding the demo's export."""
    path = ROOT / "docs" / f"{guide}.md"
    code = python_blocks(path)
    assert code.strip()
    monkeypatch.chdir(demo_data.parent)
    namespace: dict = {}
    exec(compile(code, str(path), "exec"), namespace)
    if guide == "evaluation":
        from wca.results import read_result

        result = read_result(demo_data.parent / "results" / "demo.json")
        assert set(result.results.methods) == {"clip", "cupl", "wca"}
    if guide == "explanations":
        for name in ("descriptions.png", "where.png", "why/index.html"):
            assert (demo_data.parent / name).stat().st_size > 0
    if guide == "reproducing":
        needs = [need.what for need in namespace["plan"].needs()]
        assert needs == ["dataset cub", "dataset dtd", "weights open_clip:ViT-B-32/openai"]


@pytest.mark.slow  # a fresh interpreter: torch's import, then four small examples and one cell
def test_the_worked_examples_of_extending_run(tmp_path):
    """docs/extending.md's blocks run in order as one script in an empty folder, in a process of
    their own (they register a method, a dataset and a backend for good)."""
    script = tmp_path / "extending.py"
    script.write_text(python_blocks(ROOT / "docs" / "extending.md"))
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, str(script)], cwd=work, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "top-descriptions" in done.stdout and "colour:SIZE" in done.stdout
    assert (work / "shapes" / "labels.csv").is_file()
