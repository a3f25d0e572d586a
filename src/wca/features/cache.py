"""The feature cache: what identifies a feature pass (its key) and the safetensors shards that
hold it.

``<cache_dir>/<dataset>/<key hash>/`` holds ``shard-NNNNN.safetensors`` files of ``shard_size``
images each and ``manifest.json`` (the full cache key and a sha256 per shard). Shards are
written to a temporary name and renamed, so a file under a shard's name is always complete; a
shard whose checksum or header does not verify is recomputed, never used. Ranks of a
distributed run (:mod:`wca.features.distributed`) record each shard in a ``shard-NNNNN.json``
beside it instead of rewriting the manifest; rank 0 merges the records into it.

The key holds what changes the numbers of every image (model, preprocessing, crop settings,
seed, dataset name, split and root); the images themselves are checked per shard. Each shard
records a digest of its images' identities (path, label, size and mtime in nanoseconds, the
test ``make`` and ``rsync`` use; a content hash would read the whole dataset on every run), and
a shard whose images differ from the files now on disk is recomputed alone: an image edited,
replaced or fixed in place costs one shard, not the cache.

Shards are indexed by position. Deleting or inserting an image shifts the images after it, so
every shard from that one on is recomputed, and the shards before it are kept. This is exact
rather than merely cautious: crops are drawn from ``(seed, image index)`` (the authors'
protocol), so a shifted image gets other crops and its cached numbers would be wrong.
Datasets that do not list their files (no ``paths``) are identified by their length instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from wca import crops, defaults
from wca.crops import CropSpec
from wca.files import write_atomic

FORMAT_VERSION = 3  # 2: shards hold per-view flips; 3: images checked per shard, not by key
MANIFEST = "manifest.json"
DEFAULT_SHARD_SIZE = defaults.SHARD_SIZE  # images per shard: ~125 MB at N=60, D=512, fp32


class Features:
    """Embeddings of one feature pass, image ``i`` at row ``i``.

    ``image_emb [B, D]`` full views, ``crop_emb [B, N, D]`` crops, ``boxes [B, N, 4]`` crop
    boxes ``(left, top, right, bottom)``, ``labels [B]``, ``flips [B, N]`` whether a crop view
    was mirrored (all False when not given). Loaded from a cache, ``crop_emb`` is
    kept as one memory-mapped part per shard: :meth:`chunks` walks it without copying, while the
    :attr:`crop_emb` property concatenates (a full copy in memory).
    """

    def __init__(
        self,
        image_emb: Tensor,
        crop_emb: Tensor | Sequence[Tensor],
        boxes: Tensor,
        labels: Tensor,
        source: Path | None = None,
        flips: Tensor | None = None,
    ) -> None:
        parts = [crop_emb] if isinstance(crop_emb, Tensor) else list(crop_emb)
        rows = len(labels)
        if sum(len(p) for p in parts) != rows or len(image_emb) != rows or len(boxes) != rows:
            raise ValueError(
                f"features disagree on the number of images: image_emb {len(image_emb)}, "
                f"crop_emb {sum(len(p) for p in parts)}, boxes {len(boxes)}, labels {rows}"
            )
        self.image_emb = image_emb
        self.boxes = boxes
        self.flips = torch.zeros(boxes.shape[:2], dtype=torch.bool) if flips is None else flips
        self.labels = labels
        self.source = source  # the cache folder the features were read from, if any
        self._parts = parts

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"Features(images={len(self)}, n_samples={self.n_samples}, dim={self.embed_dim}, "
            f"dtype={self.image_emb.dtype}, source={self.source})"
        )

    @property
    def n_samples(self) -> int:
        return self._parts[0].shape[1]

    @property
    def embed_dim(self) -> int:
        return self.image_emb.shape[1]

    @property
    def valid(self) -> Tensor:
        """``[B]`` bool: False for images skipped as unreadable (label -1)."""
        return self.labels >= 0

    @property
    def crop_emb(self) -> Tensor:
        return self._parts[0] if len(self._parts) == 1 else torch.cat(self._parts)

    def take(self, rows: Tensor, crops: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The full views ``[len(rows), D]`` of images ``rows`` (in that order) and their crops
        ``crops`` (indices into the pool; None: no crops) ``[len(rows), len(crops), D]``, read
        from the stored parts without concatenating them."""
        image_emb = self.image_emb[rows]
        if crops is None:
            return image_emb, None
        out = torch.empty(len(rows), len(crops), self.embed_dim, dtype=self._parts[0].dtype)
        offset = 0
        for part in self._parts:
            mine = ((rows >= offset) & (rows < offset + len(part))).nonzero().flatten()
            if len(mine):
                out[mine] = part[rows[mine] - offset][:, crops]
            offset += len(part)
        return image_emb, out

    def chunks(self, size: int) -> Iterator[tuple[int, Features]]:
        """``(start, features of images start..start+size)`` in order; crop rows are views into
        the stored parts, so at most one chunk is ever paged in at a time."""
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size}")
        offset = 0
        for part in self._parts:
            for lo in range(0, len(part), size):
                hi = min(lo + size, len(part))
                rows = slice(offset + lo, offset + hi)
                yield (
                    offset + lo,
                    Features(
                        self.image_emb[rows],
                        part[lo:hi],
                        self.boxes[rows],
                        self.labels[rows],
                        flips=self.flips[rows],
                    ),
                )
            offset += len(part)


