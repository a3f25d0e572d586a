"""Hub access that never hangs: the local cache first, the network only when it answers.

Hub clients retry an unreachable host for tens of seconds before failing. Loads therefore run
first from the local cache alone (the Hub client's offline switch, set only for the duration of
the call), and go online only when the Hub answers a quick connection check.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from unittest import mock
from urllib.parse import urlsplit

from huggingface_hub import constants, try_to_load_from_cache

T = TypeVar("T")
CONNECT_TIMEOUT_S = 3.0


class ModelNotAvailableError(FileNotFoundError):
    """A model is neither on disk nor downloadable (offline, or the Hub is unreachable)."""


@contextmanager
def cache_only() -> Iterator[None]:
    """Make the Hugging Face Hub client use its local cache only, for this block."""
    with mock.patch.object(constants, "HF_HUB_OFFLINE", True):
        yield


def hub_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether the Hub endpoint accepts a TCP connection within ``timeout`` (DNS included)."""
    if constants.is_offline_mode():
        return False
    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)

    def connect() -> None:
        socket.create_connection((url.hostname, port), timeout=timeout).close()

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(connect).result(timeout=timeout + 1.0)
    except (OSError, FutureTimeout):
        return False
    finally:
        pool.shutdown(wait=False)
    return True


def load_from_hub(spec: str, load: Callable[[], T], how_to_provide: str) -> T:
    """Run ``load`` from the local cache; download only if that fails and the Hub answers.

    Raises :class:`ModelNotAvailableError` naming ``spec`` and ``how_to_provide`` when the model
    is not cached and the Hub cannot be reached (or offline mode is on).
    """
    try:
        with cache_only():
            return load()
    except Exception as cached_error:  # any failure from the cache alone: try the Hub, if any
        if not hub_reachable():
            where = (
                "offline mode is on"
                if constants.is_offline_mode()
                else (f"{constants.ENDPOINT} cannot be reached")
            )
            raise ModelNotAvailableError(
                f"{spec}: the model is not on disk and {where}. {how_to_provide}. "
                f"(Loading from the cache alone failed: {_short(cached_error)})"
            ) from cached_error
    return load()


def cached_commit(repo_id: str, filename: str) -> str | None:
    """The commit of the cached snapshot holding ``filename`` of ``repo_id``, if it is cached."""
    path = try_to_load_from_cache(repo_id, filename)
    return Path(path).parent.name if isinstance(path, str) else None


def hf_cache_hint() -> str:
    """Where the Hugging Face cache lives, to tell users which folder to fill."""
    return f"the Hugging Face cache {constants.HF_HUB_CACHE} (set by HF_HOME / HF_HUB_CACHE)"


def file_fingerprint(path: str | Path) -> str:
    """A cheap weights fingerprint: size and modification time of a file, or of a folder's files."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    parts = []
    for file in files:
        stat = os.stat(file)
        parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256(",".join(parts).encode()).hexdigest()[:16]


def _short(error: BaseException, limit: int = 200) -> str:
    """The first line of an error message, shortened."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
