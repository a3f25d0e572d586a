"""The optional parts (LLM client, plotting, web page): missing, each is one line naming the
extra that installs it, and the demo still runs without plotting."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # as if not installed: importing it raises ImportError
from wca.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _run(blocked: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE, blocked, *argv], capture_output=True, text=True
    )


def test_describe_without_the_llm_client_names_the_extra(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("owl\ncat\n")
    argv = ["describe", "--classes-file", str(classes), "--output", str(tmp_path / "o.json"),
            "--llm", "m", "--base-url", "http://127.0.0.1:9"]  # fmt: skip
    done = _run("openai", *argv)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        "wca: error: generating descriptions with an LLM needs openai, which is not installed: "
        "pip install 'wca[llm]'"
    )


def test_report_plot_without_matplotlib_names_the_extra(tmp_path):
    done = _run("matplotlib", "report", str(tmp_path), "--plot", str(tmp_path / "p.png"))
    assert "pip install 'wca[plot]'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_the_demo_runs_without_matplotlib_and_says_what_it_left_out(tmp_path):
    out = tmp_path / "demo"
    done = _run("matplotlib", "demo", "--output", str(out), "--per-class", "1", "--n-crops", "2",
                "--n-run", "1", "--patch-n", "2", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no explanation.png" in done.stderr and "pip install 'wca[plot]'" in done.stderr
    assert json.loads((out / "results.json").read_text())["results"]["n_images"] == 24
    assert not (out / "explanation.png").exists()
