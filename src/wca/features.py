"""Feature extraction: every image's full view and pool of crops through the image encoder, kept
in a safetensors shard cache that is safe to interrupt, resume and share.

Per image ``i`` the pass stores the full-view embedding, the embeddings of ``n_samples`` crops
and their boxes. Boxes come from :func:`wca.crops.crop_boxes` keyed on ``(seed, i)``, so the
numbers do not depend on batching, worker count or which shards a run happens to compute.

The pipeline: loader workers (``num_workers > 0``) or one prefetching thread decode each image
and make its views; views of consecutive images are packed into encoder batches of
``batch_size`` views. At most a bounded number of images is in flight, and one shard of
outputs is held in memory.

The cache: ``<cache_dir>/<dataset>/<key hash>/`` holds ``shard-NNNNN.safetensors`` files of
``shard_size`` images each and ``manifest.json`` (the full cache key and a sha256 per shard).
Shards are written to a temporary name and renamed, so a file under a shard's name is always
complete; a shard whose checksum or header does not verify is recomputed, never used. Encoder
batches never straddle shards, so a resumed run repeats exactly the batches an uninterrupted
run makes and its features are bit-identical (same device, precision and ``batch_size``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import queue
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from wca import crops
from wca.files import write_atomic

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_SHARD_SIZE = 1000  # images per shard: ~125 MB at N=60, D=512, fp32
DEFAULT_BATCH_SIZE = 256  # views per encoder forward pass
PREFETCH_IMAGES = 4  # images decoded ahead of the encoder by the prefetching thread
WORKER_PREFETCH = 2  # images decoded ahead per loader worker (views travel as float tensors)


class Features:
    """Embeddings of one feature pass, image ``i`` at row ``i``.

    ``image_emb [B, D]`` full views, ``crop_emb [B, N, D]`` crops, ``boxes [B, N, 4]`` crop
    boxes ``(left, top, right, bottom)``, ``labels [B]``. Loaded from a cache, ``crop_emb`` is
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
                        self.image_emb[rows], part[lo:hi], self.boxes[rows], self.labels[rows]
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
                if set(tensors) == set(_SHARD_TENSORS) and all(
                    len(t) == expected for t in tensors.values()
                ):
                    return tensors
                problem = "wrong tensors or sizes"
        warnings.warn(f"{path}: {problem}; recomputing this shard", stacklevel=3)
        return None


_SHARD_TENSORS = ("image_emb", "crop_emb", "boxes", "labels")


# --------------------------------------------------------------------------- pipeline


class _ViewItems(torch.utils.data.Dataset):
    """Image ``indices[j]`` of ``dataset`` -> ``(index, views [N+1,3,S,S], boxes, label)``."""

    def __init__(
        self,
        dataset: Any,
        indices: Sequence[int],
        make_views: Callable[[Any, Tensor], Tensor],
        n_samples: int,
        alpha: float,
        beta: float,
        seed: int,
        strategy: str,
    ) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.make_views = make_views
        self.box_args = (n_samples, alpha, beta, seed, strategy)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[int, Tensor, Tensor, int] | tuple[int, Exception]:
        """The image's views, or ``(index, error)`` when it cannot be read: the error travels
        to the main process as it is (a loader worker would wrap it in a multi-line report)."""
        index = self.indices[j]
        try:
            image, label = self.dataset[index]
            n, alpha, beta, seed, strategy = self.box_args
            boxes = crops.crop_boxes(
                image.height, image.width, n, alpha, beta, seed, index, strategy
            )
            return index, self.make_views(image, boxes), boxes, int(label)
        except Exception as error:  # re-raised by the consumer
            return index, error


