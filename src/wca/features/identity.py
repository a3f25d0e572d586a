"""What identifies the images of a cached shard: their content, as git identifies files.

When a shard is encoded, the view pipeline reads each image's file whole and hashes it
(sha256), with the file's stat taken before the read: size, mtime, ctime and inode
(:func:`read_version`, in the loader process that decodes the image; the decoder's own read
then comes from the page cache). The shard's entry keeps the digest of its images' names
(relative to the dataset's root: the same however the root was typed), labels and content
hashes (:func:`images_digest`); a sidecar beside the shard, ``shard-NNNNN.images.json``, keeps
each image's hash with its stat.

On reuse (:func:`check_images`), an image whose stat is unchanged is trusted, as git trusts
its index; one whose stat moved is read and hashed again, and the sidecar then records the new
stat. ctime is set by the kernel on every change and cannot be set back (``touch``, ``cp -p``,
``rsync -t`` and tar restore the mtime only), so an edit in place that keeps the size and
restores the mtime still moves it. A copied dataset, a ``touch`` or a ``chmod`` thus cost one
read of the files concerned, not a re-encode, and the next run ``stat`` alone. A file changed
within :data:`RACY_SECONDS` of its read might change again under the same coarse timestamps
(git's "racily clean" entries): its stat is not trusted until a later read finds it older.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from wca.files import write_atomic

# what an entry's images_sha256 covers; shards cached with another identity are recomputed once
IDENTITY = "name label sha256 (names relative to the dataset root)"
RACY_SECONDS = 2.0  # a file changed this recently when read is hashed again on the next check


@dataclass(frozen=True)
class FileVersion:
    """A file's content hash and the stat it was read under."""

    sha256: str
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    racy: bool  # changed within RACY_SECONDS of the read: its stat is not to be trusted

    def unchanged(self, info: os.stat_result) -> bool:
        """Whether a file of stat ``info`` can be trusted to hold this version unread."""
        stat = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
        return not self.racy and stat == (self.size, self.mtime_ns, self.ctime_ns, self.ino)


def read_version(path: str | Path) -> FileVersion:
    """Read a file whole: its sha256, and the stat taken before the read (a change during the
    read moves the stat, so the next check reads the file again)."""
    with open(path, "rb") as handle:
        info = os.fstat(handle.fileno())
        now = time.time_ns()
        sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
    racy = info.st_ctime_ns > now - int(RACY_SECONDS * 1e9)
    return FileVersion(
        sha256, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, racy
    )


@dataclass(frozen=True)
class ImageList:
    """The image files of a dataset that lists them (``paths``, ``labels``), named relative to
    its ``root`` (absolute when it has none)."""

    paths: Sequence[str | Path]
    labels: Sequence[int]
    root: str | None
    stamps: Sequence[str] | None = None  # images inside archives: each one's line, see below

    @classmethod
    def of(cls, dataset: Any) -> ImageList | None:
        """The images of ``dataset``. One whose images lie inside archives (tar shards, array
        files) stamps them itself (``dataset.image_identities()``: a line per image naming its
        archive's stat and fingerprint and its place there), taken once here."""
        paths, labels = getattr(dataset, "paths", None), getattr(dataset, "labels", None)
        if paths is None or labels is None:
            return None
        root = getattr(dataset, "root", None)
        own = getattr(dataset, "image_identities", None)
        stamps = None if own is None else own()
        return cls(paths, labels, None if root is None else os.path.abspath(root), stamps)

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        path = os.path.abspath(self.paths[index])
        if self.root is not None:
            inside = path.startswith(self.root + os.sep)  # both normalised by abspath
            path = path[len(self.root) + 1 :] if inside else os.path.relpath(path, self.root)
        return path.replace(os.sep, "/")

    def version(self, index: int) -> FileVersion | None:
        """The version of image ``index``'s file, None when it cannot be read (the decoder then
        reports why). Called by the loader just before it decodes the image."""
        if self.stamps is not None:
            line = self.stamps[index].encode()
            return FileVersion(hashlib.sha256(line).hexdigest(), 0, 0, 0, 0, racy=False)
        try:
            return read_version(self.paths[index])
        except OSError:
            return None


