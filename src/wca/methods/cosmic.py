"""COSMIC (Huang et al., "COSMIC: Clique-Oriented Semantic Multi-space Integration for Robust
CLIP Test-Time Adaptation", CVPR 2025, arXiv 2503.23388): a CLIP memory and a memory of a
second image encoder (DINOv2), each queried through a graph of hyper-classes, as the authors'
``direct_inference`` (hf618/COSMIC ``cosmic_main.py``, ``utils/DualMems.py``,
``utils/utils_cosmic.py``) runs in their scripts (``scripts/cosmic_ood.sh``, ``cosmic_cd.sh``:
``--clip_is_DMN --center_type_clip attn --is_SOG``, degree control), one image at a time.

Per image i of the stream, with p_v = softmax(logit_scale cos(view v, class vectors)):

- CLIP memory (DMN's, with ``clip_shots`` per class): the pseudo-label is the argmax of the
  mean of p_v over the int(0.1 V) (at least 1) views of lowest entropy (V the image's own, 1 +
  counts[b] with ragged crops), its loss that mean's entropy; the key stored is the mean
  feature of those views; a full class takes the image only when its loss is below the
  highest stored, which it replaces. The image enters first.
- The shared-semantic graph: the class vectors and the memory's per-class read-out for this
  image (a_c = normalise(sum_k exp(-5.5 (1 - q.k)) k) over class c's entries and its class
  vector) are 2C nodes; its hyper-classes (maximal cliques, :mod:`wca.methods.cosmic_graph`)
  at average degree 0.8 ``degree``; the query's scores on the nodes of its nearest
  int(0.2 K) cliques, each class the mean of its text and memory nodes.
- With ``aux_emb`` (the full view by the second encoder, ``aux_model`` in an evaluation:
  :mod:`wca.encoders.vision`): a TDA-style cache of those
  embeddings (``dino_shots`` per class, lowest loss kept) labelled by the argmax of
  p_full + softmax(logit_scale a.q), loss the softmax entropy of that sum; the fine-grained
  graph over its per-class means (zero for classes without entries) at average degree
  ``degree``, queried likewise.
- Graphs are rebuilt when their memory took the image while i <= C x shots, then every
  ``rebuild_every`` images; the cliques and anchors of the last build serve until the next.
- Output: p_full + clip_weight x CLIP clique scores (+ dino_weight x DINOv2 clique scores).

Without ``aux_emb`` this is COSMIC with CLIP alone (their Table 4's CLIP-only row). This
follows the code: the clique scores are summed with the zero-shot probabilities under weights
the authors pick per dataset on the test labels (``search_best_weights`` over {0, 0.001, ...,
1000}) and publish neither as values nor logs, so both are 1 here; the two memories' own
predictions (their "Bi-cache" rows) do not enter the COSMIC output, only the DINOv2 cache's
pseudo-label; their configs' ``lambda1/lambda2`` thresholds are unused by the degree control
their scripts run. Their text side is TIP-Adapter's 7 templates and CuPL's sentences averaged;
``base`` (``clip`` by default) is ours to choose.
The cache's alpha and beta are their ``configs_l`` values, which repeat TDA's; the shots
16 on the ImageNet family, 8 elsewhere (their two scripts), ImageNet's for other datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from wca.deferred import F, torch
from wca.methods.base import OnlineHead
from wca.methods.cosmic_graph import clique_scores, hyper_classes
from wca.methods.online import (
    Base,
    Fraction,
    Shots,
    SlotCache,
    Weight,
    block_size,
    blocks,
    build_base,
    entropy,
    for_dataset,
    most_confident,
    tuned_for,
    with_options,
)
from wca.methods.ragged import check_counts, own
from wca.methods.registry import EncodeTexts, register_method
from wca.methods.sources import TextSources
from wca.methods.tda import TDA_CONFIGS
from wca.methods.zero import LogitScale

if TYPE_CHECKING:
    from torch import Tensor

SHOTS = {  # --CLIP_Cache_shot and --DINO_Cache_shot of their two scripts
    **dict.fromkeys(("imagenet", "imagenet-a", "imagenetv2", "imagenet-r", "imagenet-sketch"), 16),
    **dict.fromkeys(("caltech101", "dtd", "eurosat", "fgvc", "food101", "oxford-flowers"), 8),
    **dict.fromkeys(("oxford-pets", "stanford-cars", "sun397", "ucf101"), 8),
}
CLIP_DEGREE = 0.8  # the CLIP graph's target degree, as a fraction of the DINOv2 graph's


@dataclass
class COSMICHead(OnlineHead):
    base: Base  # with its class vectors
    clip_shots: int = 16
    dino_shots: int = 16
    alpha: float = 2.0
    beta: float = 5.0
    memory_beta: float = 5.5
    degree: float = 5.0
    ratio: float = 0.2
    rebuild_every: int = 100
    fraction: float = 0.1
    clip_weight: float = 1.0
    dino_weight: float = 1.0
    logit_scale: float = 100.0
    uses_crops = True  # the views vote the pseudo-label
    reads_aux = True  # the second encoder's full views: the fine-grained graph

    def probabilities(self, logits: Tensor, logit_scale: float) -> Tensor:
        """The outputs are non-negative sums of probabilities and scores: normalised."""
        return logits / logits.sum(-1, keepdim=True)

    def stream(self, length: int | None = None) -> COSMICStream:
        return COSMICStream(self)

    def logits(
        self,
        image_emb: Tensor,
        crop_emb: Tensor | None = None,
        draw: int = 0,
        *,
        counts: Tensor | None = None,
        aux_emb: Tensor | None = None,
    ) -> Tensor:
        stream = self.stream(len(image_emb))
        return stream.logits(image_emb, crop_emb, counts=counts, aux_emb=aux_emb)


class COSMICStream:
    """One stream of COSMIC: its two memories and their graphs, carried from call to call."""

    def __init__(self, head: COSMICHead) -> None:
        self.head = head
        self.text = head.base.text  # unit vectors: the base's class vectors
        classes, dim = self.text.shape
        self.memory = SlotCache(classes, head.clip_shots)
        # the memory as unit vectors [C, shots + 1, D]: its entries (0 where none), the class
        # vector last; a row is normalised alone as in their whole-memory normalisation
        empty = self.text.new_zeros(classes, head.clip_shots, dim)
        self.unit = torch.cat([empty, _unit(self.text)[:, None]], dim=1)
        self.dino = SlotCache(classes, head.dino_shots)
        self.dino_keys: Tensor | None = None  # [C x dino_shots, D2]
        self.prototypes: Tensor | None = None  # [C, D2] the mean of each class's entries
        self.clip_graph: tuple[list[list[int]], Tensor] | None = None
        self.dino_graph: tuple[list[list[int]], Tensor] | None = None
        self.seen = 0
        self.dual: bool | None = None  # whether the stream has aux embeddings

    def logits(
        self,
        image_emb: Tensor,
        crop_emb: Tensor | None = None,
        *,
        counts: Tensor | None = None,
        aux_emb: Tensor | None = None,
    ) -> Tensor:
        """Scores ``[B, C]`` of the next B images (image b with its first ``counts[b]``
        crops); ``aux_emb [B, D2]``: the same full views by a second image encoder (all of a
        stream's calls give it, or none)."""
        counts = check_counts(counts, crop_emb)
        dual = aux_emb is not None
        if self.dual is not None and dual != self.dual:
            raise ValueError("cosmic: give aux_emb for every image of a stream, or for none")
        if dual and len(aux_emb) != len(image_emb):
            raise ValueError(f"cosmic: aux_emb has {len(aux_emb)} rows for {len(image_emb)} images")
        self.dual = dual
        classes = len(self.text)
        views = 1 + (0 if crop_emb is None else crop_emb.shape[1])
        step, base = block_size(views * classes), self.head.base
        out = []
        for image, crops, part, aux in blocks(step, image_emb, crop_emb, counts, aux_emb):
            features, logits = base.views(image, crops, True, counts=part)
            lengths = base.view_counts(part, True)
            aux = F.normalize(aux.to(features.dtype), dim=-1) if dual else [None] * len(features)
            for row in range(len(features)):
                own_views = own(features, lengths, row), own(logits, lengths, row)
                out.append(self._image(*own_views, aux[row]))
        return torch.stack(out) if out else image_emb.new_zeros(0, classes)

    def _image(self, features: Tensor, logits: Tensor, aux: Tensor | None) -> Tensor:
        head, index, classes = self.head, self.seen, len(self.text)
        self.seen += 1
        self.text = self.text.to(features.device, features.dtype)
        self.unit = self.unit.to(features.device, features.dtype)
        probabilities = logits.softmax(-1)
        view_entropy = -(probabilities * torch.log(probabilities + 1e-6)).sum(-1)
        chosen = most_confident(view_entropy[None], head.fraction)[0]
        mean = probabilities[chosen].mean(0)
        loss = float(-(mean * torch.log(mean + 1e-8)).sum())
        slot = self.memory.insert(int(mean.argmax()), loss)
        if slot is not None:
            label, entry = divmod(slot, head.clip_shots)
            self.unit[label, entry] = _unit(features[chosen].mean(0))
        query, first = features[0], probabilities[0]
        adaptive = self._read(query)
        space = torch.cat([self.text, adaptive])
        if self.clip_graph is None or self._rebuild(slot is not None, index, head.clip_shots):
            self.clip_graph = hyper_classes(space, CLIP_DEGREE * head.degree)
        scores = self._scores(query, self.clip_graph, space)
        out = first + head.clip_weight * (scores[:classes] + scores[classes:]) / 2
        if aux is None:
            return out
        both = first + (head.logit_scale * adaptive @ query).softmax(-1)
        label = int(both.argmax())
        slot = self.dino.insert(label, float(entropy(both)))
        if self.dino_keys is None or self.prototypes is None:
            self.dino_keys = aux.new_zeros(classes * head.dino_shots, len(aux))
            self.prototypes = aux.new_zeros(classes, len(aux))
        if slot is not None:  # the class's mean, over its entries in their list's order
            self.dino_keys[slot] = aux
            slots = [label * head.dino_shots + entry for _, entry in self.dino.lists[label]]
            self.prototypes[label] = self.dino_keys[slots].mean(0)
        if self.dino_graph is None or self._rebuild(slot is not None, index, head.dino_shots):
            self.dino_graph = hyper_classes(self.prototypes, head.degree)
        return out + head.dino_weight * self._scores(aux, self.dino_graph, self.prototypes)

    def _read(self, query: Tensor) -> Tensor:
        """DMN's attention read-out ``[C, D]`` for ``query``: per class, its stored keys and its
        class vector (slots whose entries sum to 0, the empty ones, left out), each weighted
        by exp(-memory_beta (1 - cos)), summed and normalised. In their operations' order,
        normalised twice as theirs, so the graph's near-ties (an empty class's read-out is its
        class vector) fall as theirs."""
        similarity = (query / query.norm() * self.unit).sum(-1)
        weights = torch.exp(-self.head.memory_beta * (-similarity + 1))
        adaptive = (self.unit * weights[..., None]).sum(1)
        adaptive = adaptive / adaptive.norm(dim=-1, keepdim=True)
        return adaptive / adaptive.norm(dim=-1, keepdim=True)

    def _rebuild(self, updated: bool, index: int, shots: int) -> bool:
        """Their schedule: while i <= C x shots, whenever the memory took the image; after,
        every ``rebuild_every`` images."""
        if index <= len(self.text) * shots:
            return updated
        return index % self.head.rebuild_every == 0

    def _scores(self, query: Tensor, graph, space: Tensor) -> Tensor:
        head = self.head
        return clique_scores(query, *graph, space, head.ratio, head.alpha, head.beta)


def _unit(vectors: Tensor) -> Tensor:
    """``vectors / ||vectors||`` along the last dimension, 0 where a vector's entries sum to 0
    (their test for an empty memory slot)."""
    unit = vectors / vectors.norm(dim=-1, keepdim=True)
    return unit.masked_fill((vectors.sum(-1) == 0)[..., None], 0.0)


@register_method(
    "cosmic",
    per_dataset=tuned_for(TDA_CONFIGS),
    summary="COSMIC (CVPR 2025): CLIP and DINOv2 memories queried through class graphs",
)
def _cosmic(
    encode_texts: EncodeTexts,
    sources: TextSources,
    dataset: str | None = None,
    base: str = "clip",
    clip_shots: Shots | None = None,
    dino_shots: Shots | None = None,
    alpha: Weight | None = None,
    beta: Weight | None = None,
    memory_beta: Weight = 5.5,
    degree: Annotated[float, Field(gt=0, le=1e4)] = 5.0,
    ratio: Fraction = 0.2,
    rebuild_every: Annotated[int, Field(ge=1)] = 100,
    fraction: Fraction = 0.1,
    clip_weight: Weight = 1.0,
    dino_weight: Weight = 1.0,
    logit_scale: LogitScale = 100.0,
) -> COSMICHead:
    """``dataset`` picks the authors' shots, alpha and beta for options left unset; ``base``
    the per-image method whose scores, image side and class vectors COSMIC starts from."""
    dataset = dataset or sources.dataset
    config, shots = for_dataset(TDA_CONFIGS, dataset), for_dataset(SHOTS, dataset)
    return COSMICHead(
        build_base("cosmic", base, encode_texts, sources, logit_scale, with_text=True),
        shots if clip_shots is None else clip_shots,
        shots if dino_shots is None else dino_shots,
        config.alpha if alpha is None else alpha,
        config.beta if beta is None else beta,
        memory_beta,
        degree,
        ratio,
        rebuild_every,
        fraction,
        clip_weight,
        dino_weight,
        logit_scale,
    )


register_method(
    "cosmic+wca",
    per_dataset=tuned_for(TDA_CONFIGS),
    summary="COSMIC on WCA's scores and weighted crop mean (ours)",
)(with_options(_cosmic, base="wca"))
