"""`wca demo`: run the method offline on the built-in demo world; `wca demo train`: retrain the
demo's tiny CLIP."""

from __future__ import annotations

import argparse
from pathlib import Path

from wca import defaults
from wca.cli import UsageError
from wca.cli.settings import flag_of

DEFAULT_OUT = "wca-demo-output"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run clip, clip-d, cupl and wca offline on the built-in demo world",
        description="Render the demo test set (fixed seed), score clip, clip-d, cupl-style "
        "sentences and wca with the shipped tiny CLIP over several runs, and write the table, "
        "results.json and explanation.png to --out. With --export, write the test set as an "
        "image folder with its class names, descriptions and the model file instead.",
    )
    parser.add_argument(
        "--output", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument("--export", metavar="DIR", help="write the test set, texts and model here")
    parser.add_argument("--per-class", type=int, default=20, help="test images per class (20)")
    parser.add_argument(
        "--n-crops",
        type=int,
        default=defaults.N_CROPS,
        help=f"crop pool per image ({defaults.N_CROPS})",
    )
    parser.add_argument("--n-run", type=int, default=10, help="evaluation runs (10)")
    parser.add_argument(
        "--patch-n", type=int, default=defaults.N_CROPS, help=f"crops per run ({defaults.N_CROPS})"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=defaults.ALPHA,
        help=f"smallest crop scale ({defaults.ALPHA})",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.SEED, help=f"crop and run seed ({defaults.SEED})"
    )
    parser.add_argument("--model", help="an OpenAI-format model file (default: the shipped one)")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars or phase lines"
    )
    parser.set_defaults(handler=run)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train the demo's tiny CLIP contrastively on the demo world",
        description="Train the demo model (seeded) and save it as an fp16 OpenAI-format state "
        "dict; prints the single-object probe at the end.",
    )
    train.add_argument("--output", required=True, help="model file to write (.pt)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--steps", type=int, default=None, help="training steps (default: recipe)")
    train.add_argument("--threads", type=int, default=1, help="CPU threads (1, as the shipped run)")
    train.set_defaults(handler=run_train)


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise UsageError(f"{flag_of(name)} must be >= 1, got {getattr(args, name)}")


def run(args: argparse.Namespace) -> int:
    from wca.demo.run import export, run_demo

    _positive(args, "per_class", "n_crops", "n_run", "patch_n")
    if args.export:
        if Path(args.export).exists() and not Path(args.export).is_dir():
            raise UsageError(f"--export {args.export}: is a file, expected a folder to write")
        out = export(args.export, per_class=args.per_class, model=args.model)
        print(f"wrote the demo test set, class names, descriptions and model to {out}")
        return 0
    run_demo(
        args.output,
        model=args.model,
        per_class=args.per_class,
        n_crops=args.n_crops,
        n_run=args.n_run,
        patch_n=args.patch_n,
        alpha=args.alpha,
        seed=args.seed,
        progress=not args.no_progress,
    )
    return 0


def run_train(args: argparse.Namespace) -> int:
    from wca.demo.probe import format_probe
    from wca.demo.train import TrainConfig, probe_model, train

    config = TrainConfig(seed=args.seed, threads=args.threads)
    if args.steps is not None:
        _positive(args, "steps")
        config.steps = args.steps
    out = Path(args.output)
    model = train(config, out, log=lambda line: print(line, flush=True))
    print(format_probe(probe_model(model)))
    print(f"wrote {out}")
    return 0
