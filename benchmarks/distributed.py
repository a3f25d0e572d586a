"""Benchmark 7: `wca extract` under torchrun, 2 processes against 1 process on the same work.

A ViT-B/32-architecture CLIP with random weights (saved in OpenAI's layout, which
``open_clip:<file>`` loads in any process) extracts N=60 crops + the full view of JPEGs decoded
from disk, into a fresh cache each time: once as one process with ``--threads`` torch threads,
once as ``torchrun --nproc-per-node 2`` with ``--threads / 2`` threads per rank. Reported: the
wall time of each command (process start-up, model loading and rendezvous included) and the
extraction time rank 0 prints (its shards, then the barrier), with their ratios. On 2 cores the
ratio should be near 1: distributing adds no work.

    .venv/bin/python benchmarks/distributed.py                 # 16 JPEGs, ViT-B-32
    .venv/bin/python benchmarks/distributed.py --images 32 --repeats 2
    .venv/bin/python benchmarks/distributed.py --quick         # smoke test (tiny model)
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from _common import machine_report, make_jpegs, ratio, table

TINY = {
    "embed_dim": 32,
    "vision_cfg": CLIPVisionCfg(layers=1, width=64, patch_size=8, image_size=32),
    "text_cfg": CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
}


def save_model(folder: Path, quick: bool) -> str:
    """Random weights in OpenAI's state-dict layout; the spec that loads them."""
    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns that no weights were loaded
    torch.manual_seed(0)
    model = CLIP(**TINY) if quick else open_clip.create_model("ViT-B-32")
    path = folder / ("tiny.pt" if quick else "vit-b-32-random.pt")
    torch.save(model.state_dict(), path)
    return f"open_clip:{path}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_extract(processes: int, threads: int, extract_args: list[str]) -> tuple[float, float]:
    """(wall seconds, extraction seconds printed by rank 0) of one `wca extract` command."""
    launch = [sys.executable, "-m", "wca"]
    if processes > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                  str(processes), "--master-port", str(free_port()), "-m", "wca"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run([*launch, *extract_args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(launch)} failed:\n{done.stderr[-2000:]}")
    found = re.search(r"views in ([0-9.]+) s", done.stdout)
    if found is None:
        raise RuntimeError(f"no extraction time in the output:\n{done.stdout}")
    return wall, float(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="JPEGs to extract (default 16)")
    parser.add_argument("--crops", type=int, default=60, help="crops per image, N (default 60)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in all (2)")
    parser.add_argument("--shard-size", type=int, default=2, help="images per shard (2)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, best kept (1)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.crops, args.shard_size = 2, 2, 1
    print(machine_report("cpu"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        make_jpegs(base / "images" / "photos", args.images)
        spec = save_model(base, args.quick)
        times = {}
        for processes in (1, 2):
            best = (float("inf"), float("inf"))
            for repeat in range(max(args.repeats, 1)):
                cache = base / f"cache-{processes}-{repeat}"
                extract_args = [
                    "extract", "--dataset", "imagefolder", "--data-root", str(base / "images"),
                    "--model", spec, "--device", "cpu", "--cache-dir", str(cache),
                    "--n-samples", str(args.crops), "--shard-size", str(args.shard_size),
                    "--batch-size", "61", "--no-progress",
                ]  # fmt: skip
                threads = max(args.threads // processes, 1)
                best = min(best, run_extract(processes, threads, extract_args))
            times[processes] = best
            views = args.images * (args.crops + 1)
            label = "1 process" if processes == 1 else f"torchrun {processes} processes"
            threads = max(args.threads // processes, 1)
            speed = ratio(views, best[1])  # NaN: too fast to time
            rows.append([f"{label}, OMP_NUM_THREADS={threads}", best[0], best[1], speed])
    ratio_wall, ratio_extract = (ratio(times[2][i], times[1][i]) for i in (0, 1))
    rows.append(["2 processes / 1 process", ratio_wall, ratio_extract, ""])
    model = "tiny CLIP" if args.quick else "ViT-B-32 (random weights)"
    print(f"\n{model}, {args.images} JPEGs, N={args.crops} (+1 full view), shards of "
          f"{args.shard_size} images, fresh cache per run, best of {max(args.repeats, 1)}\n")
    print(table(["run", "wall s", "extraction s", "views/s"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
