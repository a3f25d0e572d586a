"""`wca eval`: extract features once, then score every method over the authors' multi-run
protocol; a markdown table and a JSON file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from wca.cli import UsageError
from wca.cli.options import (
    build_heads,
    crop_options,
    data_options,
    describe,
    extract,
    load_dataset,
    load_encoder,
    model_options,
    resolve,
    slug,
    text_sources,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="benchmark clip, clip-e, clip-d, waffle, cupl and wca on a dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=describe(
            "Extract features once (the full view and a pool of crops per image, cached and "
            "resumable), then score every method over --n-run runs of --patch-n crops drawn "
            "from the pool, as the WCA authors do. Prints a markdown table and writes a JSON "
            "file with every run, the resolved settings and the library versions.",
            "wca eval --dataset cub --data-root ~/data/CUB_200_2011 \\\n"
            "      --model open_clip:ViT-B-32/openai --descriptions-dir shared/descriptors\n"
            "  wca eval --config cub.yaml --data-root ~/data/CUB_200_2011 --n-run 5 \\\n"
            "      --set methods.wca.image_scale=3\n"
            "  wca eval --dataset imagefolder --data-root my_photos --descriptions my.json \\\n"
            "      --methods clip,cupl,wca --model open_clip:ViT-B-32/openai",
        ),
    )
    data_options(parser)
    model_options(parser)
    crop_options(parser)
    protocol = parser.add_argument_group("protocol and methods")
    protocol.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML settings in the WCA authors' shape (model_size, alpha, "
        "n_samples, n_run, patch_n, methods); flags override it",
    )
    protocol.add_argument(
        "--methods",
        help="comma-separated methods (default: clip,clip-e,clip-d,waffle,cupl,wca); also "
        "wca-uniform-crops, wca-uniform-text, wca-full-view, wca-paper, zero, mta, awt",
    )
    protocol.add_argument("--n-run", "--runs", dest="n_run", type=int, help="runs to average (20)")
    protocol.add_argument("--patch-n", type=int, help="crops drawn per run (default 60)")
    protocol.add_argument(
        "--protocol",
        choices=("pool", "fresh"),
        help="pool: each run draws --patch-n crops with replacement from the "
        "pool, same indices for every image (the authors'); fresh: each run "
        "gets its own crops (needs n-samples >= n-run * patch-n)",
    )
    protocol.add_argument("--image-scale", type=float, help="wca crop-weight scale (exp'd; 4.0)")
    protocol.add_argument(
        "--text-scale", type=float, help="wca description-weight scale (exp'd; 2.0)"
    )
    protocol.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. n_run=5, "
        "methods.waffle.draws=7, methods.clip-d.enabled=false (repeatable)",
    )
    protocol.add_argument(
        "--allow-duplicate-classes",
        action="store_true",
        help="score class lists with repeated names (ImageNet's published "
        "names repeat 'missile' and 'sunglasses')",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="result JSON (default: wca-results/<dataset>-<split>-<model>.json)",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bars")
    output.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip unreadable images (each named on stderr and listed under skipped_images "
        "in the result JSON; accuracy is over the rest) instead of stopping at the first",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wca.evaluate import evaluate, run_indices, write_json

    config = resolve(args, protocol_flags=True)
    methods = config.enabled_methods()
    if not methods:
        raise UsageError("every method is disabled: enable one (--methods clip,wca)")
    run_indices(config.n_samples, config.n_run, config.patch_n, config.seed, config.protocol)
    dataset = load_dataset(config, args)
    sources, text_source = text_sources(dataset, args)
    encoder = load_encoder(args, config.model_spec, config.batch_size)
    heads = build_heads(config, sources, encoder, args.allow_duplicate_classes)
    started = time.perf_counter()
    reasons: dict[int, str] = {}
    if args.skip_bad_images:
        args.on_bad_image = lambda index, error: reasons.setdefault(index, str(error))
    features = extract(config, args, encoder, dataset)
    paths = getattr(dataset, "paths", None)
    skipped = []
    for i in (~features.valid).nonzero().flatten().tolist():
        file = None if paths is None else str(paths[i])
        cached = f"{file or 'image'}: unreadable when the cached features were made"
        skipped.append({"index": i, "file": file, "error": reasons.get(i, cached)})
    for entry in skipped:
        print(f"wca: skipped image {entry['index']}: {entry['error']}", file=sys.stderr)
    extracted = time.perf_counter()
    where = "in memory" if features.source is None else f"cached in {features.source}"
    print(
        f"features: {len(features)} images x {config.n_samples} crops, {where} "
        f"({extracted - started:.1f} s)",
        file=sys.stderr,
    )
    result = evaluate(
        features,
        heads,
        config.n_run,
        config.patch_n,
        config.seed,
        protocol=config.protocol,
        class_subset=dataset.class_subset,
        progress=not args.no_progress,
    )
    title = f"{dataset.name} ({dataset.split}), {config.model_spec}"
    print(result.table(title))
    out = args.out or Path("wca-results") / slug(
        f"{dataset.name}-{dataset.split}-{config.model_spec}.json"
    )
    run = {
        **config.to_dict(),
        "data_path": str(Path(config.data_path).resolve()),
        "descriptions": str(text_source),
        "encoder": encoder.identity,
        "device": str(encoder.device),
        "precision": args.precision,
        "num_workers": args.num_workers,
        "feature_cache": None if features.source is None else str(features.source),
        "skipped_images": skipped,
        "dataset_info": {
            "name": dataset.name,
            "split": dataset.split,
            "images": len(dataset),
            "classnames": list(dataset.classnames),
        },
        "seconds": {
            "features": round(extracted - started, 3),
            "scoring": round(time.perf_counter() - extracted, 3),
        },
    }
    write_json(result, out, run)
    print(f"\nwrote {out}", file=sys.stderr)
    return 0
