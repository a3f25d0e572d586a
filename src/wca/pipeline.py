"""The evaluation pipeline as a library: one cell (a model on a dataset) from settings to a
result file, the pieces the CLI composes and a Python user can call.

>>> from wca.config import resolve_config
>>> from wca.options import RunOptions
>>> config = resolve_config("cub", overrides={"data_path": "~/data/CUB_200_2011",
...                                          "model": "open_clip:ViT-B-32/openai"})
>>> result = run_cell(config, RunOptions(descriptions_dir="shared/descriptors"))
>>> print(result.table())

:func:`run_cell` loads the dataset and its texts (:func:`text_sources`), the model (unless
given), builds every method's head (:func:`build_heads`), extracts the features (or reads them
from the cache), scores the multi-run protocol and returns the result in the schema of
:mod:`wca.results`. Sweeps over models x datasets x data roots are :mod:`wca.sweep`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from wca.config import EvalConfig
from wca.defaults import IMAGENET_FAMILY
from wca.errors import SettingError
from wca.options import RunOptions
from wca.results import ResultFile
from wca.specs import model_fields, weights_file

log = logging.getLogger("wca")


def dataset_name(config: EvalConfig) -> str:
    """The name results carry: ``config.dataset_name``, else an image folder's own folder name
    (two custom folders stay apart), else the dataset's registered name."""
    if config.dataset_name:
        return config.dataset_name
    if config.dataset == "imagefolder" and config.data_path:
        return Path(config.data_path).expanduser().resolve().name or "imagefolder"
    return str(config.dataset)


def load_cell_dataset(config: EvalConfig, options: RunOptions):
    """The dataset of ``config``, read from its data path."""
    from wca.datasets import load_dataset

    if not config.dataset:
        raise ValueError("dataset: not set (a dataset name, or dataset: in a config file)")
    if not config.data_path:
        raise ValueError("data_path: not set (where the dataset is)")
    return load_dataset(
        config.dataset, config.data_path, config.split, descriptions_dir=options.descriptions_dir
    )


