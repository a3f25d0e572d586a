"""Shared pieces of the benchmark scripts: the machine line, tables, timing, test images.

Every script prints :func:`machine_report` first, so a pasted table always says where and under
what load it was measured.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SIZE = (400, 450)  # (width, height) of the generated JPEGs, like a typical dataset photo


def background_jobs() -> int:
    """How many model-training processes are running (they load the shared cores)."""
    try:
        listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return -1
    return sum(
        1
        for line in listing.stdout.splitlines()
        if ("wca demo train" in line or "train.py" in line) and "ps -eo" not in line
    )


def machine_report(device: str = "cpu") -> str:
    """One block: date, cores, CPU, torch version and threads, device, load, background jobs."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    use_gpu = device.startswith("cuda") and torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(torch.device(device)) if use_gpu else "none used"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"date: {now}",
            f"machine: {os.cpu_count()} cores ({cpu}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), device {device}, GPU {gpu}",
            f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
            f"training jobs running: {background_jobs()}",
        ]
    )


def cuda_or_skip(device: str) -> bool:
    """True when ``device`` can run; for a CUDA device without CUDA, print that it is skipped."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"GPU mode skipped: --device {device} asked for, but CUDA is not available here.")
        return False
    return True


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table (paste it into benchmarks/README.md as is)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is not a positive finite number
    (a time too short to measure in a quick mode): no ratio divides by zero."""
    if not math.isfinite(denominator) or denominator <= 1e-12:
        return math.nan
    return numerator / denominator


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` wall-clock runs of ``fn`` (the least disturbed by the load)."""
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` photo-like JPEGs (smooth colour fields plus grain, quality 90) in ``folder``.

    Smooth content with noise compresses and decodes like a photo, unlike pure noise.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = IMAGE_SIZE
    paths = []
    for i in range(count):
        coarse = rng.random((height // 25 + 1, width // 25 + 1, 3)) * 255
        field = np.asarray(
            Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BICUBIC)
        ).astype(np.float32)
        grain = rng.normal(0, 12, (height, width, 3))
        pixels = np.clip(field + grain, 0, 255).astype(np.uint8)
        path = folder / f"image-{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


class JpegDataset:
    """JPEG files as a dataset: ``__getitem__(i) -> (RGB PIL image, label)``, decoded on access."""

    def __init__(self, paths: Sequence[Path], name: str = "bench-jpegs") -> None:
        self.paths = [str(p) for p in paths]
        self.labels = [i % 10 for i in range(len(self.paths))]
        self.name = name
        self.classnames = [f"class {i}" for i in range(10)]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        from wca.images import load_image

        return load_image(self.paths[index]), self.labels[index]


def peak_rss_gb() -> float:
    """Peak resident memory of this process since start or the last :func:`reset_peak_rss`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def current_rss_gb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
