"""The multi-run evaluation protocol over cached features, and its result files.

Protocols (every run scores every method on every image):

- ``"pool"`` (the authors'): run ``r`` draws ``patch_n`` crop indices with replacement from the
  pool of ``n_samples`` crops, the same indices for every image. Runs share crops, so the
  spread over runs measures the draw from a fixed pool.
- ``"fresh"``: run ``r`` uses pool crops ``r*patch_n .. (r+1)*patch_n - 1``. With the paper's
  random sampler, crop ``i`` of an image is an independent draw (it depends only on seed, image
  and ``i``), so disjoint slices are fresh crops for every run, with no crop seen twice; the
  pool must hold ``n_run * patch_n`` crops.

Methods that do not look at crops are scored once (their runs have std 0) unless they have
several random draws of their text side (WaffleCLIP): run ``r`` then uses draw ``r % n_draws``.
Accuracies are percentages; std is the population std over runs (``numpy.std``, as the authors
report). Images are scored in chunks, so memory stays bounded at ImageNet size. Images skipped
as unreadable (label -1, ``wca eval --skip-bad-images``) are left out.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from wca.features import Features
from wca.files import write_atomic
from wca.methods import Head

PROTOCOLS = ("pool", "fresh")
DEFAULT_CHUNK = 4096  # images scored at once: ~500 MB of fp32 crops at N=60, D=512
TOP_K = 5
RUN_LOGITS_BUDGET = 2**26  # logits values [runs, images, classes] held at once (256 MB fp32)


@dataclass
class MethodResult:
    """Accuracies of one method: top-1 and top-5 per run, and per-class top-1 (mean of runs;
    None for classes without images), all in percent."""

    method: str
    top1: list[float]
    top5: list[float]
    per_class_top1: list[float | None]
    uses_crops: bool

    @staticmethod
    def _mean_std(values: list[float]) -> tuple[float, float]:
        t = torch.tensor(values, dtype=torch.float64)
        return float(t.mean()), float(t.std(correction=0))

    @property
    def top1_mean_std(self) -> tuple[float, float]:
        return self._mean_std(self.top1)

    @property
    def top5_mean_std(self) -> tuple[float, float]:
        return self._mean_std(self.top5)

    def to_dict(self) -> dict[str, Any]:
        (m1, s1), (m5, s5) = self.top1_mean_std, self.top5_mean_std
        return {
            "uses_crops": self.uses_crops,
            "top1": {"mean": m1, "std": s1, "runs": self.top1},
            "top5": {"mean": m5, "std": s5, "runs": self.top5},
            "per_class_top1": self.per_class_top1,
        }


@dataclass
class Evaluation:
    """Results of :func:`evaluate`, by method in the order the heads were given."""

    methods: dict[str, MethodResult]
    n_images: int
    n_run: int
    patch_n: int
    n_samples: int
    seed: int
    protocol: str
    class_subset: list[int] | None = None

    def table(self, title: str | None = None) -> str:
        """A markdown table: top-1 and top-5 as mean +- std over runs."""
        lines = [f"**{title}**", ""] if title else []
        lines += ["| method | top-1 (%) | top-5 (%) | runs |", "|---|---|---|---|"]
        for name, result in self.methods.items():
            (m1, s1), (m5, s5) = result.top1_mean_std, result.top5_mean_std
            lines.append(f"| {name} | {m1:.2f} ± {s1:.2f} | {m5:.2f} ± {s5:.2f} | {self.n_run} |")
        lines.append("")
        lines.append(
            f"{self.n_images} images; protocol {self.protocol}: {self.n_run} runs of "
            f"{self.patch_n} crops from a pool of {self.n_samples} (seed {self.seed})."
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images,
            "protocol": self.protocol,
            "n_run": self.n_run,
            "patch_n": self.patch_n,
            "n_samples": self.n_samples,
            "seed": self.seed,
            "class_subset": self.class_subset,
            "methods": {name: result.to_dict() for name, result in self.methods.items()},
        }


def run_indices(n_samples: int, n_run: int, patch_n: int, seed: int, protocol: str) -> Tensor:
    """Crop indices ``[n_run, patch_n]`` into the pool, shared by all images (see module doc)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    if n_run < 1 or patch_n < 1:
        raise ValueError(f"n_run and patch_n must be >= 1, got {n_run} and {patch_n}")
    if protocol == "pool":
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(0, n_samples, (n_run, patch_n), generator=generator)
    if n_run * patch_n > n_samples:
        raise ValueError(
            f"protocol 'fresh' needs n_run * patch_n = {n_run * patch_n} crops per image, the "
            f"pool has n_samples = {n_samples}: extract with more n_samples or lower n_run/patch_n"
        )
    return torch.arange(n_run * patch_n).view(n_run, patch_n)


class _Tally:
    """Correct counts per run: top-1, top-5 and top-1 per class."""

    def __init__(self, n_run: int, num_classes: int) -> None:
        self.top1 = torch.zeros(n_run, dtype=torch.long)
        self.top5 = torch.zeros(n_run, dtype=torch.long)
        self.per_class = torch.zeros(n_run, num_classes, dtype=torch.long)

    def add(self, runs: Sequence[int], logits: Tensor, labels: Tensor, subset: Tensor | None):
        if subset is not None:
            logits = logits[:, subset]
        top = logits.topk(min(TOP_K, logits.shape[1]), dim=1).indices
        if subset is not None:
            top = subset[top]
        hits = top == labels[:, None]
        hit1 = hits[:, 0]
        class_hits = torch.bincount(labels[hit1], minlength=self.per_class.shape[1])
        for run in runs:
            self.top1[run] += int(hit1.sum())
            self.top5[run] += int(hits.any(dim=1).sum())
            self.per_class[run] += class_hits


