"""Atomic writes: a reader sees the old file or the complete new one, never a partial one."""

from __future__ import annotations

import pytest

from wca.files import write_atomic


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    assert write_atomic(path, lambda tmp: tmp.write_text("new")) == path
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_failed_write_keeps_the_old_content(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
