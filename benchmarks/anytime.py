"""Anytime views: top-1 against encoder passes when each image stops reading crops once a rule
settles it (``wca.stopping``), against a fixed N for every image.

Offline, on fully encoded crops: for each crop order (``random``, ``diverse``, ``grid`` of
``wca.crops``; random orders with several crop seeds) the demo's test images are encoded once
with the full view and ``--max-crops`` crops (shipped demo model), and WCA (authors' scales) is
scored on every prefix crops[:k] (one batched call per k). Then:

- fixed N = 1..max: every image reads N crops, N + 1 encoder passes;
- a budget (``wca.stopping.CropBudget``): ``--min-crops`` crops, then ``--crops-per-round``
  more per round while WCA, the stopping head, leaves the image open; its cost is 1 + the crops
  it read. Each rule is swept over its setting (margin z, patience p).

Top-1 and views are means over crop seeds; "Δ N=max" is the paired 95 % bootstrap interval
(``wca.paired``, images resampled) of the difference to fixed N = max of the same order, each
image's correctness averaged over seeds; "agree" is the share of images whose answer is the one
fixed N = max gives; "Δ curve" the difference to the fixed-N curve at the same mean cost
(linear between integer N). Then the default budget's stop lengths are used by ZERO, MTA, AWT
and LaZSL (WCA stops, they score), and with ``--own-heads`` each of them is its own stopping
head (patience, and the margin rule through its scores: delete-a-round jackknife and prefix).

    .venv/bin/python benchmarks/anytime.py --plot docs/anytime.png   # the study (~15 min)
    .venv/bin/python benchmarks/anytime.py --test-seed 2024          # the confirmation seed
    .venv/bin/python benchmarks/anytime.py --quick                   # smoke test
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from _common import machine_report, table
from wca.crops import CropSpec
from wca.defaults import demo_model
from wca.demo.run import TEST_SEED, demo_sources
from wca.demo.world import DemoTestSet
from wca.encoders import load_encoder
from wca.features import extract_features
from wca.methods import build_head
from wca.options import RunOptions
from wca.paired import paired_bootstrap
from wca.stopping import CropBudget, MarginRule, PatienceRule, crop_evidence, jackknife_evidence

DETERMINISTIC = {"grid"}
PEERS = ("zero", "mta", "awt", "lazsl")
SHARES = {"zero"}  # heads whose scores grow with the views (vote counts): margins on shares
FIXED_ROWS = (1, 2, 4, 6, 8, 10, 12, 16, 20, 24, 30, 40, 60)


@dataclass
class Order:
    """One crop order (strategy, seed) of every image, and WCA's scores on its prefixes."""

    strategy: str
    seed: int
    labels: Tensor  # [B]
    image_emb: Tensor  # [B, D]
    crop_emb: Tensor  # [B, N, D]
    prefix: Tensor  # [B, N, C]: WCA's scores on crops[:k] at row k - 1
    crop_scores: Tensor  # [B, N, C]: crop_i . t_c
    weight_logits: Tensor  # [B, N]: exp(image_scale) cos(crop_i, full view)


def encode(encoder, dataset, strategy: str, seed: int, n: int, wca, cache: Path | None) -> Order:
    spec = CropSpec(n_crops=n, alpha=0.5, seed=seed, crop_strategy=strategy)
    features = extract_features(encoder, dataset, spec, RunOptions(cache_dir=cache, progress=False))
    image, crops = features.image_emb.float(), features.crop_emb.float()
    prefix = torch.stack([wca.logits(image, crops[:, :k]) for k in range(1, n + 1)], dim=1)
    logits = math.exp(wca.image_scale) * torch.einsum("bnd,bd->bn", crops, image)
    return Order(strategy, seed, features.labels, image, crops, prefix, crops @ wca.text.T, logits)


