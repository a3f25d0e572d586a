"""Files that several processes share: atomic writes (a reader sees either the old content or
the complete new one), exclusive locks, and cheap fingerprints of file contents."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, FileLock reports them unsupported
    fcntl = None

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


def _naming(error: OSError, path: Path, tmp: Path | None) -> OSError:
    """``error`` re-made to name ``path`` when it is a plain errno error about the file being
    written (no file name, or the temporary one); any other error is returned as it is."""
    if error.errno is None or error.filename not in (None, str(path), str(tmp)):
        return error
    return OSError(error.errno, error.strerror or os.strerror(error.errno), str(path))


FINGERPRINT_BLOCK = 16 * 1024  # bytes read from each end of a file by file_fingerprint


def file_fingerprint(path: str | Path, size: int, block: int = FINGERPRINT_BLOCK) -> str:
    """The sha256 of the first and last ``block`` bytes of a file of ``size`` bytes (the whole
    file when it is smaller than two blocks): two reads, whatever the size, that tell apart two
    different images of equal size (a JPEG's tables and the end of its compressed data)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(block))
        if size > block:
            handle.seek(max(block, size - block))
            digest.update(handle.read(block))
    return digest.hexdigest()


# errors of flock where the file system keeps no locks (NFS without a lock daemon, some FUSE)
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class LocksUnsupported(OSError):
    """The file system of a lock file keeps no locks."""


class FileLock:
    """An exclusive lock held through a lock file, between processes.

    ``fcntl.flock`` on the open file: the kernel releases it when the holder closes it, exits or
    dies (SIGKILL included), so a lock is never left stale on one machine. On NFS, Linux maps
    flock to POSIX locks kept by the server, which releases them when a dead client's lease
    runs out. While held, the file names its holder (``pid on host since time``) for messages.
    ``release(remove=True)`` deletes the file; a process that was waiting on the deleted file
    sees that it was removed and locks the path anew, so two holders never overlap.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool) -> bool:
        """Take the lock: True once held; False when another holder has it and not ``wait``.
        Raises :class:`LocksUnsupported` where the file system keeps no locks."""
        if fcntl is None:
            raise LocksUnsupported(errno.ENOSYS, "no file locks on this platform", str(self.path))
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as error:
                os.close(fd)
                if error.errno in _NO_LOCKS:
                    raise LocksUnsupported(error.errno, error.strerror, str(self.path)) from error
                raise
            if self._same_file(fd):
                break
            os.close(fd)  # removed by its last holder while we waited: lock the new one
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}".encode())
        self._fd = fd
        return True

    def _same_file(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)

    def release(self, remove: bool = False) -> None:
        """Let the lock go (nothing when not held); ``remove``: delete the lock file first."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        else:
            os.ftruncate(self._fd, 0)  # no longer names a holder
        os.close(self._fd)
        self._fd = None

    def holder(self) -> str:
        """Who holds the lock, as its file says (empty when unknown)."""
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""
