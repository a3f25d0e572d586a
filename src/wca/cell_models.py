"""What a cell computes with its models (:mod:`wca.pipeline`): the heads of its methods, its
encoder, the features of every image's views and, with ``aux_model``, the same views by a
second image encoder (:mod:`wca.encoders.vision`) for the heads that read them.

The second encoder's features are a feature pass of their own (:func:`extract` with that
encoder): the same crop boxes (they depend on the seed, the image and the crop index only), cached
beside the first's under the second model's identity, with the same resume, lock and damage
checks (:mod:`wca.features.cache`).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from wca.config import EvalConfig
from wca.deferred import torch
from wca.errors import SettingError
from wca.options import RunOptions

log = logging.getLogger("wca")


class AuxFeatures(NamedTuple):
    """The second encoder's features of a cell's images and that encoder's identity."""

    features: Any
    identity: str


def build_heads(config: EvalConfig, sources, encoder, allow_duplicate_classes: bool) -> dict:
    """The heads of the enabled methods; the default methods whose texts the task lacks (no
    clip-e.json, no word list, no descriptions at all) are skipped, named in one line; a
    method asked for by name fails."""
    from wca.methods import build_head
    from wca.methods.registry import MissingTextSource

    heads, skipped = {}, {}
    for method in config.enabled_methods():
        try:  # the encoder brings its logit_scale; sources.dataset the authors' per-dataset values
            heads[method.name] = build_head(
                method.name,
                encoder,
                sources,
                allow_duplicate_classes=allow_duplicate_classes,
                **method.head_options(config.dataset),
            )
        except MissingTextSource as error:
            if config.named(method.name):
                raise
            skipped[method.name] = error.what
    if skipped:
        needs = "; ".join(f"{name} needs {what}" for name, what in skipped.items())
        log.info(f"skipped {', '.join(skipped)}: their texts are missing ({needs})")
    if not heads:
        raise SettingError("methods", "none can run on these texts (see the lines above)")
    return heads


def load_model(config: EvalConfig, options: RunOptions):
    """The encoder of ``config.model``, on this rank's device under torchrun."""
    from wca.encoders import load_encoder
    from wca.features.distributed import rank_device

    encoder = load_encoder(
        config.model,
        device=rank_device(options.device),
        precision=options.precision,
        batch_size=options.batch_size,
    )
    encoder.progress = options.progress
    return encoder


def extract(config: EvalConfig, options: RunOptions, encoder, dataset, on_bad_image=None, *,
            split_shards: bool = True, heads=None):  # fmt: skip
    """The features of every image (cached per ``options``); under torchrun with
    ``split_shards``, each rank encodes its shards and rank 0 alone gets the features (the
    other ranks: None). Under the adaptive budget, ``heads`` give the stopping head."""
    from wca.features import extract_features
    from wca.features.distributed import join
    from wca.features.judge import stopping_head

    budget = config.budget.stopping(config.n_crops)
    stopping = None
    if budget is not None:
        stopping = stopping_head(heads or {}, budget, float(encoder.logit_scale))

    ranks = join(encoder.device, options.dist_timeout) if split_shards else None
    if ranks is not None and ranks.rank == 0:
        shards = -(-len(dataset) // options.shard_size)
        log.info(
            f"torchrun: {ranks.world_size} ranks share the feature pass: rank r encodes the "
            f"cache shards i with i % {ranks.world_size} == r ({shards} shards of up to "
            f"{options.shard_size} images); rank 0 then scores and writes the result"
        )
    return extract_features(
        encoder,
        dataset,
        config.crops,
        options,
        fidelity=config.fidelity,
        fp16_cache=config.fp16_cache,
        on_bad_image=on_bad_image,
        ranks=ranks,
        stopping=stopping,
    )


def aux_features(
    config: EvalConfig,
    options: RunOptions,
    heads: dict | None,
    dataset,
    features,
    on_bad_image=None,
    *,
    split_shards: bool = True,
) -> AuxFeatures | None:
    """The views of ``features`` (the first encoder's; None on torchrun ranks other than 0)
    by ``config.aux_model``, when one of ``heads`` reads them (``heads`` None: always); None
    without an aux_model, when no head reads it, and on the ranks other than 0, which encode
    their share. The two passes must have cut the same views."""
    if config.aux_model is None:
        return None
    readers = [name for name, head in (heads or {}).items() if head.reads_aux]
    if heads is not None and not readers:
        log.info(f"aux_model {config.aux_model}: no method of this run reads it; not encoded")
        return None
    from wca.encoders.vision import load_image_encoder
    from wca.features.distributed import rank_device

    encoder = load_image_encoder(
        config.aux_model,
        device=rank_device(options.device),
        precision=options.precision,
        batch_size=options.batch_size,
    )
    fixed = config.model_copy(update={"crop_budget": "fixed"})  # every crop of an adaptive pass
    aux = extract(fixed, options, encoder, dataset, on_bad_image, split_shards=split_shards)
    if aux is None or features is None:
        return None
    if not (_same_views(aux, features) and torch.equal(aux.labels, features.labels)):
        raise RuntimeError(
            f"aux_model {config.aux_model}: its features ({aux.source or 'in memory'}) are not "
            f"of the same views as the model's ({features.source or 'in memory'})"
        )
    where = "in memory" if aux.source is None else f"cached in {aux.source}"
    log.info(f"aux features: {len(aux)} images by {encoder.name}, {where}")
    return AuxFeatures(aux, encoder.identity)


def _same_views(aux, features) -> bool:
    """Whether the second encoder read the views of ``features``: the same boxes, each image's
    own prefix under an adaptive budget."""
    if features.counts is None:
        return torch.equal(aux.boxes, features.boxes)
    read = torch.arange(features.boxes.shape[1]) < features.counts[:, None]
    return torch.equal(aux.boxes[:, : read.shape[1]][read], features.boxes[read])