def stop_lengths(order: Order, budget: CropBudget) -> Tensor:
    """The crops each image reads under ``budget`` with WCA as the stopping head: the rounds of
    the adaptive extraction, replayed on the encoded crops (open images only)."""
    counts = budget.rounds()
    stop = torch.full((len(order.labels),), budget.max_crops)
    open_ = torch.ones(len(order.labels), dtype=torch.bool)
    for j, crops in enumerate(counts):
        rows = open_.nonzero().flatten()
        history = order.prefix[rows][:, [k - 1 for k in counts[: j + 1]]]
        evidence = None
        if isinstance(budget.rule, MarginRule):
            scores, logits = order.crop_scores[rows, :crops], order.weight_logits[rows, :crops]
            evidence = crop_evidence(scores, logits)
        settled = rows[budget.settled(counts[: j + 1], history, evidence)]
        stop[settled], open_[settled] = crops, False
    return stop


def answers_at(order: Order, lengths: Tensor) -> Tensor:
    """WCA's answer of each image after ``lengths`` crops."""
    return order.prefix[torch.arange(len(lengths)), lengths - 1].argmax(-1)


def interval(d) -> str:
    return f"{d.diff:+.2f} [{d.low:+.2f}, {d.high:+.2f}]"


@dataclass
class Point:
    """A setting's outcome over one strategy's seeds."""

    top1: float
    views: float
    agree: float
    per_image: np.ndarray  # each image's correctness, mean over seeds


def measure(orders: list[Order], lengths: list[Tensor]) -> Point:
    pairs = list(zip(orders, lengths, strict=True))
    correct = torch.stack([answers_at(o, n) == o.labels for o, n in pairs]).double()
    agree = torch.stack([answers_at(o, n) == o.prefix[:, -1].argmax(-1) for o, n in pairs])
    per_image = correct.mean(0).numpy()
    views = 1 + float(torch.stack(lengths).double().mean())
    return Point(
        100 * float(per_image.mean()), views, 100 * float(agree.double().mean()), per_image
    )


def fixed_curve(orders: list[Order], n: int) -> list[Point]:
    return [
        measure(orders, [torch.full_like(o.labels, k) for o in orders]) for k in range(1, n + 1)
    ]


def on_curve(curve: list[Point], views: float, field: str = "top1") -> float:
    """The fixed-N ``field`` (top-1 or agree) at a mean cost of ``views`` (linear between N)."""
    xs = [p.views for p in curve]
    return float(np.interp(views, xs, [getattr(p, field) for p in curve]))


def rule_rows(label: str, points: list[tuple[str, Point]], curve: list[Point]) -> list[list]:
    rows = []
    for setting, p in points:
        d = paired_bootstrap(p.per_image, curve[-1].per_image)
        rows.append([
            label, setting, f"{p.views:.2f}", f"{p.top1:.2f}", interval(d), f"{p.agree:.1f}",
            f"{p.top1 - on_curve(curve, p.views):+.2f}",
        ])  # fmt: skip
    return rows


def verdicts(label: str, points: list[tuple[str, Point]], curve: list[Point], n: int) -> str:
    """Target (a): at or above the fixed-N curve from 4 to 30 crops; (b): N = max's top-1 within
    0.2 points, interval including 0, at <= 20 % (stretch 12.5 %) of its encoder passes."""
    inside = [p for _, p in points if 5 <= p.views <= 31]
    lowest = min((p.top1 - on_curve(curve, p.views) for p in inside), default=math.nan)
    agree = min((p.agree - on_curve(curve, p.views, "agree") for p in inside), default=math.nan)
    meets = []
    for setting, p in points:
        d = paired_bootstrap(p.per_image, curve[-1].per_image)
        if d.diff >= -0.2 and d.low <= 0 <= d.high:
            meets.append((p.views, setting))
    cheapest = min(meets) if meets else (math.nan, "none")
    budget = 0.2 * (n + 1)
    return (
        f"{label}: {len(inside)} settings between 5 and 31 views, lowest Δ curve "
        f"{lowest:+.2f} (agreement with N={n}: {agree:+.1f}); cheapest setting within 0.2 "
        f"of N={n} (interval with 0): "
        f"{cheapest[1]} at {cheapest[0]:.2f} views ({100 * cheapest[0] / (n + 1):.1f} % of "
        f"{n + 1}; target <= {budget:.1f}, stretch <= {0.125 * (n + 1):.1f})"
    )