# --------------------------------------------------------------------------- cache key


def dataset_identity(dataset: Any) -> dict[str, Any]:
    """What identifies a dataset for the cache key: name, split and root, and its length when
    it does not list its files (listed files are checked per shard: :func:`image_identities`)."""
    identity: dict[str, Any] = {
        "name": getattr(dataset, "name", type(dataset).__name__),
        "split": getattr(dataset, "split", None),
        "root": str(Path(dataset.root).resolve()) if getattr(dataset, "root", None) else None,
    }
    if image_identities(dataset) is None:
        identity["len"] = len(dataset)
    return identity


def image_identities(dataset: Any) -> list[str] | None:
    """One line per image, ``path, label, size, mtime_ns``, when the dataset lists its files
    (``paths`` and ``labels``); a file that cannot be stat'ed is marked missing."""
    paths, labels = getattr(dataset, "paths", None), getattr(dataset, "labels", None)
    if paths is None or labels is None:
        return None
    lines = []
    for path, label in zip(paths, labels, strict=True):
        try:
            info = os.stat(path)
        except OSError:
            stamp = "missing"
        else:
            stamp = f"{info.st_size}\t{info.st_mtime_ns}"
        lines.append(f"{path}\t{label}\t{stamp}")
    return lines


def cache_key(
    encoder: Any, dataset: Any, crops_spec: CropSpec, fidelity: bool, store_dtype: torch.dtype
) -> dict[str, Any]:
    """Everything that changes the stored numbers (batch size, workers and device do not), as
    plain JSON values."""
    key = {
        "format": FORMAT_VERSION,
        "encoder": encoder.identity,
        "encoder_dtype": str(encoder.dtype),
        "views": "fidelity" if fidelity else "fast",
        "preprocessing": None if fidelity else dataclasses.asdict(encoder.preprocessing),
        "alpha": crops_spec.alpha,
        "beta": crops_spec.beta,
        "n_samples": crops_spec.n,
        "seed": crops_spec.seed,
        "sampler_version": crops.SAMPLER_VERSION,
        "strategy": crops_spec.strategy,
        "store_dtype": str(store_dtype),
        "dataset": dataset_identity(dataset),
    }
    return json.loads(json.dumps(key))


