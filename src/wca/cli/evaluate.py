"""`wca eval` (benchmark every method on a dataset), `wca extract` (the feature pass only) and
`wca classify` (WCA on your own images and classes)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from wca.cli import UsageError

IMAGENET_FAMILY = ("imagenet", "imagenetv2", "imagenet-sketch", "imagenet-r", "imagenet-a")


def default_cache_dir() -> Path:
    """``$WCA_CACHE_DIR/features``, else ``$XDG_CACHE_HOME/wca/features`` (``~/.cache``)."""
    if os.environ.get("WCA_CACHE_DIR"):
        return Path(os.environ["WCA_CACHE_DIR"]) / "features"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "wca" / "features"


# ----------------------------------------------------------------------------- parsers


def _describe(paragraph: str, examples: str) -> str:
    """A sub-command description: the paragraph wrapped for the terminal, examples verbatim."""
    return textwrap.fill(paragraph, 78) + "\n\nexamples:\n  " + examples


def register(subparsers: argparse._SubParsersAction) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    evaluate = subparsers.add_parser(
        "eval",
        help="benchmark clip, clip-e, clip-d, waffle, cupl and wca on a dataset",
        formatter_class=formatter,
        description=_describe(
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
    _data_options(evaluate)
    _model_options(evaluate)
    _crop_options(evaluate)
    protocol = evaluate.add_argument_group("protocol and methods")
    protocol.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML settings in the WCA authors' shape (model_size, alpha, "
        "n_samples, n_run, patch_n, methods); flags override it",
    )
    protocol.add_argument(
        "--methods",
        help="comma-separated subset of clip,clip-e,clip-d,waffle,cupl,wca (default: all)",
    )
    protocol.add_argument("--n-run", type=int, help="runs to average (default 20)")
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
    output = evaluate.add_argument_group("output")
    output.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="result JSON (default: wca-results/<dataset>-<split>-<model>.json)",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bars")
    evaluate.set_defaults(handler=run_eval)

    extract = subparsers.add_parser(
        "extract",
        help="run only the feature pass of `wca eval` (fill the cache)",
        formatter_class=formatter,
        description=_describe(
            "Embed every image's full view and --n-samples crops into the feature cache, e.g. "
            "on a GPU machine before scoring elsewhere. An interrupted run resumes from the "
            "last complete shard; damaged shards are found and recomputed.",
            "wca extract --dataset imagenet --data-root ~/data/imagenet \\\n"
            "      --model open_clip:ViT-B-32/openai --device cuda --precision fp16 \\\n"
            "      --batch-size 1024 --num-workers 8",
        ),
    )
    _data_options(extract)
    _model_options(extract)
    _crop_options(extract)
    extract.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML settings (as for wca eval); flags override it",
    )
    extract.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key (repeatable)",
    )
    extract.add_argument("--no-progress", action="store_true", help="no progress bar")
    extract.set_defaults(handler=run_extract)

    classify = subparsers.add_parser(
        "classify",
        help="classify your own images among your own classes with WCA",
        formatter_class=formatter,
        description=_describe(
            "Score each image's crops against descriptions of each class (JSON "
            "{class: [sentence, ...]}, e.g. from `wca describe`) and print the top classes.",
            "wca classify bird.jpg --classes 'blue jay,cardinal' --descriptions birds.json \\\n"
            "      --model open_clip:ViT-B-32/openai",
        ),
    )
    classify.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    names = classify.add_mutually_exclusive_group(required=True)
    names.add_argument("--classes", help="comma-separated class names")
    names.add_argument(
        "--classes-file",
        type=Path,
        metavar="FILE",
        help="class names: JSON list or one name per line",
    )
    classify.add_argument(
        "--descriptions",
        type=Path,
        required=True,
        metavar="FILE",
        help="JSON {class: [sentence, ...]} with every class",
    )
    classify.add_argument("--top-k", type=int, default=5, help="classes shown per image (5)")
    classify.add_argument("--json", action="store_true", help="print JSON instead of text")
    classify.add_argument("--n-crops", type=int, default=60, help="crops per image (60)")
    classify.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="smallest crop side, as a fraction of the short side (0.5)",
    )
    classify.add_argument("--seed", type=int, default=0, help="crop sampler seed (0)")
    classify.add_argument(
        "--fidelity",
        action="store_true",
        help="preprocess every crop with the model's own transform",
    )
    _model_options(classify, with_workers=False)
    classify.set_defaults(handler=run_classify)


def _data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        help="dataset name: imagefolder, imagenet, imagenetv2, "
        "imagenet-sketch, imagenet-r, imagenet-a, cub, dtd, food101, "
        "oxford_pets, places365, eurosat",
    )
    group.add_argument(
        "--data-root",
        type=Path,
        metavar="DIR",
        help="where the dataset is, as downloaded (or data_path in --config)",
    )
    group.add_argument("--split", help="split to read (default: the paper's test split)")
    group.add_argument(
        "--descriptions-dir",
        type=Path,
        metavar="DIR",
        help="description sets laid out <dataset>/cupl.json, clip-d.json, "
        "clip-e.json, classnames.json (default: $WCA_DESCRIPTIONS_DIR, else "
        "~/.cache/wca/descriptions; `wca descriptions fetch` fills it)",
    )
    group.add_argument(
        "--descriptions",
        type=Path,
        metavar="PATH",
        help="texts for this run: a folder laid out like one dataset of "
        "--descriptions-dir (replaces it), or a {class: [sentence, ...]} JSON (replaces its "
        "sentences, used by cupl and wca); needed for imagefolder",
    )
    group.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="feature cache (default: $WCA_CACHE_DIR/features, else ~/.cache/wca/features)",
    )
    group.add_argument("--no-cache", action="store_true", help="keep features in memory only")


def _model_options(parser: argparse.ArgumentParser, with_workers: bool = True) -> None:
    group = parser.add_argument_group("model and speed")
    group.add_argument(
        "--model",
        metavar="SPEC",
        help="open_clip:ViT-B-32/openai, open_clip:hf-hub:org/name, "
        "open_clip:ARCH@/path.pt, hf:openai/clip-vit-base-patch32, hf:/dir "
        "(eval default: the OpenAI weights of model_size in --config)",
    )
    group.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda:0")
    group.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "bf16"),
        help="model precision (fp16 on GPUs only; default fp32)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        help="views per encoder forward pass (default 256; no effect on results)",
    )
    if with_workers:
        group.add_argument(
            "--num-workers",
            type=int,
            default=0,
            help="loader processes decoding images and making crops (default 0:"
            " one background thread)",
        )
        group.add_argument(
            "--shard-size", type=int, default=1000, help="images per cache shard (default 1000)"
        )


def _crop_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("crops")
    group.add_argument(
        "--alpha",
        type=float,
        help="smallest crop side as a fraction of the short side (0.5; places365 0.7)",
    )
    group.add_argument("--beta", type=float, help="largest crop side fraction (0.9)")
    group.add_argument(
        "--n-samples", type=int, help="crop pool per image (100; 60 for the ImageNet family)"
    )
    group.add_argument("--seed", type=int, help="seed of crops and run draws (0)")
    group.add_argument(
        "--crop-strategy",
        metavar="NAME",
        help="random: the paper's uniform crops (default); diverse: random "
        "without near-duplicates (IoU filter); grid: a multi-scale grid",
    )
    group.add_argument(
        "--fidelity",
        action="store_true",
        default=None,
        help="make crops with the model's own PIL preprocessing per crop (the "
        "authors' way, slower) instead of the fast tensor path",
    )
    group.add_argument(
        "--fp16-cache",
        dest="half",
        action="store_true",
        default=None,
        help="store features in fp16 (half the disk)",
    )


# ----------------------------------------------------------------------------- shared steps


def _resolve(args: argparse.Namespace, protocol_flags: bool):
    from wca.config import resolve_config

    overrides: dict[str, Any] = {
        "alpha": args.alpha,
        "beta": args.beta,
        "n_samples": args.n_samples,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "split": args.split,
        "crop_strategy": args.crop_strategy,
        "fidelity": args.fidelity,
        "half": args.half,
        "model": args.model,
        "data_path": None if args.data_root is None else str(args.data_root),
    }
    settings = list(args.set)
    if protocol_flags:
        overrides.update(n_run=args.n_run, patch_n=args.patch_n, protocol=args.protocol)
        if args.methods is not None:
            settings.insert(0, f"methods={args.methods}")
        for flag in ("image_scale", "text_scale"):
            if getattr(args, flag) is not None:
                settings.append(f"methods.wca.{flag}={getattr(args, flag)}")
    config = resolve_config(args.dataset, args.config, overrides, settings)
    if not config.dataset:
        raise UsageError("no dataset: pass --dataset NAME (or dataset: in --config)")
    if not config.data_path:
        raise UsageError("no data root: pass --data-root DIR (or data_path: in --config)")
    return config


def _load_dataset(config, args: argparse.Namespace):
    from wca.datasets import load_dataset

    return load_dataset(
        config.dataset, config.data_path, config.split, descriptions_dir=args.descriptions_dir
    )


def _text_sources(dataset, args: argparse.Namespace):
    """The texts of every method and where they came from.

    ``--descriptions FOLDER`` replaces the dataset's folder of the descriptions directory;
    ``--descriptions FILE`` replaces only its sentences (cupl, wca). Class names come from the
    folder when it has its own lists, else from the dataset; ImageNet and its variants use
    ImageNet's lists (CuPL names; OpenAI names for clip-d and waffle), as the authors do.
    """
    from wca.datasets import resolve_descriptions_dir
    from wca.descriptions import load_descriptions
    from wca.methods import TextSources, load_text_sources

    folder = None
    if args.descriptions is not None and args.descriptions.is_dir():
        folder = args.descriptions
    elif dataset.descriptions_name:
        directory, _ = resolve_descriptions_dir(args.descriptions_dir)
        folder = directory / dataset.descriptions_name
    if folder is None or (args.descriptions is not None and not folder.is_dir()):
        if args.descriptions is None:
            raise UsageError(
                f"{dataset.name}: no descriptions for these classes: pass --descriptions FOLDER "
                "or a {class: [sentence, ...]} JSON file"
            )
        sources = TextSources(list(dataset.classnames))
    else:
        own_names = any((folder / n).is_file() for n in ("classnames.json", "classnames-cupl.json"))
        sources = load_text_sources(folder, None if own_names else list(dataset.classnames))
        names = folder.parent / "imagenet"
        if dataset.name in IMAGENET_FAMILY and (names / "classnames-openai.json").is_file():
            # the authors score every ImageNet variant with ImageNet's name lists
            imagenet = load_text_sources(names)
            sources.classnames, sources.classnames_for = (
                imagenet.classnames,
                imagenet.classnames_for,
            )
    if len(sources.classnames) != len(dataset.classnames):
        raise ValueError(
            f"{folder}: {len(sources.classnames)} class names, the dataset has "
            f"{len(dataset.classnames)}"
        )
    if args.descriptions is not None and not args.descriptions.is_dir():
        sources.sentences = load_descriptions(args.descriptions)
        return sources, args.descriptions if folder is None else f"{folder} + {args.descriptions}"
    return sources, folder


def _load_encoder(args: argparse.Namespace, spec: str, batch_size: int | None):
    from wca.encoders import load_encoder

    return load_encoder(spec, device=args.device, precision=args.precision, batch_size=batch_size)


def _extract(config, args: argparse.Namespace, encoder, dataset):
    from wca.features import extract_features

    if args.num_workers < 0:
        raise UsageError(f"--num-workers must be >= 0, got {args.num_workers}")
    return extract_features(
        encoder,
        dataset,
        config.n_samples,
        config.alpha,
        config.beta,
        config.seed,
        None if args.no_cache else (args.cache_dir or default_cache_dir()),
        batch_size=config.batch_size,
        num_workers=args.num_workers,
        shard_size=args.shard_size,
        fidelity=config.fidelity,
        half=config.half,
        strategy=config.crop_strategy,
        progress=not args.no_progress,
    )


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-._" else "-" for c in text)
    return "-".join(part for part in keep.split("-") if part)[-80:]


# ----------------------------------------------------------------------------- handlers


def run_eval(args: argparse.Namespace) -> int:
    from wca.evaluate import evaluate, run_indices, write_json
    from wca.methods import build_head

    config = _resolve(args, protocol_flags=True)
    methods = config.enabled_methods()
    if not methods:
        raise UsageError("every method is disabled: enable one (--methods clip,wca)")
    run_indices(config.n_samples, config.n_run, config.patch_n, config.seed, config.protocol)
    dataset = _load_dataset(config, args)
    sources, text_source = _text_sources(dataset, args)
    encoder = _load_encoder(args, config.model_spec, config.batch_size)
    heads = {
        method.name: build_head(
            method.name,
            encoder.encode_texts,
            sources,
            allow_duplicates=args.allow_duplicate_classes,
            **method.options,
        )
        for method in methods
    }
    started = time.perf_counter()
    features = _extract(config, args, encoder, dataset)
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
    out = args.out or Path("wca-results") / _slug(
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


def run_extract(args: argparse.Namespace) -> int:
    config = _resolve(args, protocol_flags=False)
    dataset = _load_dataset(config, args)
    encoder = _load_encoder(args, config.model_spec, config.batch_size)
    started = time.perf_counter()
    features = _extract(config, args, encoder, dataset)
    seconds = time.perf_counter() - started
    where = features.source if features.source is not None else "memory (--no-cache)"
    print(
        f"{len(features)} images x {config.n_samples + 1} views in {seconds:.1f} s "
        f"({len(features) / seconds:.2f} images/s); features in {where}"
    )
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from wca.classifier import WCAClassifier
    from wca.descriptions import load_classnames

    if args.classes is not None:
        classnames = [name.strip() for name in args.classes.split(",") if name.strip()]
    else:
        classnames = load_classnames(args.classes_file)
    if len(classnames) < 2:
        raise UsageError("give at least two classes (--classes a,b or --classes-file FILE)")
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    missing = [str(path) for path in args.images if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: no such image file")
    if not args.model:
        raise UsageError("no model: pass --model SPEC, e.g. open_clip:ViT-B-32/openai")
    encoder = _load_encoder(args, args.model, args.batch_size)
    classifier = WCAClassifier(
        encoder,
        classnames,
        args.descriptions,
        n_crops=args.n_crops,
        alpha=args.alpha,
        seed=args.seed,
        fidelity=args.fidelity,
    )
    predictions = classifier.predict(args.images, top_k=args.top_k)
    if args.json:
        document = [
            {"image": str(path), "predictions": prediction.as_pipeline()}
            for path, prediction in zip(args.images, predictions, strict=True)
        ]
        print(json.dumps(document, indent=1))
        return 0
    for path, prediction in zip(args.images, predictions, strict=True):
        print(path)
        for rank, (label, score) in enumerate(
            zip(prediction.labels, prediction.scores, strict=True), 1
        ):
            print(f"  {rank}. {label}  {score:.3f}")
    return 0