def text_sources(dataset, options: RunOptions):
    """The texts of every method and where they came from.

    ``options.descriptions`` as a folder replaces the dataset's folder of the descriptions
    directory; as a file it replaces only the sentences (cupl, wca). Class names come from the
    folder when it has its own lists, else from the dataset; ImageNet and its variants use
    ImageNet's lists (CuPL names; OpenAI names for clip-d and waffle), as the authors do.
    """
    from wca.datasets import resolve_descriptions_dir
    from wca.descriptions import load_descriptions
    from wca.methods import TextSources, load_text_sources

    given = None if options.descriptions is None else Path(options.descriptions).expanduser()
    folder = None
    if given is not None and given.is_dir():
        folder = given
    elif dataset.descriptions_name:
        directory, _ = resolve_descriptions_dir(options.descriptions_dir)
        folder = directory / dataset.descriptions_name
    if folder is None or (given is not None and not folder.is_dir()):
        if given is None:
            raise ValueError(
                f"{dataset.name}: descriptions: none for these classes (a folder laid out like "
                "the published sets, or a {class: [sentence, ...]} JSON file)"
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
    sources.dataset = dataset.name
    if len(sources.classnames) != len(dataset.classnames):
        raise ValueError(
            f"{folder}: {len(sources.classnames)} class names, the dataset has "
            f"{len(dataset.classnames)}"
        )
    if given is not None and not given.is_dir():
        sources.sentences = load_descriptions(given)
        return sources, str(given.resolve()) if folder is None else f"{folder} + {given.resolve()}"
    return sources, str(folder.resolve())


def sources_sha256(sources) -> str:
    """The first 16 hex digits of the sha256 of every text the methods read (names, sentences,
    descriptors, templates, words): equal digests, equal text sides."""
    texts = {key: value for key, value in vars(sources).items() if value is not None}
    text = json.dumps(texts, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def images_sha256(dataset) -> str | None:
    """The first 16 hex digits of the sha256 of a dataset's image list: each file's path
    (relative to the dataset's folder) and label, in order; None for a dataset that lists no
    files. Results of other images (files added, removed or relabelled) never pool."""
    paths, labels = getattr(dataset, "paths", None), getattr(dataset, "labels", None)
    if paths is None or labels is None:
        return None
    root = getattr(dataset, "root", None) or "."
    pairs = zip(paths, labels, strict=True)
    lines = (f"{os.path.relpath(path, root)}\t{int(label)}" for path, label in pairs)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def cell_digests(dataset, sources) -> dict[str, str | None]:
    """What a result records of its inputs beyond the config: the texts' and the image list's
    digests (compared before a result file is reused or replaced, and by ``wca report``)."""
    return {"descriptions_sha256": sources_sha256(sources), "images_sha256": images_sha256(dataset)}


def file_sha256(path: str | None) -> str | None:
    """The first 16 hex digits of a weights file's sha256 (of the weights file in a folder);
    None without one."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        found = [
            path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()
        ]
        if not found:
            return None
        path = found[0]
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:16]


def build_heads(config: EvalConfig, sources, encoder, allow_duplicates: bool) -> dict[str, Any]:
    """The heads of the enabled methods; a default method whose texts the task lacks (no
    clip-e.json, no word list) is skipped with one line, a method asked for by name fails."""
    from wca.methods import build_head
    from wca.methods.registry import MissingTextSource

    heads = {}
    for method in config.enabled_methods():
        try:  # the encoder brings its logit_scale; sources.dataset the authors' per-dataset values
            heads[method.name] = build_head(
                method.name, encoder, sources, allow_duplicates=allow_duplicates, **method.options
            )
        except MissingTextSource as error:
            if config.named(method.name):
                raise
            log.info(f"skipped {method.name}: {error}")
    if not heads:
        raise ValueError("methods: none can run on these texts (see the lines above)")
    return heads


def load_model(config: EvalConfig, options: RunOptions):
    """The encoder of ``config.model_spec``, on this rank's device under torchrun."""
    from wca.encoders import load_encoder
    from wca.features.distributed import rank_device

    encoder = load_encoder(
        config.model_spec,
        device=rank_device(options.device),
        precision=options.precision,
        batch_size=options.batch_size or config.batch_size,
    )
    encoder.progress = options.progress
    return encoder


def extract(
    config: EvalConfig,
    options: RunOptions,
    encoder,
    dataset,
    on_bad_image=None,
    *,
    split_shards: bool = True,
):
    """The features of every image (cached per ``options``); under torchrun with
    ``split_shards``, each rank encodes its shards and rank 0 alone gets the features (the
    other ranks: None)."""
    from wca.features import extract_features
    from wca.features.distributed import join

    ranks = join(encoder.device, options.dist_timeout) if split_shards else None
    if options.batch_size is None:
        options = options.model_copy(update={"batch_size": config.batch_size})
    return extract_features(
        encoder,
        dataset,
        config.crops,
        options,
        fidelity=config.fidelity,
        half=config.half,
        on_bad_image=on_bad_image,
        ranks=ranks,
    )


def prepare_cell(config: EvalConfig, options: RunOptions, output: str | Path | None = None):
    """``(dataset, text sources, where the texts came from)`` of a cell: what can be checked
    before its model is loaded. ``output`` may not lie inside the dataset's folder."""
    dataset = load_cell_dataset(config, options)
    root = Path(dataset.root).resolve() if getattr(dataset, "root", None) else None
    if output is not None and root is not None and root in Path(output).resolve().parents:
        raise SettingError(
            "output", f"{output} is inside the dataset's folder {root}; write it elsewhere"
        )
    sources, source = text_sources(dataset, options)
    return dataset, sources, source


def run_cell(
    config: EvalConfig,
    options: RunOptions | None = None,
    *,
    encoder=None,
    output: str | Path | None = None,
    primary_method: str | None = None,
    split_shards: bool = True,
    prepared: tuple | None = None,
) -> ResultFile | None:
    """Evaluate one cell: ``config``'s model (or ``encoder``) on its dataset, every enabled
    method over the multi-run protocol. Writes the result to ``output`` when given (never
    inside the dataset's own folder) and returns it; under torchrun, ranks other than 0 encode
    their share of the features and return None. ``prepared``: :func:`prepare_cell`'s
    answer, when the caller checked the data before loading the model."""
    from wca.evaluate import evaluate, result_file

    options = RunOptions() if options is None else options
    if prepared is None:
        prepared = prepare_cell(config, options, output)
    dataset, sources, source = prepared
    encoder = load_model(config, options) if encoder is None else encoder
    if sources.sentences:
        from wca.encoders import check_texts

        check_texts(encoder, sources.sentences, source)  # over the text context: one warning
    heads = build_heads(config, sources, encoder, options.allow_duplicate_classes)
    started = time.perf_counter()
    reasons: dict[int, str] = {}
    skip = options.bad_images == "skip"
    on_bad_image = (lambda index, error: reasons.setdefault(index, str(error))) if skip else None
    features = extract(config, options, encoder, dataset, on_bad_image, split_shards=split_shards)
    if features is None:  # a rank other than 0 of a torchrun: its shards are done
        return None
    paths = getattr(dataset, "paths", None)
    skipped = []
    for i in (~features.valid).nonzero().flatten().tolist():
        file = None if paths is None else str(paths[i])
        cached = f"{file or 'image'}: unreadable when the cached features were made"
        skipped.append({"index": i, "file": file, "error": reasons.get(i, cached)})
        log.warning(f"skipped image {i}: {skipped[-1]['error']}")
    extracted = time.perf_counter()
    where = "in memory" if features.source is None else f"cached in {features.source}"
    log.info(
        f"features: {len(features)} images x {config.n_samples} crops, {where} "
        f"({extracted - started:.1f} s)"
    )
    evaluation = evaluate(
        features,
        heads,
        config.n_run,
        config.patch_n,
        config.seed,
        protocol=config.protocol,
        class_subset=dataset.class_subset,
        logit_scale=float(encoder.logit_scale),
        progress=options.progress,
    )
    for method in config.enabled_methods():
        if method.name in evaluation.methods:
            evaluation.methods[method.name].options = dict(method.options)
    model_file = weights_file(config.model_spec)
    settings = {
        **config.to_dict(),
        "data_path": str(Path(config.data_path).expanduser().resolve()),
        "descriptions": source,
        **cell_digests(dataset, sources),
        "encoder": encoder.identity,
        "model_file": model_file,
        "model_sha256": file_sha256(model_file),
        "views": "fidelity" if config.fidelity else "fast",
        "device": str(encoder.device),
        "precision": options.precision,
        "num_workers": options.num_workers,
        "feature_cache": None if features.source is None else str(Path(features.source).resolve()),
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
    names = model_fields(config.model_spec)
    result = result_file(
        evaluation,
        settings,
        dataset=dataset_name(config),
        model=str(names["model"]),
        pretrained=str(names["pretrained"]),
        primary=primary_method,
    )
    if output is not None:
        result.write(output)
    return result
