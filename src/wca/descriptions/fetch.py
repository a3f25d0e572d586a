"""Download the published description sets into a local cache and verify them.

``published.json`` (shipped in this package) records, for every known file, where it lives
upstream and its size and SHA-256. A file is kept only when both match, and a verified cached
file is used without touching the network. Files land in ``<cache>/<dataset>/<set>.json``,
the same layout as the project's descriptors folder, so a cached dataset folder can be used
wherever a descriptions folder is expected.

Upstream homes: the WCA authors' repository for ``<dataset>/<set>.json`` and the CuPL authors'
repository for ``cupl-original/<file>.json``. ``WCA_DESCRIPTIONS_URL`` (or ``base_url``)
replaces both with one server laid out like the descriptors folder, e.g. a mirror; a
``file://`` URL names such a folder on this machine. A failed fetch leaves no file and no
folder behind that it created.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import httpx

from wca.dataset_names import dataset_key
from wca.defaults import cache_dir
from wca.files import write_atomic

REGISTRY_FILE = "published.json"
SOURCES = {
    "wca": "https://raw.githubusercontent.com/tmlr-group/WCA/main/prompts/",
    "cupl": "https://raw.githubusercontent.com/sarahpratt/CuPL/main/all_prompts/",
}
# Sets published per dataset by the WCA authors (class-name lists are not fetched).
WCA_SETS = ("cupl", "clip-d", "clip-e", "base", "full")
CUPL_DATASET = "cupl-original"
URL_ENV = "WCA_DESCRIPTIONS_URL"


class FetchError(RuntimeError):
    """A download that could not be completed; the message says how to get the file by hand."""


@dataclass(frozen=True)
class PublishedFile:
    """One published file: its path in the cache, its upstream URL, size and SHA-256."""

    path: str
    url: str
    size: int
    sha256: str


def default_cache_dir() -> Path:
    """``wca.defaults.cache_dir("descriptions")``: ``$WCA_CACHE_DIR/descriptions``, else the
    user cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``) + ``/wca/descriptions``."""
    return cache_dir("descriptions")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_registry(directory: str | Path) -> dict:
    """The registry for the published files in a descriptors folder (how published.json is made).

    Takes ``<dataset>/<set>.json`` for the WCA sets and every ``cupl-original/*.json``.
    """
    directory = Path(directory)
    files: dict[str, dict] = {}
    for path in sorted(directory.glob("*/*.json")):
        dataset, name = path.parent.name, path.stem
        if dataset == CUPL_DATASET:
            source, remote = "cupl", path.name
        elif name in WCA_SETS:
            source, remote = "wca", f"{dataset}/{path.name}"
        else:
            continue
        files[f"{dataset}/{path.name}"] = {
            "source": source,
            "remote": remote,
            "size": path.stat().st_size,
            "sha256": sha256_file(path),
        }
    return {"sources": SOURCES, "files": files}


@cache
def _registry() -> dict:
    text = resources.files("wca.descriptions").joinpath(REGISTRY_FILE).read_text("utf-8")
    return json.loads(text)


def published_sets() -> dict[str, list[str]]:
    """The sets that can be fetched, by dataset."""
    sets: dict[str, list[str]] = {}
    for path in _registry()["files"]:
        dataset, name = path.split("/", 1)
        sets.setdefault(dataset, []).append(name.removesuffix(".json"))
    return sets


def published_file(dataset: str, set_name: str, base_url: str | None = None) -> PublishedFile:
    """The registry entry of ``dataset``/``set_name``; ``base_url`` (or $WCA_DESCRIPTIONS_URL)
    is a mirror laid out like the descriptors folder. ``dataset`` is a name of ``wca eval``
    (``oxford_pets``) or the authors' folder name (``oxford_pet``)."""
    registry = _registry()
    published = {dataset_key(name): name for name in published_sets()}
    dataset = published.get(dataset_key(dataset), dataset)
    path = f"{dataset}/{set_name}.json"
    if path not in registry["files"]:
        sets = published_sets()
        if dataset not in sets:
            raise ValueError(f"unknown dataset {dataset!r}; published: {', '.join(sorted(sets))}")
        raise ValueError(
            f"no published set {set_name!r} for {dataset}; available: {', '.join(sets[dataset])}"
        )
    entry = registry["files"][path]
    base_url = base_url or os.environ.get(URL_ENV)
    if base_url:
        url = f"{base_url.rstrip('/')}/{path}"
    else:
        url = registry["sources"][entry["source"]] + entry["remote"]
    return PublishedFile(path=path, url=url, size=entry["size"], sha256=entry["sha256"])


