"""Atomic writes: a reader sees the old file or the complete new one, never a partial one."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from wca.cli import main
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


def test_written_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = write_atomic(tmp_path / "group.json", lambda tmp: tmp.write_text("x"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        os.umask(0o002)
        write_atomic(path, lambda tmp: tmp.write_text("y"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o664
    finally:
        os.umask(old)


def test_disk_full_names_the_path_and_errno(tmp_path, monkeypatch, capsys):
    def disk_full(tmp):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    path = tmp_path / "out.json"
    with pytest.raises(OSError) as caught:
        write_atomic(path, disk_full)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []

    # through the CLI: one line, non-zero exit, no traceback
    import wca.descriptions.progress as progress

    source = tmp_path / "in.json"
    source.write_text(json.dumps({"cat": ["A cat, which has whiskers."]}))
    real = progress.write_atomic
    monkeypatch.setattr(progress, "write_atomic", lambda p, write: real(p, disk_full))
    assert main(["descriptions", "clean", str(source), "--output", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"wca: error: {path}: No space left on device (errno ENOSPC)"


def test_out_that_is_a_directory_is_one_line(tmp_path, capsys):
    source = tmp_path / "in.json"
    source.write_text(json.dumps({"cat": ["A cat, which has whiskers."]}))
    folder = tmp_path / "results"
    folder.mkdir()
    assert main(["descriptions", "clean", str(source), "--output", str(folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"wca: error: {folder}: Is a directory (errno EISDIR)"
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_dev_full_is_reported(tmp_path):
    def to_dev_full(tmp):
        with open("/dev/full", "w") as full:
            full.write("x" * 10000)
            full.flush()

    with pytest.raises(OSError) as caught:
        write_atomic(tmp_path / "r.json", to_dev_full)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(tmp_path / "r.json")
