"""The feature cache: the safetensors shards of one feature pass, their checks, and how
processes share them.

``<cache_dir>/<dataset>/<key hash>/`` holds ``shard-NNNNN.safetensors`` files of ``shard_size``
images each, beside each a sidecar of its images' content hashes and stats
(``shard-NNNNN.images.json``), and ``manifest.json`` (the key, the layout and an entry per
shard with its sha256: :mod:`wca.features.manifest`). Shards are written to a temporary name
and renamed, so a file under a shard's name is always complete; a shard whose checksum or
header does not verify is recomputed, never used; a manifest that does not validate is rebuilt
from the shards' headers, with one warning naming it. A full disk stops the pass with an
:class:`OSError` (``ENOSPC``) naming the folder; the finished shards are kept and no temporary
file is left.

The key (:mod:`wca.features.key`) holds what changes every image's numbers. Each shard's entry
holds the digest of its images' names, labels and contents, checked through the sidecar's
stats (:mod:`wca.features.identity`): a shard whose images changed is recomputed alone, and
files that were only touched or copied cost one read. Shards cached by an older wca (another
``identity`` in their entry) are recomputed once. The dataset's root is part of the key; a
dataset moved or copied to another root starts its folder with hard links to the shards of
the old root's folder, checked image by image: one read of the images, not a re-encode.

Shards are indexed by position. Deleting or inserting an image shifts the images after it, so
every shard from that one on is recomputed, and the shards before it are kept. This is exact
rather than merely cautious: crops are drawn from ``(seed, image index)`` (the authors'
protocol), so a shifted image gets other crops and its cached numbers would be wrong.
Datasets that do not list their files (no ``paths``) are identified by their length instead.

Several processes may fill one cache at once (:mod:`wca.features.claims`): a process encodes a
shard only while it holds ``shard-NNNNN.lock`` (:class:`wca.files.FileLock`), and every writer
merges its entries into the manifest under ``manifest.lock``, so no entry is lost. A process
waits for a lock while its holder makes progress, and for ``patience`` once it makes none
(:class:`wca.files.Patience`). Ranks of a distributed run (:mod:`wca.features.distributed`)
record each shard in a ``shard-NNNNN.json`` beside it instead; rank 0 merges the records into
the manifest.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
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
from wca.features.identity import (
    IDENTITY,
    FileVersion,
    ImageList,
    images_digest,
    verify,
    write_sidecar,
)
from wca.features.key import FORMAT_VERSION, cache_key, dataset_identity, key_hash
from wca.features.manifest import (
    MANIFEST,
    Manifest,
    ShardEntry,
    ShardHeader,
    ShardRecord,
    on_disk,
    opened,
    shard_name,
    sidecar_name,
)
from wca.files import FileLock, LocksUnsupported, Patience, write_atomic

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "Features",
    "ImageList",
    "ShardCache",
    "assemble",
    "cache_key",
    "dataset_identity",
]

log = logging.getLogger("wca")
DEFAULT_SHARD_SIZE = defaults.SHARD_SIZE  # images per shard: ~125 MB at N=60, D=512, fp32
_RECORD = re.compile(r"shard-(\d+)\.json")


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

    ``images``: the dataset's image files, checked per shard (None: not checked, the key alone
    identifies the images). ``patience``: how long to wait for a lock whose holder makes no
    progress. ``tensors``: the names of a shard's tensors (default :data:`SHARD_TENSORS`).
    """

    def __init__(
        self,
        root: Path,
        key: dict[str, Any],
        num_images: int,
        shard_size: int,
        images: ImageList | None = None,
        patience: Patience = Patience(),
        tensors: tuple[str, ...] | None = None,
    ):
        if images is not None and len(images) != num_images:
            raise ValueError(f"{len(images)} image files for {num_images} images")
        self.key, self.images, self.patience = key, images, patience
        self.tensor_names = SHARD_TENSORS if tensors is None else tensors  # what a shard holds
        self.key_hash = key_hash(key)
        self.folder = cache_folder(root, key)
        self.manifest_path = self.folder / MANIFEST
        self.num_images = num_images
        self.shards: dict[int, ShardEntry] = {}
        self._written: set[int] = set()  # shards this process wrote: its entries are the newest
        self._told_outdated = False
        self.shard_size = shard_size
        manifest, rewrite, seeded = opened(
            self.folder, key, num_images, shard_size, images is not None
        )
        # shards linked from another root's folder: those of other images are no news
        self._seeded = set(manifest.shards) if seeded else set()
        if manifest is not None:
            if manifest.shard_size != shard_size:
                log.info(
                    f"{self.folder}: keeps its layout of {manifest.shard_size} images a shard "
                    f"(shard_size {shard_size} asked)"
                )
            self.shard_size = manifest.shard_size  # resume with the layout already on disk
            # entries past the end (images were removed) are dropped, their files at next write
            self.shards = {k: v for k, v in manifest.shards.items() if k < self.num_shards}
        self.read_records()
        if rewrite:
            try:
                self._write_manifest()
            except OSError as error:  # a read-only cache: the entries serve this run
                log.warning(f"{self.manifest_path}: not rewritten ({error})")

    @property
    def num_shards(self) -> int:
        return -(-self.num_images // self.shard_size)

    def shard_range(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_images))

    def shard_path(self, shard: int) -> Path:
        return self.folder / shard_name(shard)

    def sidecar_path(self, shard: int) -> Path:
        return self.folder / sidecar_name(shard)

    def record_path(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.json"

    def shard_lock(self, shard: int) -> FileLock:
        """The lock a process holds while it encodes and writes this shard."""
        return FileLock(self.folder / f"shard-{shard:05d}.lock")

    def _records(self, paths: Iterator[Path] | None = None) -> dict[int, ShardEntry]:
        """The shard records beside their files (by ranks, since the last manifest) whose key
        and place in the layout match this cache."""
        found = {}
        for path in sorted(self.folder.glob("shard-*.json") if paths is None else paths):
            named = _RECORD.fullmatch(path.name)
            try:
                record = ShardRecord.model_validate_json(path.read_bytes()) if named else None
            except (OSError, ValueError):
                continue  # unreadable or gone: that shard is verified as missing and recomputed
            if record is None or record.key_hash != self.key_hash:
                continue
            shard = int(named[1])
            where = self.shard_range(shard) if 0 <= shard < self.num_shards else range(0)
            if (record.start, record.count) == (where.start, len(where)):
                found[shard] = ShardEntry.model_validate(record.model_dump(exclude={"key_hash"}))
        return found

    def read_records(self) -> None:
        """Add the shards recorded beside their files to this cache's entries."""
        self.shards.update(self._records())

    def entry_on_disk(self, shard: int) -> ShardEntry | None:
        """A shard's entry as the files say now (another process may have written it since
        this cache was opened): its record, else the manifest's entry."""
        record = self._records(iter([self.record_path(shard)])).get(shard)
        manifest = on_disk(self.folder, self.key) if record is None else None
        return record if manifest is None else manifest.shards.get(shard)

    @contextlib.contextmanager
    def _manifest_lock(self) -> Iterator[None]:
        """Hold ``manifest.lock`` (where the file system keeps locks; elsewhere writers that
        overlap may drop each other's entries, and those shards are recomputed later)."""
        lock = FileLock(self.folder / "manifest.lock")
        with contextlib.suppress(LocksUnsupported):
            lock.wait(self.patience)
        try:
            yield
        finally:
            lock.release()

    def merge_records(self) -> None:
        """Rank 0, after every rank finished: the records into the manifest."""
        self._write_manifest()

    def write_shard(
        self,
        shard: int,
        tensors: dict[str, Tensor],
        versions: Sequence[FileVersion | None] | None = None,
        record: bool = False,
    ) -> None:
        """Write a shard, with ``versions`` of its image files as the loader read them (when
        the images are checked), and note it in the manifest, or (``record``, a rank of a
        distributed run) in its own record file, so ranks never write the same file. A full
        disk raises an :class:`OSError` (``ENOSPC``) naming the cache folder."""
        path = self.shard_path(shard)
        try:
            self._write_shard(shard, path, tensors, versions, record)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            raise OSError(
                errno.ENOSPC,
                f"no space left on device for {path.name} (the finished shards are kept: free "
                "some space and run again to resume)",
                str(self.folder),
            ) from error

    def _write_shard(self, shard, path, tensors, versions, record) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        rows = self.shard_range(shard)
        images = None
        if self.images is not None:
            if versions is None or len(versions) != len(rows):
                raise ValueError(f"shard {shard}: the versions of its {len(rows)} image files")
            images = [
                (self.images.name(i), int(self.images.labels[i]), version)
                for i, version in zip(rows, versions, strict=True)
            ]
        header = ShardHeader(
            key_hash=self.key_hash,
            shard=shard,
            shard_size=self.shard_size,
            start=rows.start,
            count=len(rows),
            images_sha256=None if images is None else images_digest(images),
            identity=IDENTITY,
        )
        # one metadata entry: safetensors writes several in a random order, and equal runs
        # must give equal bytes
        metadata = {"wca": header.model_dump_json()}
        write_atomic(path, lambda tmp: _save_shard(tensors, metadata, tmp))
        if images is not None:  # before its entry: a shard without one is recomputed
            write_sidecar(self.sidecar_path(shard), images)
        self.shards[shard] = header.entry(path)
        self._written.add(shard)
        if record:
            text = ShardRecord(key_hash=self.key_hash, **self.shards[shard].model_dump())
            text = text.model_dump_json(indent=1)
            with self._manifest_lock():  # not while a merge reads and deletes the records
                write_atomic(self.record_path(shard), lambda tmp: tmp.write_text(text, "utf-8"))
        else:
            self._write_manifest()

    def _write_manifest(self) -> None:
        """Merge this process's entries with those on disk (other processes' manifest entries
        and records) and write the manifest, all under ``manifest.lock``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._manifest_lock():
            found = on_disk(self.folder, self.key)
            theirs = {} if found is None else found.shards
            merged = {**self.shards, **theirs, **self._records()}
            merged.update({shard: self.shards[shard] for shard in self._written})
            self.shards = {k: v for k, v in sorted(merged.items()) if k < self.num_shards}
            manifest = Manifest(
                key_hash=self.key_hash,
                key=self.key,
                num_images=self.num_images,
                shard_size=self.shard_size,
                complete=all(s in self.shards for s in range(self.num_shards)),
                shards=self.shards,
            )
            manifest.write(self.manifest_path)
            for shard in self.shards:  # merged: a stale record must not override a newer entry
                self.record_path(shard).unlink(missing_ok=True)
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
            elif path.suffix == ".lock" and int(index) in self.shards:
                lock = FileLock(path)
                with contextlib.suppress(LocksUnsupported):
                    if lock.try_acquire():  # nobody holds it
                        lock.release(remove=True)

    def load(
        self, shard: int, verify: bool = True, entry: ShardEntry | None = None
    ) -> dict[str, Tensor] | None:
        """A shard's tensors, memory-mapped, if it is recorded (in this cache's entries, or
        ``entry``), of the images on disk now, complete, unaltered (sha256, when ``verify``)
        and well-formed; else None, with a warning when a file was there but is not usable."""
        entry = self.shards.get(shard) if entry is None else entry
        path = self.shard_path(shard)
        if entry is None or not path.is_file():
            return None
        rows = self.shard_range(shard)
        if (entry.start, entry.count) != (rows.start, len(rows)):
            return None  # images were added or removed before or in this shard
        if self.images is not None and not self._same_images(shard, entry):
            return None
        if path.stat().st_size != entry.bytes:
            problem = f"size {path.stat().st_size} bytes, manifest says {entry.bytes}"
        elif verify and _file_sha256(path) != entry.sha256:
            problem = "sha256 does not match the manifest (corrupt)"
        else:
            try:
                tensors = load_file(path)
            except (SafetensorError, OSError, ValueError) as error:
                problem = f"unreadable ({error})"
            else:
                if set(tensors) == set(self.tensor_names) and all(
                    len(t) == len(rows) for t in tensors.values()
                ):
                    return tensors
                problem = "wrong tensors or sizes"
        warnings.warn(f"{path}: {problem}; recomputing this shard", stacklevel=3)
        return None

    def _same_images(self, shard: int, entry: ShardEntry) -> bool:
        """Whether the shard was computed from the images on disk now: by their stats where
        they are unchanged, else by their contents (the sidecar then records the new stats)."""
        if entry.identity != IDENTITY or entry.images_sha256 is None:
            if not self._told_outdated:
                self._told_outdated = True
                warnings.warn(
                    f"{self.folder}: cached by an older wca, which identified images by their "
                    "paths, stats and ends only; recomputing its shards once",
                    stacklevel=4,
                )
            return False
        digest = entry.images_sha256
        now = verify(self.images, self.shard_range(shard), self.sidecar_path(shard), digest)
        if now.digest == digest:
            return True
        message = f"{self.shard_path(shard)}: {now.differences()}; recomputing this shard"
        if shard in self._seeded:
            log.debug(message)
        else:
            warnings.warn(message, stacklevel=4)
        return False


SHARD_TENSORS = ("image_emb", "crop_emb", "boxes", "flips", "labels")


def cache_folder(root: str | Path, key: dict[str, Any]) -> Path:
    """The folder of the shards of ``key`` under the cache root ``root``."""
    dataset = key["dataset"]
    name = str(dataset["name"]) + (f"-{dataset['split']}" if dataset["split"] else "")
    return Path(root) / name.replace("/", "_") / key_hash(key)[:16]
