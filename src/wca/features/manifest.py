"""The files that describe a cache folder, as pydantic schemas: the manifest (the cache key, the
layout and an entry per shard), a rank's record of one shard, and the header each shard file
carries about itself; and how a folder's manifest is opened (:func:`opened`).

A manifest that does not validate (truncated, wrong types, a non-number shard, a hand-edited
``shard_size`` that its shard files contradict) is rebuilt from the shard files, with one
warning naming it: each names its cache key and place in the layout in its header
(:class:`ShardHeader`), and its checksum is taken anew. The shards' own layout is kept. A new
folder of a dataset cached at another root is seeded with hard links to that folder's shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError, safe_open

from wca.features.key import key_hash
from wca.files import write_atomic

log = logging.getLogger("wca")
MANIFEST = "manifest.json"

Count = Annotated[int, Field(ge=0)]
Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ShardEntry(BaseModel):
    """A finished shard: its file, images ``start`` to ``start + count``, size and sha256, and the
    digest of its images (:func:`wca.features.identity.images_digest`) under ``identity``."""

    model_config = ConfigDict(extra="ignore")

    file: str
    start: Count
    count: Annotated[int, Field(ge=1)]
    bytes: Count
    sha256: Hex
    images_sha256: Hex | None = None
    identity: str | None = None


class Manifest(BaseModel):
    """``manifest.json``: the cache key, the layout and the finished shards."""

    model_config = ConfigDict(extra="ignore")

    key_hash: str
    key: dict[str, Any]
    num_images: Count
    shard_size: Annotated[int, Field(ge=1)]
    complete: bool = False
    shards: dict[Count, ShardEntry] = {}

    @model_validator(mode="after")
    def _laid_out(self) -> Manifest:
        for shard, entry in self.shards.items():
            if entry.start != shard * self.shard_size or entry.count > self.shard_size:
                raise ValueError(
                    f"shard {shard} holds images {entry.start}-{entry.start + entry.count - 1}, "
                    f"not where shard_size {self.shard_size} puts them"
                )
        return self

    def write(self, path: Path) -> None:
        text = json.dumps(self.model_dump(), indent=1, sort_keys=True)
        write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class ShardRecord(ShardEntry):
    """``shard-NNNNN.json``: a rank's entry for one shard, until rank 0 merges it."""

    key_hash: str


class ShardHeader(BaseModel):
    """What a shard file says of itself (its safetensors metadata ``wca``)."""

    key_hash: str
    shard: Count
    shard_size: Annotated[int, Field(ge=1)]
    start: Count
    count: Annotated[int, Field(ge=1)]
    images_sha256: Hex | None = None
    identity: str | None = None

    def entry(self, path: Path) -> ShardEntry:
        """The manifest entry of this shard's file, its checksum taken now."""
        with open(path, "rb") as handle:
            sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
        fields = self.model_dump(include={"start", "count", "images_sha256", "identity"})
        return ShardEntry(file=path.name, bytes=path.stat().st_size, sha256=sha256, **fields)


def problem(error: ValidationError | ValueError) -> str:
    """One line for a file that does not validate: where and what, first error only."""
    if not isinstance(error, ValidationError):
        return f"unreadable ({error})"
    first = error.errors()[0]
    where = ".".join(map(str, first["loc"]))
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def read_header(path: Path) -> ShardHeader | None:
    """A shard file's header, None when it has none of ours (or cannot be read)."""
    try:
        with safe_open(path, "pt") as shard:
            text = (shard.metadata() or {}).get("wca")
        return None if text is None else ShardHeader.model_validate_json(text)
    except (SafetensorError, OSError, ValueError):
        return None


def shard_headers(folder: Path, key_hash: str) -> dict[int, tuple[Path, ShardHeader]]:
    """The shard files of ``folder`` whose header names ``key_hash`` and their own index."""
    found = {}
    for path in sorted(folder.glob("shard-*.safetensors")):
        index = path.name.removeprefix("shard-").removesuffix(".safetensors")
        header = read_header(path) if index.isdigit() else None
        if header is not None and (header.key_hash, header.shard) == (key_hash, int(index)):
            found[int(index)] = (path, header)
    return found


def rebuilt(folder: Path, key_hash: str) -> tuple[int | None, dict[int, ShardEntry]]:
    """The layout (``shard_size``, None when no shard is there) and the entries of the shard
    files of ``folder``, from their headers; those of another layout are left out."""
    headers = shard_headers(folder, key_hash)
    if not headers:
        return None, {}
    shard_size = Counter(h.shard_size for _, h in headers.values()).most_common(1)[0][0]
    entries = {
        shard: header.entry(path)
        for shard, (path, header) in headers.items()
        if header.shard_size == shard_size
    }
    return shard_size, entries