def verify(path: str | Path, entry: PublishedFile) -> str | None:
    """None if the file at ``path`` has the recorded size and SHA-256, else what differs."""
    size = Path(path).stat().st_size
    if size != entry.size:
        return f"size {size} bytes, expected {entry.size}"
    digest = sha256_file(path)
    if digest != entry.sha256:
        return f"SHA-256 {digest}, expected {entry.sha256}"
    return None


def fetch(
    dataset: str,
    set_name: str,
    directory: str | Path | None = None,
    *,
    base_url: str | None = None,
    connect_timeout: float = 5.0,
    timeout: float = 60.0,
) -> Path:
    """The verified local copy of a published set, downloaded into the cache if needed.

    A cached file that verifies is returned without network access; one that does not is
    downloaded again. A download is written beside its destination and renamed into place
    only after it verifies, so a tampered or truncated file is never kept.
    Raises FetchError (with instructions for a manual download) when the file cannot be had.
    """
    entry = published_file(dataset, set_name, base_url)
    destination = Path(directory).expanduser() if directory else default_cache_dir()
    destination = destination / entry.path
    if destination.is_file() and verify(destination, entry) is None:
        return destination

    by_hand = (
        f"To install it by hand, download {entry.url} and save it as {destination} "
        f"({entry.size} bytes, SHA-256 {entry.sha256})."
    )

    def download_verified(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            _download(entry, handle, httpx.Timeout(timeout, connect=connect_timeout), by_hand)
        problem = verify(tmp, entry)
        if problem:
            raise FetchError(
                f"{entry.url}: the downloaded file does not match the published one ({problem}); "
                f"it was not kept. {by_hand}"
            )

    created = _missing_folders(destination.parent)
    try:
        return write_atomic(destination, download_verified)
    except BaseException:
        for folder in created:  # innermost first; rmdir refuses a folder something else filled
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _download(entry: PublishedFile, handle, timeout: httpx.Timeout, by_hand: str) -> None:
    """Stream ``entry.url`` into ``handle``, stopping once it is longer than expected."""
    if urlparse(entry.url).scheme == "file":
        _copy_local(entry, handle, by_hand)
        return
    written = 0
    try:
        with httpx.stream("GET", entry.url, timeout=timeout, follow_redirects=True) as response:
            if response.status_code != 200:
                raise FetchError(f"{entry.url}: HTTP {response.status_code}. {by_hand}")
            for chunk in response.iter_bytes():
                written += len(chunk)
                if written > entry.size:
                    raise FetchError(
                        f"{entry.url}: longer than the published {entry.size} bytes; the file "
                        f"was not kept. {by_hand}"
                    )
                handle.write(chunk)
    except httpx.HTTPError as error:
        raise FetchError(
            f"could not download {entry.url} ({type(error).__name__}: {error}); offline? {by_hand}"
        ) from error


def _copy_local(entry: PublishedFile, handle, by_hand: str) -> None:
    """Copy a ``file://`` mirror's file into ``handle``, with the same size limit as a download."""
    source = Path(url2pathname(urlparse(entry.url).path))
    try:
        with open(source, "rb") as local:
            data = local.read(entry.size + 1)
    except OSError as error:
        raise FetchError(f"{entry.url}: {error.strerror or error}. {by_hand}") from error
    if len(data) > entry.size:
        raise FetchError(
            f"{entry.url}: longer than the published {entry.size} bytes; the file was not kept. "
            f"{by_hand}"
        )
    handle.write(data)