def declared_digest(dataset: Any) -> str | None:
    """The sha256 of the ``image_identities()`` lines of a dataset that lists no files (images
    in memory, a generated set; one line per image saying what makes it), so that two such
    datasets of one name and length never share cached features; None when it declares none
    (its cache is then keyed by name and length alone)."""
    own = getattr(dataset, "image_identities", None)
    return None if own is None else hashlib.sha256("\n".join(own()).encode()).hexdigest()


Row = tuple[str, int, FileVersion | None]  # an image of a shard: name, label, version
_ROWS = TypeAdapter(list[tuple[str, int, str | None, int, int, int, int, bool]])


def images_digest(rows: Sequence[Row]) -> str:
    """The digest of a shard's images: names, labels and content hashes (``-``: unreadable)."""
    lines = (f"{name}\t{label}\t{v.sha256 if v else '-'}" for name, label, v in rows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read_sidecar(path: Path, digest: str) -> list[Row] | None:
    """A shard's sidecar, if it is there, well-formed and of the images of ``digest``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("identity") != IDENTITY:
            return None
        table = _ROWS.validate_python(document.get("images"))
    except (OSError, ValueError, AttributeError, ValidationError):
        return None
    rows = [
        (name, label, FileVersion(sha, *stat) if sha else None)
        for name, label, sha, *stat in table
    ]
    return rows if images_digest(rows) == digest else None


def write_sidecar(path: Path, rows: Sequence[Row]) -> None:
    table = [
        [name, label, None, 0, 0, 0, 0, False]
        if v is None
        else [name, label, v.sha256, v.size, v.mtime_ns, v.ctime_ns, v.ino, v.racy]
        for name, label, v in rows
    ]
    text = json.dumps({"identity": IDENTITY, "images": table}, separators=(",", ":"))
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@dataclass
class Checked:
    """A shard's images as they are now (``rows``, their digest, how many files were read) and
    as its sidecar recorded them (``seen``; None when unknown)."""

    rows: list[Row]
    digest: str
    reread: int
    seen: Sequence[Row] | None

    def differences(self) -> str:
        """What differs from the images the shard was cached from, as far as is known."""
        differ = "its images differ from those it was cached from"
        if self.seen is None:
            return differ
        pairs = list(zip(self.rows, self.seen, strict=True))
        moved = [now[0] for now, then in pairs if now[:2] != then[:2]]
        if moved:
            return f"{differ}: in name or label from {moved[0]} on (images added or removed?)"
        changed = [now[0] for now, then in pairs if not _same(now[2], then[2])]
        shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
        return f"{differ}: {len(changed)} of {len(self.rows)} in content ({shown})"


def _same(a: FileVersion | None, b: FileVersion | None) -> bool:
    return (a and a.sha256) == (b and b.sha256)


def check_images(images: ImageList, indices: range, seen: Sequence[Row] | None) -> Checked:
    """The images ``indices`` now: a file whose stat equals the one ``seen`` records for it
    (same name and label) keeps that version unread; any other is read and hashed."""
    if seen is not None and len(seen) != len(indices):
        seen = None
    rows, reread = [], 0
    for offset, index in enumerate(indices):
        name, label = images.name(index), int(images.labels[index])
        then = seen[offset] if seen is not None else None
        version = None
        if images.stamps is not None:  # stamped when listed: nothing to read
            rows.append((name, label, images.version(index)))
            continue
        if then is not None and then[:2] == (name, label) and then[2] is not None:
            try:
                version = then[2] if then[2].unchanged(os.stat(images.paths[index])) else None
            except OSError:
                version = None
        if version is None:
            version = images.version(index)
            reread += 1
        rows.append((name, label, version))
    return Checked(rows, images_digest(rows), reread, seen)


def verify(images: ImageList, indices: range, sidecar: Path, digest: str) -> Checked:
    """The images ``indices`` of a shard whose images have ``digest``, as they are now, checked
    through the shard's ``sidecar`` (:func:`check_images`); when files had to be read and the
    shard is still theirs, the sidecar is refreshed with their new stats."""
    now = check_images(images, indices, read_sidecar(sidecar, digest))
    if now.reread and now.digest == digest:
        with contextlib.suppress(OSError):  # a read-only cache: they are read again next time
            write_sidecar(sidecar, now.rows)
    return now
