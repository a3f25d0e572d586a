"""The cache's locks (filelock's flock locks): a holder named in its file, its file removed
when free, a waiter that waits while the holder progresses and, once a stopped holder (SIGSTOP)
has made none for ``lock_timeout``, fails naming it or with ``lock_takeover`` takes over; and
file systems that keep no locks."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cache_worker import IMAGES, SHARD_SIZE
from cli_world import build_world, extract_args
from conftest import SUPPORT
from fake_encoder import FakeEncoder
from feature_world import TinyDataset, extract, same_features
from wca.cli import main
from wca.errors import LockStalled
from wca.features import MANIFEST
from wca.files import FileLock, Patience

TIMEOUT = 600  # seconds a process may take on a loaded machine (idle: a few): a hang guard only


def _start(script: str, *args: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SUPPORT / script), *map(str, args)]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _holder(path: Path, *options: object) -> subprocess.Popen:
    """A process holding the lock ``path`` (tests/support/lock_holder.py), once it holds it."""
    process = _start("lock_holder.py", path, *options)
    line = process.stdout.readline()
    assert line == "held\n", process.communicate(timeout=TIMEOUT)
    return process


def _end(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGCONT)
    process.kill()
    process.communicate(timeout=TIMEOUT)


def _wait_for_file(path: Path, process: subprocess.Popen) -> None:
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"worker ended ({process.returncode}): {process.stderr.read()}")
        threading.Event().wait(0.01)


def test_a_lock_file_removed_by_its_holder_is_locked_anew(tmp_path):
    path = tmp_path / "shard-00000.lock"
    first, second = FileLock(path), FileLock(path)
    assert first.try_acquire()
    assert f"pid {os.getpid()} on " in second.holder()
    assert not second.try_acquire()  # another open file of the same process: excluded
    first.release(remove=True)
    assert not path.exists()
    assert second.try_acquire() and path.exists()
    second.release()
    assert path.exists() and second.holder() == ""  # kept unless asked, naming nobody


def test_a_holder_whose_lock_was_taken_over_leaves_the_new_holders_file(tmp_path):
    path = tmp_path / "shard-00000.lock"
    stalled, taker = FileLock(path), FileLock(path)
    assert stalled.try_acquire()
    path.unlink()  # what a takeover does: the stalled holder keeps its lock on the old file
    assert taker.try_acquire()
    named = taker.holder()
    stalled.release(remove=True)
    assert path.exists() and taker.holder() == named  # not removed, not emptied
    taker.release(remove=True)
    assert not path.exists()


@pytest.mark.slow
def test_a_stopped_holder_is_named_once_it_has_made_no_progress(tmp_path):
    path = tmp_path / "manifest.lock"
    holder = _holder(path)
    try:
        holder.send_signal(signal.SIGSTOP)
        with pytest.raises(LockStalled) as raised:
            FileLock(path).wait(Patience(0.2))
        message = str(raised.value)
        assert message.startswith(f"{path}: held by pid {holder.pid} on ")
        assert "no progress for 0.2 s (lock_timeout)" in message
        assert message.endswith("take its lock over (lock_takeover)") and "\n" not in message
        assert raised.value.setting == "lock_takeover"
        taker = FileLock(path)
        taker.wait(Patience(0.2, takeover=True))
        assert taker.held and taker.holder().startswith(f"pid {os.getpid()} on ")
        taker.release()
    finally:
        _end(holder)


@pytest.mark.slow
def test_a_holder_that_makes_progress_is_waited_for_past_the_lock_timeout(tmp_path):
    path, release = tmp_path / "shard-00000.lock", tmp_path / "release"
    holder = _holder(path, "--release", release, "--beat", 0.01)  # progress every 10 ms
    waiter = FileLock(path)
    # the holder lets go once the waiter has waited three times its patience
    timer = threading.Timer(3.0, release.touch)
    timer.start()
    try:
        waiter.wait(Patience(1.0))
        assert release.exists() and waiter.held  # it waited for the holder to finish
        waiter.release(remove=True)
    finally:
        timer.cancel()
        _end(holder)


@pytest.mark.slow
def test_a_stopped_shard_holder_is_taken_over_and_writes_the_same_bytes_on_resuming(tmp_path):
    cache, started, release = tmp_path / "cache", tmp_path / "started", tmp_path / "release"
    first = _start("cache_worker.py", cache, "--hold", started, release)
    try:
        _wait_for_file(started, first)  # inside its first shard, holding it
        first.send_signal(signal.SIGSTOP)
        encoder = FakeEncoder()
        features = extract(
            encoder,
            TinyDataset(IMAGES),
            cache,
            shard_size=SHARD_SIZE,
            lock_timeout=0.3,
            lock_takeover=True,
        )
        assert encoder.views == IMAGES * 6  # every shard, the stalled one's too
        fresh = extract(FakeEncoder(), TinyDataset(IMAGES), None, shard_size=SHARD_SIZE)
        same_features(features, fresh)
        first.send_signal(signal.SIGCONT)
        release.touch()
        out, err = first.communicate(timeout=TIMEOUT)
        assert first.returncode == 0, err
        views = json.loads(out)["views"]  # the shards it had claimed, written once more
        assert views > 0 and views % (SHARD_SIZE * 6) == 0
    finally:
        _end(first)
    encoder = FakeEncoder()
    same_features(extract(encoder, TinyDataset(IMAGES), cache, shard_size=SHARD_SIZE), features)
    assert encoder.views == 0
    folder = features.source
    assert [p.name for p in folder.glob("*.lock")] == ["manifest.lock"]
    assert json.loads((folder / MANIFEST).read_text())["complete"]


@pytest.mark.slow
def test_a_stopped_holder_fails_the_cli_in_one_line_keeping_the_other_shards(
    tmp_path, capsys
):
    world = build_world(tmp_path)
    cache = tmp_path / "cache"
    assert main(extract_args(world, cache)) == 0
    folder = next(cache.glob("*/*"))
    (folder / "shard-00000.safetensors").unlink()  # to do again
    (folder / "shard-00002.safetensors").unlink()
    holder = _holder(folder / "shard-00000.lock")
    try:
        holder.send_signal(signal.SIGSTOP)
        capsys.readouterr()
        assert main([*extract_args(world, cache), "--lock-timeout", "0.3"]) == 1
        *before, error = capsys.readouterr().err.splitlines()
        assert "waiting for shard 0, which another process is encoding" in before[-1]
        assert error.startswith(
            f"wca: error: {folder / 'shard-00000.lock'}: held by pid {holder.pid} on "
        )
        assert error.endswith("(lock_takeover) (pass --lock-takeover)")
        assert (folder / "shard-00002.safetensors").is_file()  # done before it gave up
    finally:
        _end(holder)


def test_where_the_file_system_keeps_no_locks_every_process_encodes_every_shard(
    tmp_path, monkeypatch
):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    encoder = FakeEncoder()
    with pytest.warns(UserWarning, match="no file locks here .*each encode every shard"):
        features = extract(encoder, TinyDataset(), tmp_path)
    assert encoder.views == 7 * 6
    monkeypatch.undo()
    encoder = FakeEncoder()
    same_features(extract(encoder, TinyDataset(), tmp_path), features)
    assert encoder.views == 0
