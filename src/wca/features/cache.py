"""The feature cache: what identifies a feature pass (its key) and the safetensors shards that
hold it.

``<cache_dir>/<dataset>/<key hash>/`` holds ``shard-NNNNN.safetensors`` files of ``shard_size``
images each and ``manifest.json`` (the full cache key and a sha256 per shard). Shards are
written to a temporary name and renamed, so a file under a shard's name is always complete; a
shard whose checksum or header does not verify is recomputed, never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from wca import crops
from wca.files import write_atomic

FORMAT_VERSION = 2  # 2: shards hold the per-view flips
MANIFEST = "manifest.json"
DEFAULT_SHARD_SIZE = 1000  # images per shard: ~125 MB at N=60, D=512, fp32


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
    """What identifies a dataset's images for the cache key: name, split, root, length, and a
    hash of its image files and labels when it lists them (``paths`` and ``labels``)."""
    identity: dict[str, Any] = {
        "name": getattr(dataset, "name", type(dataset).__name__),
        "split": getattr(dataset, "split", None),
        "root": str(Path(dataset.root).resolve()) if getattr(dataset, "root", None) else None,
        "len": len(dataset),
    }
    paths, labels = getattr(dataset, "paths", None), getattr(dataset, "labels", None)
    if paths is not None and labels is not None:
        digest = hashlib.sha256()
        for path, label in zip(paths, labels, strict=True):
            digest.update(f"{path}\t{label}\n".encode())
        identity["samples_sha256"] = digest.hexdigest()
    return identity


def cache_key(
    encoder: Any,
    dataset: Any,
    n_samples: int,
    alpha: float,
    beta: float,
    seed: int,
    fidelity: bool,
    store_dtype: torch.dtype,
    strategy: str = "random",
) -> dict[str, Any]:
    """Everything that changes the stored numbers (batch size, workers and device do not), as
    plain JSON values."""
    key = {
        "format": FORMAT_VERSION,
        "encoder": encoder.identity,
        "encoder_dtype": str(encoder.dtype),
        "views": "fidelity" if fidelity else "fast",
        "preprocessing": None if fidelity else dataclasses.asdict(encoder.preprocessing),
        "alpha": float(alpha),
        "beta": float(beta),
        "n_samples": int(n_samples),
        "seed": int(seed),
        "sampler_version": crops.SAMPLER_VERSION,
        "strategy": strategy,
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
    """One cache folder: the manifest and the shards of one cache key."""

    def __init__(self, root: Path, key: dict[str, Any], num_images: int, shard_size: int):
        self.key = key
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
            self.shards = manifest["shards"]

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

    def write_shard(self, shard: int, tensors: dict[str, Tensor]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.shard_path(shard)
        metadata = {"key_hash": self.key_hash, "shard": str(shard)}
        write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
        self.shards[str(shard)] = {
            "file": path.name,
            "start": self.shard_range(shard).start,
            "count": len(self.shard_range(shard)),
            "bytes": path.stat().st_size,
            "sha256": _file_sha256(path),
        }
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

    def load(self, shard: int, verify: bool = True) -> dict[str, Tensor] | None:
        """A shard's tensors, memory-mapped, if it is recorded in the manifest, complete,
        unaltered (sha256, when ``verify``) and well-formed; else None, with a warning when a
        file was there but is not usable."""
        entry = self.shards.get(str(shard))
        path = self.shard_path(shard)
        if entry is None or not path.is_file():
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