def peer_rows(orders: list[Order], lengths: list[Tensor], heads: dict) -> list[list]:
    """Each peer head on the crops WCA decided, against its fixed N = max and fixed N at the
    same mean cost."""
    rows = []
    views = 1 + float(torch.stack(lengths).double().mean())
    same = max(1, round(views - 1))
    for name, head in heads.items():
        adaptive, fixed, cheap = [], [], []
        for order, stop in zip(orders, lengths, strict=True):
            right = torch.zeros(len(stop), dtype=torch.bool)
            for k in stop.unique().tolist():
                rows_k = (stop == k).nonzero().flatten()
                answer = head.logits(order.image_emb[rows_k], order.crop_emb[rows_k, :k])
                right[rows_k] = answer.argmax(-1) == order.labels[rows_k]
            adaptive.append(right.double())
            for store, k in ((fixed, order.crop_emb.shape[1]), (cheap, same)):
                answer = head.logits(order.image_emb, order.crop_emb[:, :k]).argmax(-1)
                store.append((answer == order.labels).double())
        a, f, c = (torch.stack(x).mean(0).numpy() for x in (adaptive, fixed, cheap))
        d = paired_bootstrap(a, f)
        rows.append([
            name, f"{views:.2f}", f"{100 * a.mean():.2f}", f"{100 * f.mean():.2f}", interval(d),
            f"{100 * c.mean():.2f} (N={same})",
        ])  # fmt: skip
    return rows


def own_head(order: Order, head, name: str, budget: CropBudget, evidence: str) -> tuple:
    """``head`` as its own stopping head, scored on the open images each round (the adaptive
    extraction's loop); the margin rule's evidence ``"jackknife"`` (the head on the crops less
    each round) or ``"prefix"`` (its scores after each round alone). -> (correct, views)."""
    counts = budget.rounds()
    n_images = len(order.labels)
    history = torch.zeros(n_images, len(counts), order.prefix.shape[2])
    stop = torch.full((n_images,), budget.max_crops)
    answer = torch.zeros(n_images, dtype=torch.long)
    open_ = torch.ones(n_images, dtype=torch.bool)

    def scores(rows: Tensor, keep: Tensor) -> Tensor:
        logits = head.logits(order.image_emb[rows], order.crop_emb[rows][:, keep])
        return head.probabilities(logits, 100.0) if name in SHARES else logits

    for j, crops in enumerate(counts):
        rows = open_.nonzero().flatten()
        if len(rows) == 0:
            break
        history[rows, j] = scores(rows, torch.arange(crops))
        found = None
        if isinstance(budget.rule, MarginRule) and evidence == "jackknife" and j > 0:
            bounds = (0, *counts[: j + 1])  # round g added crops bounds[g]:bounds[g + 1]
            left_out = [
                scores(rows, torch.cat([torch.arange(start), torch.arange(end, crops)]))
                for start, end in zip(bounds, bounds[1:], strict=False)
            ]
            found = jackknife_evidence(history[rows, j], torch.stack(left_out, 1))
        settled = budget.settled(counts[: j + 1], history[rows, : j + 1], found)
        stop[rows[settled]], open_[rows[settled]] = crops, False
        answer[rows[settled]] = history[rows[settled], j].argmax(-1)
    return (answer == order.labels).double(), 1 + float(stop.double().mean())


