"""`wca extract`: the feature pass of `wca eval` alone (fill the cache)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from wca.cli import UsageError
from wca.cli.options import describe, evaluation_settings, log, run_options
from wca.cli.settings import given


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="run only the feature pass of `wca eval` (fill the cache)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=describe(
            "Embed every image's full view and --n-crops crops into the feature cache (with "
            "--aux-model, the same views by that second encoder too), e.g. "
            "on a GPU machine before scoring elsewhere. An interrupted run resumes from the "
            "last complete shard; damaged shards are found and recomputed. Under torchrun, "
            "every rank encodes its share of the shards and rank 0 reports.",
            "wca extract --dataset imagenet --data-root ~/data/imagenet \\\n"
            "      --model open_clip:ViT-B-32/openai --device cuda --precision fp16 \\\n"
            "      --batch-size 1024 --num-workers 8\n"
            "  torchrun --nproc-per-node 4 -m wca extract --dataset imagenet \\\n"
            "      --data-root ~/data/imagenet --model open_clip:ViT-B-32/openai",
        ),
    )
    evaluation_settings(parser, ("model", "data", "crops"), repeatable=False)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML settings (as for wca eval); flags override it",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting by name, e.g. n_crops=60 (repeatable)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wca.cell_models import aux_features, extract, load_model
    from wca.config import EvalConfig, resolve_config
    from wca.inputs import load_cell_dataset

    options = run_options(args)
    config = resolve_config(args.dataset, args.config, given(args, EvalConfig), args.set)
    if not config.dataset or not config.data_root:
        raise UsageError("no dataset or data root: pass --dataset NAME and --data-root DIR")
    for note in config.notes:
        log.info(note)
    dataset = load_cell_dataset(config, options)
    encoder = load_model(config, options)
    started = time.perf_counter()
    heads = None
    if config.budget.adaptive:  # the stopping head reads the texts, as eval's does
        from wca.cell_models import build_heads
        from wca.pipeline import Cell

        sources = Cell(config).prepare(options).sources
        heads = build_heads(config, sources, encoder, options.allow_duplicate_classes)
    features = extract(config, options, encoder, dataset, heads=heads)
    aux = aux_features(config, options, None, dataset, features)
    if features is None:  # a rank other than 0 of a torchrun: its shards are done
        return 0
    seconds = time.perf_counter() - started
    where = features.source if features.source is not None else "memory (--cache-dir none)"
    views = len(features) * (config.n_crops + 1)
    if features.counts is not None:
        views = len(features) + int(features.counts.sum())
    print(
        f"{len(features)} images, {views} views in {seconds:.1f} s "
        f"({len(features) / seconds:.2f} images/s); features in {where}"
    )
    if aux is not None:
        where = aux.features.source or "memory (--cache-dir none)"
        print(f"the same views by --aux-model {config.aux_model}: features in {where}")
    return 0