def _prefetch(items: Sequence[Any], depth: int) -> Iterator[Any]:
    """Iterate ``items`` (lazily computed by ``__getitem__``) one step ahead in a thread, at
    most ``depth`` items queued; errors in the thread surface in the caller."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for j in range(len(items)):
                if not put(("item", items[j])):
                    return
            put(("end", None))
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(("error", error))

    thread = threading.Thread(target=work, name="wca-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


def _iterate_views(
    items: _ViewItems, num_workers: int
) -> Iterator[tuple[int, Tensor, Tensor, int]]:
    if num_workers <= 0:
        return _prefetch(items, PREFETCH_IMAGES)
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        prefetch_factor=WORKER_PREFETCH,
    )
    return iter(loader)


def _encode_shard(
    encoder: Any,
    stream: Iterator[tuple[int, Tensor, Tensor, int]],
    indices: range,
    n_samples: int,
    batch_size: int,
    store_dtype: torch.dtype,
    bar: tqdm,
) -> dict[str, Tensor]:
    """Encode the images ``indices`` (next in ``stream``), views packed ``batch_size`` at a time
    across images; the last batch of a shard may be short."""
    views_per_image = n_samples + 1
    out = torch.empty(len(indices) * views_per_image, encoder.embed_dim, dtype=torch.float32)
    boxes = torch.empty(len(indices), n_samples, 4, dtype=torch.int64)
    labels = torch.empty(len(indices), dtype=torch.int64)
    pending: list[Tensor] = []
    queued = written = 0

    def flush(count: int) -> None:
        nonlocal pending, queued, written
        views = torch.cat(pending) if len(pending) > 1 else pending[0]
        batch = views[:count]
        if batch.dtype == torch.uint8:  # normalised where the encoder runs: 4x fewer bytes moved
            batch = batch.to(encoder.device, non_blocking=True)
            batch = crops.normalize_pixels(batch, encoder.preprocessing)
        with torch.inference_mode():
            emb = encoder.encode_images(batch)
        if emb.shape != (count, encoder.embed_dim):
            raise ValueError(f"encoder returned {tuple(emb.shape)} for {count} views")
        out[written : written + count] = emb
        written += count
        rest = views[count:]
        pending, queued = ([rest] if len(rest) else []), len(rest)

    for row, expected in enumerate(indices):
        item = next(stream)
        if len(item) == 2:
            raise item[1]
        index, views, image_boxes, label = item
        if index != expected:
            raise RuntimeError(f"feature pipeline out of order: got image {index}, want {expected}")
        if views.shape[0] != views_per_image:
            raise ValueError(f"image {index}: {views.shape[0]} views, want {views_per_image}")
        boxes[row], labels[row] = image_boxes, label
        pending.append(views)
        queued += len(views)
        while queued >= batch_size:
            flush(batch_size)
        bar.update(1)
    if queued:
        flush(queued)
    emb = out.view(len(indices), views_per_image, -1).to(store_dtype)
    return {
        "image_emb": emb[:, 0].contiguous(),
        "crop_emb": emb[:, 1:].contiguous(),
        "boxes": boxes,
        "labels": labels,
    }


def extract_features(
    encoder: Any,
    dataset: Any,
    n_samples: int,
    alpha: float,
    beta: float = crops.DEFAULT_BETA,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
    fidelity: bool = False,
    half: bool = False,
    strategy: str = "random",
    verify: bool = True,
    progress: bool = True,
) -> Features:
    """Embed every image of ``dataset``: its full view and ``n_samples`` crops.

    ``cache_dir``: keep features in resumable safetensors shards there (None: in memory only).
    ``batch_size``: views per encoder call. ``num_workers``: loader processes (0: one
    prefetching thread). ``fidelity``: make views with the model's own preprocessing per crop
    (the authors' way) instead of the fast tensor path. ``half``: store fp16. ``verify``: check
    every cached shard's sha256 before use. ``strategy``: the crop sampler
    (:data:`wca.crops.CROP_STRATEGIES`; ``"random"`` is the paper's).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size}, {shard_size}")
    if not 0 < alpha <= beta <= 1:
        raise ValueError(f"need 0 < alpha <= beta <= 1, got alpha={alpha}, beta={beta}")
    num_images = len(dataset)
    if strategy not in crops.CROP_STRATEGIES:
        raise ValueError(
            f"unknown crop strategy {strategy!r} (choose from {', '.join(crops.CROP_STRATEGIES)})"
        )
    if num_images == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} has no images")
    store_dtype = torch.float16 if half else torch.float32
    key = cache_key(encoder, dataset, n_samples, alpha, beta, seed, fidelity, store_dtype, strategy)
    if cache_dir is None:
        cache = None
        ranges = [
            range(lo, min(lo + shard_size, num_images)) for lo in range(0, num_images, shard_size)
        ]
        parts: list[dict[str, Tensor] | None] = [None] * len(ranges)
    else:
        cache = ShardCache(Path(cache_dir), key, num_images, shard_size)
        ranges = [cache.shard_range(s) for s in range(cache.num_shards)]
        parts = [cache.load(s, verify) for s in range(cache.num_shards)]
    todo = [s for s, part in enumerate(parts) if part is None]

    if todo:
        if fidelity:
            make_views = functools.partial(crops.fidelity_views, preprocess=encoder.preprocess)
        else:
            # uint8 views travel from the workers; flush() normalises whole batches
            make_views = functools.partial(crops.uint8_views, prep=encoder.preprocessing)
        indices = [i for s in todo for i in ranges[s]]
        items = _ViewItems(dataset, indices, make_views, n_samples, alpha, beta, seed, strategy)
        name = getattr(dataset, "name", "images")
        bar = tqdm(
            total=num_images,
            initial=num_images - len(indices),
            unit="img",
            desc=f"features {name}",
            disable=not progress,
        )
        stream = _iterate_views(items, num_workers)
        try:
            for shard in todo:
                tensors = _encode_shard(
                    encoder, stream, ranges[shard], n_samples, batch_size, store_dtype, bar
                )
                if cache is not None:
                    cache.write_shard(shard, tensors)
                    tensors = cache.load(shard, verify=False)
                    if tensors is None:
                        raise RuntimeError(f"{cache.shard_path(shard)}: unreadable after writing")
                parts[shard] = tensors
        finally:
            bar.close()
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            del stream
    complete = [part for part in parts if part is not None]  # every shard, after the loop
    return _assemble(complete, None if cache is None else cache.folder)


def _assemble(parts: Sequence[dict[str, Tensor]], source: Path | None) -> Features:
    return Features(
        torch.cat([p["image_emb"] for p in parts]),
        [p["crop_emb"] for p in parts],
        torch.cat([p["boxes"] for p in parts]),
        torch.cat([p["labels"] for p in parts]),
        source=source,
    )