def plot(path: Path, curves: dict, sweeps: dict, defaults: dict, n: int) -> None:
    """Top-1 (top row) and agreement with fixed N = n (bottom row) against the mean views, one
    column per order: the fixed-N curve, each rule's sweep, the default budget."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    figure = Figure(figsize=(4.2 * len(curves), 7), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(2, len(curves), squeeze=False)
    ticks = [t for t in (2, 3, 5, 10, 20, 30, 60) if t <= n + 1]
    for (row, field, span), (column, strategy) in product(
        ((0, "top1", 8), (1, "agree", 12)), enumerate(curves)
    ):
        axes, curve = grid[row, column], curves[strategy]
        lines = {"fixed N": [("", p) for p in curve]} | {
            rule: points for (rule, order), points in sweeps.items() if order == strategy
        }
        for (label, points), style in zip(lines.items(), ("k.-", "o-", "s--"), strict=False):
            ys = [getattr(p, field) for _, p in points]
            axes.plot([p.views for _, p in points], ys, style, ms=4, label=label)
        top, best = getattr(curve[-1], field), defaults[strategy]
        axes.plot(best.views, getattr(best, field), "k*", ms=11, label="default budget")
        axes.axhline(top, color="grey", lw=0.8, ls=":", label=f"fixed N={n}")
        axes.axvline(0.2 * (n + 1), color="grey", lw=0.8, ls="-.", label="20 % of the passes")
        axes.set(xscale="log", xticks=ticks, xticklabels=ticks, title=(strategy, "")[row])
        axes.set_ylim(top - span, min(top + span / 4, 100.5))
        axes.xaxis.set_minor_formatter(NullFormatter())
    grid[0, 0].set_ylabel("top-1 (%)")
    grid[1, 0].set_ylabel(f"agreement with fixed N={n} (%)")
    grid[0, 0].legend(fontsize=7, loc="lower right")
    for axes in grid[1]:
        axes.set_xlabel("encoder passes per image (mean)")
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20, help="test images per class")
    parser.add_argument("--test-seed", type=int, default=TEST_SEED, help="the demo's test set")
    parser.add_argument("--max-crops", type=int, default=60, help="N of the fixed reference")
    parser.add_argument("--strategies", default="random,diverse,grid")
    parser.add_argument("--crop-seeds", type=int, default=3, help="seeds of random orders")
    parser.add_argument("--min-crops", type=int, default=CropBudget().min_crops)
    parser.add_argument("--crops-per-round", type=int, default=CropBudget().crops_per_round)
    parser.add_argument("--margin-z", default="0.5,1,1.5,2,2.5,3,4,5,6,8,12")
    parser.add_argument("--patience", default="2,4,6,8,10,12,16,20,26")
    parser.add_argument("--rounds", default="2x2,4x1,4x4,8x4", help="k0xr for the default rule")
    parser.add_argument("--peers", default=",".join(PEERS), help="heads scored on WCA's stops")
    parser.add_argument("--own-heads", action="store_true", help="peers as stopping heads too")
    parser.add_argument("--cache", type=Path, help="feature cache folder (default: in memory)")
    parser.add_argument("--plot", type=Path, help="write the curves as a PNG")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.max_crops, args.strategies, args.crop_seeds = 1, 8, "random", 1
        args.margin_z, args.patience, args.rounds, args.peers = "1,3", "2", "2x2", "zero"
        args.own_heads = True
    n = args.max_crops
    base = CropBudget(n, min(args.min_crops, n), args.crops_per_round)
    print(machine_report(), flush=True)

    start = time.time()
    dataset = DemoTestSet(args.per_class, args.test_seed)
    encoder = load_encoder(f"open_clip:{demo_model()}", device="cpu")
    sources = demo_sources(dataset.classnames)
    wca = build_head("wca", encoder, sources)
    peers = {name: build_head(name, encoder, sources) for name in args.peers.split(",") if name}
    # the feature cache tells in-memory datasets apart by name and length only: one folder a seed
    cache = args.cache / f"test-seed-{args.test_seed}" if args.cache else None
    orders: dict[str, list[Order]] = {}
    for strategy in args.strategies.split(","):
        seeds = range(1 if strategy in DETERMINISTIC else args.crop_seeds)
        orders[strategy] = [encode(encoder, dataset, strategy, s, n, wca, cache) for s in seeds]
        print(
            f"{strategy}: {len(seeds)} order(s) encoded ({time.time() - start:.0f} s)", flush=True
        )

    print(
        f"\n# Anytime views on the demo world ({len(dataset)} images, test seed {args.test_seed}, "
        f"{len(dataset.classnames)} classes), WCA as the stopping head, N <= {n}, default "
        f"{base.rule}, min_crops {base.min_crops}, crops_per_round {base.crops_per_round}"
    )
    curves, sweeps, defaults = {}, {}, {}
    for strategy, group in orders.items():
        curve = curves[strategy] = fixed_curve(group, n)
        print(f"\n## {strategy} ({len(group)} crop seed(s)): fixed N\n")
        rows = [[k, k + 1, f"{curve[k - 1].top1:.2f}", f"{curve[k - 1].agree:.1f}"]
                for k in FIXED_ROWS if k <= n]  # fmt: skip
        print(table(["N", "views", "top-1", f"agree N={n}"], rows))
        settings = {
            "margin": [MarginRule(float(z)) for z in args.margin_z.split(",")],
            "patience": [PatienceRule(int(p)) for p in args.patience.split(",")],
        }
        rows, lines = [], []
        for label, rules in settings.items():
            points = []
            for rule in rules:
                budget = replace(base, rule=rule)
                point = measure(group, [stop_lengths(o, budget) for o in group])
                points.append((str(rule.margin_z if label == "margin" else rule.patience), point))
            sweeps[label, strategy] = points
            rows += rule_rows(label, points, curve)
            lines.append(verdicts(label, points, curve, n))
        for spec in args.rounds.split(","):
            k0, r = (int(v) for v in spec.split("x"))
            budget = replace(base, min_crops=min(k0, n), crops_per_round=r)
            point = measure(group, [stop_lengths(o, budget) for o in group])
            rows += rule_rows(f"margin, k0={k0} r={r}", [(str(budget.rule.margin_z), point)], curve)
        print(f"\n## {strategy}: adaptive (k0={base.min_crops}, r={base.crops_per_round})\n")
        print(table(
            ["rule", "setting", "views", "top-1", f"Δ N={n} [95 %]", "agree", "Δ curve"], rows
        ))  # fmt: skip
        print("\n" + "\n".join(lines))
        defaults[strategy] = measure(group, [stop_lengths(o, base) for o in group])

    reference = curves.get("random", next(iter(curves.values())))[-1]
    print(f"\n## The default budget per order, against each order's and random's N={n}\n")
    rows = []
    for strategy, p in defaults.items():
        own, paper = (
            paired_bootstrap(p.per_image, c.per_image) for c in (curves[strategy][-1], reference)
        )
        share = f"{100 * p.views / (n + 1):.1f} %"
        rows.append(
            [strategy, f"{p.views:.2f}", share, f"{p.top1:.2f}", interval(own), interval(paper)]
        )
    print(table(
        ["order", "views", "of N+1", "top-1", f"Δ own N={n}", f"Δ random N={n}"], rows
    ))  # fmt: skip

    if peers:
        print(f"\n## Peers on the crops WCA read ({base.rule}, min_crops {base.min_crops})\n")
        for strategy, group in orders.items():
            lengths = [stop_lengths(o, base) for o in group]
            rows = peer_rows(group, lengths, peers)
            print(f"{strategy}:\n")
            print(table(
                ["head", "views", "top-1 adaptive", f"top-1 N={n}", "Δ [95 %]", "fixed, same cost"],
                rows,
            ))  # fmt: skip
            print()
    if args.own_heads and peers:
        strategy, group = next(iter(orders.items()))
        print(f"## Peers as their own stopping heads ({strategy}, {len(group)} crop seed(s))\n")
        rows = []
        for name, head in peers.items():
            fixed = [head.logits(o.image_emb, o.crop_emb).argmax(-1) == o.labels for o in group]
            fixed = torch.stack(fixed).double().mean(0).numpy()
            for rule, evidence in ((PatienceRule(), "-"), (base.rule, "jackknife"),
                                   (base.rule, "prefix")):  # fmt: skip
                runs = [own_head(o, head, name, replace(base, rule=rule), evidence) for o in group]
                adaptive = torch.stack([correct for correct, _ in runs]).mean(0).numpy()
                d = paired_bootstrap(adaptive, fixed)
                rows.append([
                    name, str(rule), evidence, f"{np.mean([v for _, v in runs]):.2f}",
                    f"{100 * adaptive.mean():.2f}", f"{100 * fixed.mean():.2f}", interval(d),
                ])  # fmt: skip
        headers = ["head", "rule", "evidence", "views", "top-1", f"top-1 N={n}", "Δ [95 %]"]
        print(table(headers, rows))
    if args.plot:
        plot(args.plot, curves, sweeps, defaults, n)
        print(f"\nplot: {args.plot}")
    print(f"\n{time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