def _key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


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
        self.key_hash = _key_hash(key)
        name = str(key["dataset"]["name"]) + (
            f"-{key['dataset']['split']}" if key["dataset"]["split"] else ""
        )
        self.folder = Path(root) / name.replace("/", "_") / self.key_hash[:16]
        self.manifest_path = self.folder / MANIFEST
        self.num_images = num_images
        self.shards: dict[str, dict[str, Any]] = {}
        self.shard_size = shard_size
        manifest = self._read_manifest()
        if manifest is not None:
            self.shard_size = manifest["shard_size"]  # resume with the layout already on disk
            # entries past the end (images were removed) are dropped, their files at next write
            self.shards = {k: v for k, v in manifest["shards"].items() if int(k) < self.num_shards}
        self.read_records()

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            warnings.warn(f"{self.manifest_path}: unreadable ({error}); recomputing", stacklevel=3)
            return None
        if manifest.get("key_hash") != self.key_hash or manifest.get("key") != self.key:
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

    def read_records(self) -> None:
        """Add the shards recorded beside their files (by ranks, since the last manifest) whose
        key and place in the layout match this cache."""
        for path in sorted(self.folder.glob("shard-*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                shard = int(path.stem.removeprefix("shard-"))
            except (OSError, ValueError):
                continue  # unreadable: that shard is verified as missing and recomputed
            if not isinstance(record, dict) or record.get("key_hash") != self.key_hash:
                continue
            where = self.shard_range(shard) if 0 <= shard < self.num_shards else range(0)
            if (record.get("start"), record.get("count")) == (where.start, len(where)):
                self.shards[str(shard)] = {k: v for k, v in record.items() if k != "key_hash"}

    def merge_records(self) -> None:
        """Rank 0, after every rank finished: the records into the manifest."""
        self.read_records()
        self._write_manifest()

    def images_sha256(self, shard: int) -> str | None:
        """The digest of the identities of a shard's images (None when they are not checked)."""
        if self.images is None:
            return None
        rows = self.shard_range(shard)
        return hashlib.sha256("\n".join(self.images[rows.start : rows.stop]).encode()).hexdigest()

    def write_shard(self, shard: int, tensors: dict[str, Tensor], record: bool = False) -> None:
        """Write a shard and note it in the manifest, or (``record``, a rank of a distributed
        run) in its own record file, so ranks never write the same file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.shard_path(shard)
        identity = {
            "key_hash": self.key_hash,
            "shard": shard,
            "images_sha256": self.images_sha256(shard),
        }
        # one metadata entry: safetensors writes several in a random order, and equal runs
        # must give equal bytes
        metadata = {"wca": json.dumps(identity, sort_keys=True)}
        write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
        self.shards[str(shard)] = {
            "file": path.name,
            "start": self.shard_range(shard).start,
            "count": len(self.shard_range(shard)),
            "bytes": path.stat().st_size,
            "sha256": _file_sha256(path),
            "images_sha256": identity["images_sha256"],
        }
        if record:
            text = json.dumps({"key_hash": self.key_hash, **self.shards[str(shard)]}, indent=1)
            write_atomic(self.record_path(shard), lambda tmp: tmp.write_text(text, "utf-8"))
        else:
            self._write_manifest()

    def _write_manifest(self) -> None:
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
        for stale in self.folder.glob("shard-*.safetensors"):  # past the end: images removed
            index = stale.stem.removeprefix("shard-")
            if index.isdigit() and int(index) >= self.num_shards:
                stale.unlink(missing_ok=True)

    def load(self, shard: int, verify: bool = True) -> dict[str, Tensor] | None:
        """A shard's tensors, memory-mapped, if it is recorded in the manifest, complete,
        unaltered (sha256, when ``verify``) and well-formed; else None, with a warning when a
        file was there but is not usable."""
        entry = self.shards.get(str(shard))
        path = self.shard_path(shard)
        if entry is None or not path.is_file():
            return None
        rows = self.shard_range(shard)
        if (entry["start"], entry["count"]) != (rows.start, len(rows)):
            return None  # images were added or removed before or in this shard
        if entry.get("images_sha256") != self.images_sha256(shard):
            warnings.warn(
                f"{path}: its images changed on disk (size, mtime or list) since it was cached; "
                "recomputing this shard",
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


def assemble(parts: Sequence[dict[str, Tensor]], source: Path | None) -> Features:
    return Features(
        torch.cat([p["image_emb"] for p in parts]),
        [p["crop_emb"] for p in parts],
        torch.cat([p["boxes"] for p in parts]),
        torch.cat([p["labels"] for p in parts]),
        source=source,
        flips=torch.cat([p["flips"] for p in parts]),
    )
