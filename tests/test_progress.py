"""One progress helper for every bar; live bars only on a terminal, elsewhere
a line per phase and one every few percent (never a carriage return); `-q` silences both;
`wca demo` names its phases."""

from __future__ import annotations

import io

import pytest

from wca.cli import main
from wca.progress import STEP_PERCENT, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_every_few_percent():
    log = io.StringIO()
    with progress_bar(total=200, desc="features demo", unit="img", file=log) as bar:
        for _ in range(200):
            bar.update(1)
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert lines[0].startswith("features demo: 0% (0/200 img)")
    assert lines[-1].startswith("features demo: 100% (200/200 img)")
    assert len(lines) == 100 // STEP_PERCENT + 1  # the start, then one per step


def test_a_log_says_where_a_phase_stopped_and_counts_an_unknown_total():
    log = io.StringIO()
    bar = progress_bar(total=10, desc="scoring", unit="img", file=log)
    bar.update(3)
    bar.close()
    assert log.getvalue().splitlines()[-1].startswith("scoring: 30% (3/10 img)")
    log = io.StringIO()
    with progress_bar(desc="texts", unit="text", file=log) as bar:
        bar.update(7)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("texts: 0text") and lines[-1].startswith("texts: 7text")
    assert "\r" not in log.getvalue()


def test_a_terminal_gets_a_live_bar_and_disabled_shows_nothing():
    screen = Terminal()
    with progress_bar(total=4, desc="classify", unit="img", file=screen) as bar:
        bar.update(4)
    assert "\r" in screen.getvalue() and "4/4" in screen.getvalue()
    quiet = Terminal()
    with progress_bar(total=4, desc="classify", file=quiet, enabled=False) as bar:
        bar.update(4)
    assert quiet.getvalue() == ""


@pytest.mark.slow
def test_demo_names_its_phases_in_a_log_and_q_silences_them(tmp_path, capsys):
    args = ["demo", "--output", str(tmp_path / "demo"), "--per-class", "1", "--n-crops", "4"]
    args += ["--n-run", "2", "--patch-n", "4"]
    assert main(args) == 0
    captured = capsys.readouterr()
    err = captured.err  # not a terminal: lines, no '\r' frames
    assert "\r" not in err
    for phase in ("rendering the test set", "loading the model", "encoding the texts"):
        assert f"wca: {phase}" in err
    for phase in ("wca: features: 24 images x 5 views", "wca: scoring clip", "wca: explaining"):
        assert phase in err
    assert "features demo: 100% (24/24 img)" in err and "scoring: 100%" in err
    assert "| wca" in captured.out  # the table stays on stdout

    assert main(["-q", *args]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "| wca" in captured.out
