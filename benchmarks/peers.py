"""Every method on the same views of the demo world: WCA and its ablations against ZERO, MTA and
AWT, on the paper's ``random`` crops and on the peers' ``rrc`` views, at N = 16 and 60.

One feature pass per strategy (the full view + a pool of ``--pool`` views per image, shipped
demo model); every method then scores ``--runs`` runs of N views drawn from the pool (the
authors' protocol, ``wca.evaluate``), all with their published defaults (nothing is tuned on
this test set). Heads that take a temperature get the model's own ``logit_scale``. CLIP-E is
left out: the demo world has no template set.

    .venv/bin/python benchmarks/peers.py            # the table of the README (a few minutes)
    .venv/bin/python benchmarks/peers.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import table
from wca.demo.run import demo_sources, model_file
from wca.demo.world import DemoTestSet
from wca.encoders import load_encoder
from wca.evaluate import evaluate
from wca.features import extract_features
from wca.methods import build_head

METHODS = (
    "clip", "clip-d", "cupl", "wca", "wca-uniform-crops", "wca-uniform-text", "wca-full-view",
    "wca-paper", "zero", "mta", "awt",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=10, help="test images per class")
    parser.add_argument("--crops", default="16,60", help="values of N")
    parser.add_argument("--strategies", default="random,rrc")
    parser.add_argument("--pool", type=int, default=60, help="views per image in the pool")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.5, help="random crops' smallest side")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.crops, args.pool, args.runs = 1, "4", 6, 2
    counts = [int(n) for n in args.crops.split(",")]
    strategies = args.strategies.split(",")

    start = time.time()
    dataset = DemoTestSet(args.per_class)
    encoder = load_encoder(f"open_clip:{model_file()}", device="cpu")
    sources = demo_sources(dataset.classnames)
    heads = {name: build_head(name, encoder, sources) for name in METHODS}  # its logit_scale
    columns = [(s, n) for s in strategies for n in counts]
    cells: dict[str, list[str]] = {name: [] for name in METHODS}
    for strategy in strategies:
        features = extract_features(
            encoder, dataset, args.pool, args.alpha, strategy=strategy, progress=False
        )
        for n in counts:
            result = evaluate(features, heads, args.runs, n, seed=0)
            for name, method in result.methods.items():
                mean, std = method.top1_mean_std
                cells[name].append(f"{mean:.2f} ± {std:.2f}")
            print(f"{strategy} N={n}: scored ({time.time() - start:.0f} s)", flush=True)

    print(
        f"\n# Top-1 (%) on the demo world ({len(dataset)} images, {len(dataset.classnames)} "
        f"classes), mean ± std over {args.runs} runs of N views from a pool of {args.pool}; "
        f"logit_scale {encoder.logit_scale:.1f}, torch {torch.__version__}\n"
    )
    headers = ["method"] + [f"{s} N={n}" for s, n in columns]
    print(table(headers, [[name, *cells[name]] for name in METHODS]))
    print(f"\n{time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
