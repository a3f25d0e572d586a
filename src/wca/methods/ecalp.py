"""ECALP (Li et al., "Efficient and Context-Aware Label Propagation for Zero-/Few-Shot
Training-Free Adaptation of Vision-Language Model", ICLR 2025): label propagation over a graph
of the class vectors and the images seen so far, as the authors' zero-shot loop (Yushu-Li/ECALP
``main.py``, ``utils/iterative_label_propagation.py``), which already runs on extracted features.

Image i arrives and the graph holds the C class vectors, images 0..i, and image i again as the
query node (their loop passes ``cat(features[:i + 1], features[i])``; the query copy of image i
- 1 leaves). With w = normalise(var over the classes of the class vectors) (context-aware
re-weighting) and s(m, n) = normalise(w x_m) . normalise(x_n):

- edges: each image m to its k_image nodes of highest s(m, .) and to its k_text classes of
  highest x_m . t_c, weighted by the similarity ** gamma (a negative similarity in a short
  list weighs as a positive one under their even gamma); kept incrementally as theirs (dynamic
  kNN): a node's list keeps a few spare neighbours, the new image and its query copy enter
  each list through s(m, new), the old query copy's entries drop to -1;
- the symmetric normalised graph S = D^-1/2 (W + W^T) D^-1/2; the image rows propagate
  Y <- alpha (S_text + S_images Y) + (1 - alpha) Y0, ``iterations`` times from Y0: each image's
  previous estimate kept as its top class's value / 5 (zeros for the two new nodes);
- output: 10000 times the query node's Y (their ``softmax(pred * 10000)``: logits).

ECALP's hyper-parameters are the same for every dataset (the paper's point); the defaults are
their ``main.py``'s. Their feature files hold several views for some tasks (averaged, not
renormalised); here an image is one view: the base's image side (the full view for CLIP).
``ecalp+wca`` is ECALP on WCA's weighted crop mean and text side (ours). Each image costs a
pass over the whole graph (three propagations over every image so far), as theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from wca.deferred import F, torch
from wca.methods.base import OnlineHead
from wca.methods.online import Base, blocks, build_base, with_options
from wca.methods.ragged import check_counts
from wca.methods.registry import EncodeTexts, register_method
from wca.methods.sources import TextSources

if TYPE_CHECKING:
    from torch import Tensor

BLOCK = 256  # images whose base side is computed at once
SHARPNESS = 10000.0  # their pred * 10000 before the softmax
Neighbours = Annotated[int, Field(ge=1, le=1000)]


@dataclass
class ECALPHead(OnlineHead):
    base: Base  # its image side and class vectors
    k_text: int = 3
    k_image: int = 8
    gamma: int = 10
    alpha: float = 1.0
    iterations: int = 3

    @property
    def uses_crops(self) -> bool:
        return self.base.uses_crops

    def stream(self, length: int | None = None) -> ECALPStream:
        return ECALPStream(self)


class ECALPStream:
    """One stream of ECALP: per image node (the query copy last) its re-weighted unit feature
    normalise(w x), its edges (and their spare list) and its previous estimate."""

    def __init__(self, head: ECALPHead) -> None:
        self.head = head
        self.queries: Tensor | None = None

    def logits(
        self, image_emb: Tensor, crop_emb: Tensor | None = None, *, counts: Tensor | None = None
    ) -> Tensor:
        counts = check_counts(counts, crop_emb)
        out = []
        for image, crops, part in blocks(BLOCK, image_emb, crop_emb, counts):
            features = self.head.base.views(image, crops, False, counts=part)[0]
            out.extend(self._step(x) for x in features[:, 0])
        return torch.stack(out) if out else image_emb.new_zeros(0, len(self.head.base.text))

    def _step(self, x: Tensor) -> Tensor:
        head = self.head
        if self.queries is None:
            self.text = head.base.text.to(x)
            self.weights = F.normalize(self.text.var(0), dim=0)
        query, key = F.normalize(x * self.weights, dim=0), F.normalize(x, dim=0)
        text_sim, text_knn = (x @ self.text.T).topk(min(head.k_text, len(self.text)))
        pair = (text_sim.expand(2, -1), text_knn.expand(2, -1))
        if self.queries is None:  # the first image, twice
            self.queries = query.expand(2, -1)
            similarity = self.queries @ key.expand(2, -1).T
            self.spare_sim, self.spare_knn = similarity.topk(min(head.k_image, 2), dim=1)
            self.edge_sim, self.edge_knn = self.spare_sim, self.spare_knn
            self.text_sim, self.text_knn = pair
            self.labels = x.new_zeros(2, len(self.text))
        else:
            self._connect(query, key)
            self.text_sim = torch.cat([self.text_sim[:-1], pair[0]])
            self.text_knn = torch.cat([self.text_knn[:-1], pair[1]])
            self.labels = torch.cat([self.labels[:-1], x.new_zeros(2, len(self.text))])
        return SHARPNESS * self._propagate()

    def _connect(self, query: Tensor, key: Tensor) -> None:
        """Their ``dynamic_graph_expansion`` after the first image: the new image and its
        query copy join every list through s(m, new), the old query copy's entries drop."""
        self.queries = torch.cat([self.queries[:-1], query.expand(2, -1)])
        nodes = len(self.queries)
        old = nodes - 2  # the images before this one
        k = min(self.head.k_image, nodes)
        width = k + 1 if old == k + 1 else k + 2 if old > k else k
        column = self.queries @ key  # s(m, new) for every node m
        spare_sim, spare_knn = self.spare_sim[:-1].clone(), self.spare_knn[:-1]
        spare_sim[spare_knn == old] = -1.0  # the old query copy had this index
        new_index = torch.tensor([old, old + 1], device=key.device).expand(old, 2)
        spare_sim = torch.cat([spare_sim, column[:old, None].expand(-1, 2)], dim=1)
        spare_sim, order = spare_sim.topk(width, dim=1)
        spare_knn = torch.cat([spare_knn, new_index], dim=1).gather(1, order)
        rows = column.expand(2, -1)
        new_sim, new_knn = rows.topk(k, dim=1)
        new_spare = rows.topk(width, dim=1) if old > k else (new_sim, new_knn)
        self.edge_sim = torch.cat([spare_sim[:, :k], new_sim])
        self.edge_knn = torch.cat([spare_knn[:, :k], new_knn])
        self.spare_sim = torch.cat([spare_sim, new_spare[0]])
        self.spare_knn = torch.cat([spare_knn, new_spare[1]])

    def _propagate(self) -> Tensor:
        """The query node's estimate after ``iterations`` propagations; every image's top
        class's value / 5 is kept as its estimate for the next image."""
        head, (nodes, classes) = self.head, self.labels.shape
        image_weights = self.edge_sim.pow(float(head.gamma))
        text_weights = self.text_sim.pow(float(head.gamma))
        rows = torch.arange(nodes, device=self.labels.device)[:, None].expand_as(self.edge_knn)
        rows, cols, weights = rows.flatten(), self.edge_knn.flatten(), image_weights.flatten()
        degree = image_weights.sum(1) + text_weights.sum(1)
        degree = degree.index_add(0, cols, weights)  # the edges into each image
        text_degree = text_weights.new_zeros(classes)
        text_degree = text_degree.index_add(0, self.text_knn.flatten(), text_weights.flatten())
        scale, text_scale = 1 / (degree.sqrt() + 1e-6), 1 / (text_degree.sqrt() + 1e-6)
        values = weights * scale[rows] * scale[cols]
        images = torch.sparse_coo_tensor(
            torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])]),
            torch.cat([values, values]),
            (nodes, nodes),
            check_invariants=False,
        ).coalesce()
        to_text = self.labels.new_zeros(nodes, classes).scatter_add_(1, self.text_knn, text_weights)
        to_text = to_text * scale[:, None] * text_scale
        estimate = self.labels
        for _ in range(head.iterations):
            estimate = head.alpha * (to_text + images @ estimate) + (1 - head.alpha) * self.labels
        top, index = estimate.topk(1, dim=1)
        self.labels = torch.zeros_like(estimate).scatter_(1, index, top / 5)
        return estimate[-1]


@register_method(
    "ecalp",
    summary="ECALP (ICLR 2025): label propagation over the class vectors and images seen",
)
def _ecalp(
    encode_texts: EncodeTexts,
    sources: TextSources,
    base: str = "clip",
    k_text: Neighbours = 3,
    k_image: Neighbours = 8,
    gamma: Annotated[int, Field(ge=1, le=100)] = 10,
    alpha: Annotated[float, Field(ge=0, le=1)] = 1.0,
    iterations: Annotated[int, Field(ge=1, le=100)] = 3,
) -> ECALPHead:
    """``k_text``/``k_image`` neighbours per image, edge weights similarity ** ``gamma`` (an
    integer: a kNN list can hold negative similarities), ``iterations`` propagations mixed
    with the previous estimates by ``alpha``; ``base`` the image side and class vectors."""
    return ECALPHead(
        build_base("ecalp", base, encode_texts, sources, 100.0, with_text=True),
        k_text,
        k_image,
        gamma,
        alpha,
        iterations,
    )


register_method(
    "ecalp+wca",
    summary="ECALP on WCA's scores and weighted crop mean (ours)",
)(with_options(_ecalp, base="wca"))