def sibling(folder: Path, key: dict[str, Any]) -> tuple[Path, Manifest] | None:
    """The cache folder beside ``folder`` for the same key but another dataset root (the data
    was moved or copied) with the most shards, if any."""

    def rootless(other: dict[str, Any]) -> str:
        dataset = other.get("dataset")
        dataset = {**dataset, "root": None} if isinstance(dataset, dict) else dataset
        return json.dumps({**other, "dataset": dataset}, sort_keys=True)

    best = None
    for path in folder.parent.glob("*/manifest.json"):
        if path.parent == folder:
            continue
        try:
            manifest = Manifest.model_validate_json(path.read_bytes())
        except (OSError, ValueError):
            continue
        if manifest.key == key or rootless(manifest.key) != rootless(key):
            continue
        if best is None or len(manifest.shards) > len(best[1].shards):
            best = path.parent, manifest
    return best


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.safetensors"


def sidecar_name(shard: int) -> str:
    return f"shard-{shard:05d}.images.json"


def parsed(text: bytes, key: dict[str, Any]) -> tuple[Manifest | None, str | None]:
    """The manifest of ``text`` if it validates and is of ``key``, else why not."""
    try:
        manifest = Manifest.model_validate_json(text)
    except ValueError as error:
        return None, problem(error)
    if manifest.key_hash != key_hash(key) or manifest.key != key:
        return None, "written for another cache key"
    return manifest, None


def on_disk(folder: Path, key: dict[str, Any]) -> Manifest | None:
    """The manifest of ``folder`` as it is now, if valid (no warning: a writer merging)."""
    try:
        return parsed((folder / MANIFEST).read_bytes(), key)[0]
    except OSError:
        return None


class Opened(NamedTuple):
    """A cache folder's manifest as a cache opens it (None: nothing cached yet), whether to
    write it (rebuilt or seeded), and whether its shards were seeded from another root."""

    manifest: Manifest | None
    rewrite: bool = False
    seeded: bool = False


def opened(
    folder: Path, key: dict[str, Any], num_images: int, shard_size: int, listed: bool
) -> Opened:
    """The manifest of a cache folder: one that does not validate, or whose layout its shard
    files contradict, is rebuilt from them; a new folder of a dataset that lists its files
    (``listed``) may be seeded from another root's (:func:`seeded`)."""
    path = folder / MANIFEST
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        manifest = seeded(folder, key, num_images) if listed else None
        return Opened(manifest, rewrite=manifest is not None, seeded=manifest is not None)
    except OSError as error:
        why = f"unreadable ({error.strerror})"
    else:
        manifest, why = parsed(text, key)
        if manifest is not None and manifest.shards:
            header = read_header(folder / shard_name(min(manifest.shards)))
            if header is not None and header.shard_size != manifest.shard_size:
                why = (
                    f"shard_size {manifest.shard_size} does not match its shard files "
                    f"({header.shard_size} images a shard)"
                )
        if why is None:
            return Opened(manifest)
    warnings.warn(f"{path}: {why}; rebuilding it from the shard files", stacklevel=4)
    found, entries = rebuilt(folder, key_hash(key))
    manifest = Manifest(
        key_hash=key_hash(key),
        key=key,
        num_images=num_images,
        shard_size=found or shard_size,
        shards=entries,
    )
    return Opened(manifest, rewrite=True)


def seeded(folder: Path, key: dict[str, Any], num_images: int) -> Manifest | None:
    """For a dataset cached at another root (moved or copied) and not yet here: the shards and
    sidecars of that root's folder, hard-linked into this one (the cache checks their images
    one by one when it loads them)."""
    if any(folder.glob("shard-*.safetensors")):
        return None
    found = sibling(folder, key)
    if found is None:
        return None
    source, manifest = found
    folder.mkdir(parents=True, exist_ok=True)
    linked = {}
    for shard, entry in manifest.shards.items():
        try:
            _link(source / entry.file, folder / shard_name(shard))
        except OSError:  # no hard links here, or the file is gone: recomputed
            continue
        with contextlib.suppress(OSError):  # without its sidecar, its images are read
            _link(source / sidecar_name(shard), folder / sidecar_name(shard))
        linked[shard] = entry
    log.info(
        f"{folder}: these images were cached at another root: {len(linked)} shards linked "
        f"from {source}, checked image by image"
    )
    return Manifest(
        key_hash=key_hash(key),
        key=key,
        num_images=num_images,
        shard_size=manifest.shard_size,
        shards=linked,
    )


def _link(source: Path, target: Path) -> None:
    with contextlib.suppress(FileExistsError):
        os.link(source, target)
