"""Files that several processes share: atomic writes (a reader sees either the old content or
the complete new one), and exclusive locks that name their holder and notice one that stalls."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wca.errors import LockStalled

log = logging.getLogger("wca")

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux), else by setting
    and restoring it under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary file beside ``path``, sync it, and rename it over
    ``path``. If ``write`` raises, ``path`` is untouched and the temporary file is removed.

    The file gets the mode a plain ``open()`` would give it (``0o666`` less the umask), not the
    temporary file's private ``0o600``, so a shared cache stays readable by the group. An OS
    error (disk full, ``path`` a directory) is raised naming ``path``, not the temporary file.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _naming(error, path, None) from error
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise _naming(error, path, tmp) from error
    finally:
        tmp.unlink(missing_ok=True)
    return path


FINGERPRINT_BLOCK = 16 * 1024  # bytes read from each end of a file by file_fingerprint


def file_fingerprint(path: str | Path, size: int, block: int = FINGERPRINT_BLOCK) -> str:
    """The sha256 of the first and last ``block`` bytes of a file of ``size`` bytes (the whole
    file when it is smaller than two blocks): two reads whatever the size, which stamp an archive
    of many images (a tar shard, a dataset's array file) with its stat."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(block))
        if size > block:
            handle.seek(max(block, size - block))
            digest.update(handle.read(block))
    return digest.hexdigest()


def _naming(error: OSError, path: Path, tmp: Path | None) -> OSError:
    """``error`` re-made to name ``path`` when it is a plain errno error about the file being
    written (no file name, or the temporary one); any other error is returned as it is."""
    if error.errno is None or error.filename not in (None, str(path), str(tmp)):
        return error
    return OSError(error.errno, error.strerror or os.strerror(error.errno), str(path))


# errors of flock where the file system keeps no locks (NFS without a lock daemon, some FUSE)
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
BEAT_SECONDS = 1.0  # a holder marks its progress at most this often (one utime)


class LocksUnsupported(OSError):
    """The file system of a lock file keeps no locks."""


@dataclass(frozen=True)
class Patience:
    """How long a process waits for a lock that another holds: as long as the holder makes
    progress (its lock file changes); once it has shown none for ``seconds`` (a stopped or hung
    process keeps its lock forever), fail naming it, or with ``takeover`` take the lock over."""

    seconds: float = 600.0
    takeover: bool = False


class FileLock:
    """An exclusive lock held through a lock file, between processes.

    The lock is filelock's :class:`~filelock.UnixFileLock` (``flock``): the kernel releases it
    when its holder exits or dies (SIGKILL included), so it is never left stale by a dead
    process on one machine (on NFS, the server releases a dead client's locks when its lease
    runs out); a waiter that gets the lock of a file removed meanwhile locks the path anew.
    Added here: while held, the file names its holder (``pid on host since time``) for
    messages; :meth:`beat` marks the holder's progress (the file's mtime); :meth:`wait` waits
    while the holder progresses and gives up, or takes over, once it has not for a while;
    ``release(remove=True)`` deletes the file, unless it is no longer this holder's.
    """

    def __init__(self, path: str | Path) -> None:
        import filelock  # with the first lock: commands that fail on their arguments need none

        self.path = Path(path)
        # not thread-local: the view pipeline's thread claims shards that the main thread frees
        self._lock = filelock.UnixFileLock(
            self.path, thread_local=False, on_acquired=self._acquired
        )
        self._fd: int | None = None  # filelock's descriptor of the held file, open while held
        self._beaten = 0.0

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def _acquired(self, fd: int) -> None:
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}".encode())
        self._fd, self._beaten = fd, time.monotonic()

    def try_acquire(self) -> bool:
        """Take the lock if no other holder has it: whether it is held now. Raises
        :class:`LocksUnsupported` where the file system keeps no locks."""
        return self._attempt(blocking=False)

    def wait(self, patience: Patience) -> None:
        """Take the lock, waiting while its holder makes progress. A holder that has shown none
        for ``patience.seconds`` raises :class:`~wca.errors.LockStalled` naming it, or with
        ``patience.takeover`` loses the lock: its file is removed (the stalled process keeps
        its lock on the removed file) and the path is locked anew."""
        while True:
            watch = _Watch(self.path, patience.seconds)
            if self._attempt(blocking=True, cancel_check=watch.stalled):
                return
            holder = self.holder() or "a process that left no name"
            quiet = f"which has made no progress for {patience.seconds:g} s (lock_timeout)"
            if not patience.takeover:
                raise LockStalled(
                    f"{self.path}: held by {holder}, {quiet}; if that process is stopped or "
                    "hung, end it, or take its lock over (lock_takeover)"
                )
            log.warning(f"{self.path}: taking the lock over from {holder}, {quiet}")
            watch.remove_stalled()

    def _attempt(self, blocking: bool, cancel_check: Callable[[], bool] | None = None) -> bool:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=-1, blocking=blocking, cancel_check=cancel_check)
        except Timeout:
            return False
        except NotImplementedError as error:  # no flock on this platform
            raise LocksUnsupported(errno.ENOSYS, "no file locks here", str(self.path)) from error
        except OSError as error:
            if error.errno in _NO_LOCKS:
                raise LocksUnsupported(error.errno, error.strerror, str(self.path)) from error
            raise
        return True

    def beat(self) -> None:
        """Mark the holder's progress (the lock file's mtime), at most every
        :data:`BEAT_SECONDS`; nothing when not held."""
        now = time.monotonic()
        if self._fd is not None and now - self._beaten >= BEAT_SECONDS:
            os.utime(self._fd)
            self._beaten = now

    def release(self, remove: bool = False) -> None:
        """Let the lock go (nothing when not held). ``remove``: delete the lock file first,
        unless another process took the lock over (the path is no longer this file); else the
        file is emptied (it no longer names a holder)."""
        if not self.held:
            return
        try:
            if not remove:
                os.ftruncate(self._fd, 0)
            elif self._file_is_held():
                self.path.unlink(missing_ok=True)
        finally:
            self._fd = None
            self._lock.release()

    def _file_is_held(self) -> bool:
        try:
            return os.path.samestat(os.fstat(self._fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def holder(self) -> str:
        """Who holds the lock, as its file says (empty when unknown)."""
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""


class _Watch:
    """A waiter's view of a held lock file: when it last changed (file, mtime or size), by the
    waiter's own clock (the holder may run on another machine, with another clock)."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.path, self.seconds = path, seconds
        self.seen, self.since = self._look(), time.monotonic()

    def _look(self) -> tuple[int, int, int, int] | None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size

    def stalled(self) -> bool:
        """Whether the file has not changed for ``seconds`` (filelock asks between attempts)."""
        now = self._look()
        if now != self.seen:
            self.seen, self.since = now, time.monotonic()
        return time.monotonic() - self.since >= self.seconds

    def remove_stalled(self) -> None:
        """Remove the lock file if it is still the stalled one (a process that took it over
        meanwhile holds a new one: that is progress, and stays)."""
        now = self._look()
        if now is not None and self.seen is not None and now[:2] == self.seen[:2]:
            self.path.unlink(missing_ok=True)