def _scored_runs(
    head: Head, image_emb: Tensor, crop_emb: Tensor | None, indices: Tensor
) -> Iterator[tuple[list[int], Tensor]]:
    """``(runs, logits [B, C])`` of one head on one chunk of images, for every run.

    A crop head with a ``pool_logits(image_emb, crop_pool, indices [R, P]) -> [R, B, C]``
    method scores many runs from the whole pool at once (no per-run copy of the selected
    crops); otherwise each run's crops are gathered and passed to ``logits``.
    """
    n_run = len(indices)
    n_draws = max(int(getattr(head, "n_draws", 1)), 1)
    if not head.uses_crops:  # one scoring per text draw, shared by the runs that use it
        for draw in range(min(n_draws, n_run)):
            yield list(range(draw, n_run, n_draws)), head.logits(image_emb, None, draw=draw)
        return
    pool_logits = getattr(head, "pool_logits", None)
    if pool_logits is not None and n_draws == 1:
        first = pool_logits(image_emb, crop_emb, indices[:1])
        yield [0], first[0]
        step = max(1, RUN_LOGITS_BUDGET // first[0].numel())
        for start in range(1, n_run, step):
            logits = pool_logits(image_emb, crop_emb, indices[start : start + step])
            for offset, run_logits in enumerate(logits):
                yield [start + offset], run_logits
        return
    for run in range(n_run):
        crops = crop_emb.index_select(1, indices[run])
        yield [run], head.logits(image_emb, crops, draw=run % n_draws)


def evaluate(
    features: Features,
    heads: Mapping[str, Head],
    n_run: int = 20,
    patch_n: int = 60,
    seed: int = 0,
    *,
    protocol: str = "pool",
    class_subset: Sequence[int] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool = False,
) -> Evaluation:
    """Score every head on ``features`` over ``n_run`` runs (see the module doc).

    ``class_subset``: the labels predictions are chosen from (ImageNet-A/-R: argmax over their
    200 ImageNet indices of the 1000-class logits); labels are indices of the full class list.
    """
    if not heads:
        raise ValueError("no methods to evaluate")
    indices = run_indices(features.n_samples, n_run, patch_n, seed, protocol)
    subset = None if class_subset is None else torch.as_tensor(list(class_subset), dtype=torch.long)
    labels_all = features.labels.long()[features.valid]  # skipped images do not count
    if len(labels_all) == 0:
        raise ValueError("no images to score: every image was skipped as unreadable")
    tallies: dict[str, _Tally] = {}
    num_classes = 0
    bar = tqdm(total=len(features), unit="img", desc="scoring", disable=not progress)
    for _, chunk in features.chunks(chunk_size):
        image_emb = chunk.image_emb.float()
        crop_emb = chunk.crop_emb.float() if any(h.uses_crops for h in heads.values()) else None
        labels = chunk.labels.long()
        keep = chunk.valid
        if not bool(keep.all()):
            image_emb, labels = image_emb[keep], labels[keep]
            crop_emb = None if crop_emb is None else crop_emb[keep]
        for name, head in heads.items():
            for runs, logits in _scored_runs(head, image_emb, crop_emb, indices):
                if name not in tallies:
                    if labels_all.max() >= logits.shape[1]:
                        raise ValueError(
                            f"method {name!r} scores {logits.shape[1]} classes but labels go up "
                            f"to {int(labels_all.max())}"
                        )
                    num_classes = max(num_classes, logits.shape[1])
                    tallies[name] = _Tally(n_run, logits.shape[1])
                tallies[name].add(runs, logits, labels, subset)
        bar.update(len(chunk))
    bar.close()

    count = len(labels_all)
    per_class_total = torch.bincount(labels_all, minlength=num_classes)
    results = {}
    for name, tally in tallies.items():
        totals = per_class_total[: tally.per_class.shape[1]]
        per_class = (tally.per_class.double().mean(0) / totals.clamp(min=1) * 100).tolist()
        results[name] = MethodResult(
            method=name,
            top1=(tally.top1.double() / count * 100).tolist(),
            top5=(tally.top5.double() / count * 100).tolist(),
            per_class_top1=[
                value if total else None
                for value, total in zip(per_class, totals.tolist(), strict=True)
            ],
            uses_crops=bool(heads[name].uses_crops),
        )
    return Evaluation(
        methods=results,
        n_images=count,
        n_run=n_run,
        patch_n=patch_n,
        n_samples=features.n_samples,
        seed=seed,
        protocol=protocol,
        class_subset=None if class_subset is None else [int(i) for i in class_subset],
    )


def library_versions() -> dict[str, str | None]:
    """Versions of wca and the libraries that change the numbers, for result files."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("wca", "torch", "open_clip_torch", "transformers", "safetensors"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def write_json(evaluation: Evaluation, path: str | Path, config: Mapping[str, Any]) -> Path:
    """Write results, the full resolved ``config`` and library versions as JSON (atomically)."""
    document = {
        "results": evaluation.to_dict(),
        "config": dict(config),
        "versions": library_versions(),
    }
    text = json.dumps(document, indent=1, default=str, allow_nan=False)
    return write_atomic(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
