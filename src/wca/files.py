"""Writing files so that a reader sees either the old content or the complete new one."""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

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
