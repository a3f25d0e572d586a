"""The feature cache: the safetensors shards of one feature pass, their checks, and how
processes share them.

``<cache_dir>/<dataset>/<key hash>/`` holds ``shard-NNNNN.safetensors`` files of ``shard_size``
images each and ``manifest.json`` (the full cache key and a sha256 per shard). Shards are
written to a temporary name and renamed, so a file under a shard's name is always complete; a
shard whose checksum or header does not verify is recomputed, never used. A full disk stops the
pass with an :class:`OSError` (``ENOSPC``) naming the folder; the finished shards are kept and
no temporary file is left.

The key (:mod:`wca.features.key`) holds what changes every image's numbers. Each shard records
a digest of its images' identities (path, label, size, mtime and a fingerprint of the first and
last 16 KB: :func:`wca.features.key.image_identities`), and a shard whose images differ from
the files now on disk is recomputed alone: an image edited, replaced or fixed in place costs
one shard, not the cache. Shards cached by wca before the fingerprint (no ``identity`` in their
entry) are recomputed once.

Shards are indexed by position. Deleting or inserting an image shifts the images after it, so
every shard from that one on is recomputed, and the shards before it are kept. This is exact
rather than merely cautious: crops are drawn from ``(seed, image index)`` (the authors'
protocol), so a shifted image gets other crops and its cached numbers would be wrong.
Datasets that do not list their files (no ``paths``) are identified by their length instead.

Several processes may fill one cache at once (:mod:`wca.features.claims`): a process encodes a
shard only while it holds ``shard-NNNNN.lock`` (:class:`wca.files.FileLock`), and every writer
merges its entries into the manifest under ``manifest.lock``, so no entry is lost. Ranks of a
distributed run (:mod:`wca.features.distributed`) record each shard in a ``shard-NNNNN.json``
beside it instead; rank 0 merges the records into the manifest.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from wca import defaults
from wca.features.embeddings import Features, assemble
from wca.features.key import (
    FORMAT_VERSION,
    IDENTITY,
    cache_key,
    dataset_identity,
    image_identities,
    key_hash,
)
from wca.files import FileLock, LocksUnsupported, write_atomic

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "Features",
    "ShardCache",
    "assemble",
    "cache_key",
    "dataset_identity",
    "image_identities",
]

MANIFEST = "manifest.json"
DEFAULT_SHARD_SIZE = defaults.SHARD_SIZE  # images per shard: ~125 MB at N=60, D=512, fp32


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _save_shard(tensors: dict[str, Tensor], metadata: dict[str, str], path: Path) -> None:
    """safetensors' ``save_file``, its I/O errors (``... (os error 28)``) raised as the
    :class:`OSError` they wrap, so that a full disk is reported as one."""
    try:
        save_file(tensors, path, metadata=metadata)
    except SafetensorError as error:
        found = re.search(r"os error (\d+)|code: (\d+)", str(error))
        if found is None:
            raise
        code = int(found.group(1) or found.group(2))
        raise OSError(code, os.strerror(code), str(path)) from error


class ShardCache:
    """One cache folder: the manifest and the shards of one cache key.

    ``images``: :func:`image_identities` of the dataset, checked per shard (None: not checked,
    the key alone identifies the images).
    """

    def __init__(
        self,
        root: Path,
        key: dict[str, Any],
        num_images: int,
        shard_size: int,
        images: Sequence[str] | None = None,
    ):
        if images is not None and len(images) != num_images:
            raise ValueError(f"{len(images)} image identities for {num_images} images")
        self.key = key
        self.images = images
        self.key_hash = key_hash(key)
        name = str(key["dataset"]["name"]) + (
            f"-{key['dataset']['split']}" if key["dataset"]["split"] else ""
        )
        self.folder = Path(root) / name.replace("/", "_") / self.key_hash[:16]
        self.manifest_path = self.folder / MANIFEST
        self.num_images = num_images
        self.shards: dict[str, dict[str, Any]] = {}
        self._written: set[str] = set()  # shards this process wrote: its entries are the newest
        self._told_outdated = False
        self.shard_size = shard_size
        manifest = self._read_manifest(warn=True)
        if manifest is not None:
            self.shard_size = manifest["shard_size"]  # resume with the layout already on disk
            # entries past the end (images were removed) are dropped, their files at next write
            self.shards = {k: v for k, v in manifest["shards"].items() if int(k) < self.num_shards}
        self.read_records()

    def _read_manifest(self, warn: bool) -> dict[str, Any] | None:
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            if warn:
                warnings.warn(
                    f"{self.manifest_path}: unreadable ({error}); recomputing", stacklevel=3
                )
            return None
        if manifest.get("key_hash") != self.key_hash or manifest.get("key") != self.key:
            if warn:
                warnings.warn(f"{self.manifest_path}: other cache key; recomputing", stacklevel=3)
            return None
        return manifest

    @property
    def num_shards(self) -> int:
        return -(-self.num_images // self.shard_size)

    def shard_range(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_images))

    def shard_path(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.safetensors"

    def record_path(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.json"

    def shard_lock(self, shard: int) -> FileLock:
        """The lock a process holds while it encodes and writes this shard."""
        return FileLock(self.folder / f"shard-{shard:05d}.lock")

    def _records(self, paths: Iterator[Path] | None = None) -> dict[str, dict[str, Any]]:
        """The shard records beside their files (by ranks, since the last manifest) whose key
        and place in the layout match this cache."""
        found = {}
        for path in sorted(self.folder.glob("shard-*.json") if paths is None else paths):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                shard = int(path.stem.removeprefix("shard-"))
            except (OSError, ValueError):
                continue  # unreadable or gone: that shard is verified as missing and recomputed
            if not isinstance(record, dict) or record.get("key_hash") != self.key_hash:
                continue
            where = self.shard_range(shard) if 0 <= shard < self.num_shards else range(0)
            if (record.get("start"), record.get("count")) == (where.start, len(where)):
                found[str(shard)] = {k: v for k, v in record.items() if k != "key_hash"}
        return found

    def read_records(self) -> None:
        """Add the shards recorded beside their files to this cache's entries."""
        self.shards.update(self._records())

    def entry_on_disk(self, shard: int) -> dict[str, Any] | None:
        """A shard's entry as the files say now (another process may have written it since
        this cache was opened): its record, else the manifest's entry."""
        record = self._records(iter([self.record_path(shard)])).get(str(shard))
        manifest = self._read_manifest(warn=False) if record is None else None
        return record if manifest is None else manifest["shards"].get(str(shard))

    @contextlib.contextmanager
    def _manifest_lock(self) -> Iterator[None]:
        """Hold ``manifest.lock`` (where the file system keeps locks; elsewhere writers that
        overlap may drop each other's entries, and those shards are recomputed later)."""
        lock = FileLock(self.folder / "manifest.lock")
        with contextlib.suppress(LocksUnsupported):
            lock.acquire(wait=True)
        try:
            yield
        finally:
            lock.release()

    def merge_records(self) -> None:
        """Rank 0, after every rank finished: the records into the manifest."""
        self._write_manifest()

    def images_sha256(self, shard: int) -> str | None:
        """The digest of the identities of a shard's images (None when they are not checked)."""
        if self.images is None:
            return None
        rows = self.shard_range(shard)
        return hashlib.sha256("\n".join(self.images[rows.start : rows.stop]).encode()).hexdigest()

    def write_shard(self, shard: int, tensors: dict[str, Tensor], record: bool = False) -> None:
        """Write a shard and note it in the manifest, or (``record``, a rank of a distributed
        run) in its own record file, so ranks never write the same file. A full disk raises an
        :class:`OSError` (``ENOSPC``) naming the cache folder."""
        path = self.shard_path(shard)
        try:
            self._write_shard(shard, path, tensors, record)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            raise OSError(
                errno.ENOSPC,
                f"no space left on device for {path.name} (the finished shards are kept: free "
                "some space and run again to resume)",
                str(self.folder),
            ) from error

    def _write_shard(self, shard: int, path: Path, tensors: dict[str, Tensor], record: bool):
        self.folder.mkdir(parents=True, exist_ok=True)
        identity = {
            "key_hash": self.key_hash,
            "shard": shard,
            "images_sha256": self.images_sha256(shard),
        }
        # one metadata entry: safetensors writes several in a random order, and equal runs
        # must give equal bytes
        metadata = {"wca": json.dumps(identity, sort_keys=True)}
        write_atomic(path, lambda tmp: _save_shard(tensors, metadata, tmp))
        self.shards[str(shard)] = {
            "file": path.name,
            "start": self.shard_range(shard).start,
            "count": len(self.shard_range(shard)),
            "bytes": path.stat().st_size,
            "sha256": _file_sha256(path),
            "images_sha256": identity["images_sha256"],
            "identity": IDENTITY,
        }
        self._written.add(str(shard))
        if record:
            text = json.dumps({"key_hash": self.key_hash, **self.shards[str(shard)]}, indent=1)
            with self._manifest_lock():  # not while a merge reads and deletes the records
                write_atomic(self.record_path(shard), lambda tmp: tmp.write_text(text, "utf-8"))
        else:
            self._write_manifest()

    def _write_manifest(self) -> None:
        """Merge this process's entries with those on disk (other processes' manifest entries
        and records) and write the manifest, all under ``manifest.lock``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._manifest_lock():
            on_disk = self._read_manifest(warn=False)
            theirs = {} if on_disk is None else on_disk["shards"]
            merged = {**self.shards, **theirs, **self._records()}
            merged.update({shard: self.shards[shard] for shard in self._written})
            self.shards = {k: v for k, v in merged.items() if int(k) < self.num_shards}
            manifest = {
                "key_hash": self.key_hash,
                "key": self.key,
                "num_images": self.num_images,
                "shard_size": self.shard_size,
                "complete": all(str(s) in self.shards for s in range(self.num_shards)),
                "shards": self.shards,
            }
            text = json.dumps(manifest, indent=1, sort_keys=True)
            write_atomic(self.manifest_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
            for shard in self.shards:  # merged: a stale record must not override a newer entry
                self.record_path(int(shard)).unlink(missing_ok=True)
            self._tidy()

    def _tidy(self) -> None:
        """Delete the files of shards past the end (images were removed) and the lock files
        that processes which died left beside finished shards."""
        for path in self.folder.glob("shard-*"):
            index = path.name.removeprefix("shard-").split(".")[0]
            if not index.isdigit():
                continue
            if int(index) >= self.num_shards:
                path.unlink(missing_ok=True)
            elif path.suffix == ".lock" and str(int(index)) in self.shards:
                lock = FileLock(path)
                with contextlib.suppress(LocksUnsupported):
                    if lock.acquire(wait=False):  # nobody holds it
                        lock.release(remove=True)

    def load(
        self, shard: int, verify: bool = True, entry: dict[str, Any] | None = None
    ) -> dict[str, Tensor] | None:
        """A shard's tensors, memory-mapped, if it is recorded (in this cache's entries, or
        ``entry``), complete, unaltered (sha256, when ``verify``) and well-formed; else None,
        with a warning when a file was there but is not usable."""
        entry = self.shards.get(str(shard)) if entry is None else entry
        path = self.shard_path(shard)
        if entry is None or not path.is_file():
            return None
        rows = self.shard_range(shard)
        if (entry["start"], entry["count"]) != (rows.start, len(rows)):
            return None  # images were added or removed before or in this shard
        if self.images is not None and entry.get("identity") != IDENTITY:
            if not self._told_outdated:
                self._told_outdated = True
                warnings.warn(
                    f"{self.folder}: cached by an older wca, which identified images by size "
                    "and mtime only; recomputing its shards once",
                    stacklevel=3,
                )
            return None
        if entry.get("images_sha256") != self.images_sha256(shard):
            warnings.warn(
                f"{path}: its images changed on disk (size, mtime, content or list) since it "
                "was cached; recomputing this shard",
                stacklevel=3,
            )
            return None
        if path.stat().st_size != entry["bytes"]:
            problem = f"size {path.stat().st_size} bytes, manifest says {entry['bytes']}"
        elif verify and _file_sha256(path) != entry["sha256"]:
            problem = "sha256 does not match the manifest (corrupt)"
        else:
            try:
                tensors = load_file(path)
            except (SafetensorError, OSError, ValueError) as error:
                problem = f"unreadable ({error})"
            else:
                expected = len(self.shard_range(shard))
                if set(tensors) == set(SHARD_TENSORS) and all(
                    len(t) == expected for t in tensors.values()
                ):
                    return tensors
                problem = "wrong tensors or sizes"
        warnings.warn(f"{path}: {problem}; recomputing this shard", stacklevel=3)
        return None


SHARD_TENSORS = ("image_emb", "crop_emb", "boxes", "flips", "labels")
