"""DMN-ZS (Zhang et al., "Dual Memory Networks: A Versatile Adaptation Approach for
Vision-Language Models", CVPR 2024), training-free zero-shot: the dynamic memory of the
authors' ``DualMem`` (YBZh/DMN ``dmn_main.py``, ``direct_inference`` with ``n_shot=0``: its
learnable biases are zero), batched over blocks of images.

Per image, with p_v = softmax(logit_scale * cos(view v, class vectors)) for its views:

- pseudo-label: the argmax of the mean of p_v over the int(0.1 V) (at least 1) views of lowest
  entropy -sum p log(p + 1e-6) (V the image's own views, 1 + counts[b] with ragged crops); its
  entropy -sum m log(m + 1e-8) of that mean m;
- memory: per class at most ``memory_size`` full-view features (the base's image side); a full
  class takes the image only if its entropy is below the highest stored, which it replaces;
  the image enters before it is scored;
- read-out (``similarity_weighted``): over the stored features of class c and its class vector
  k (all normalised), a_c = normalise(sum_k exp(-beta (1 - q.k)) k); memory probabilities
  softmax_c(logit_scale a_c . q);
- output: p_full + weight * memory probabilities (probabilities, as theirs).

The authors pick ``weight`` per dataset from a grid, on the test labels; their logged choices
(``camera_ready_dmn_tf_*.txt``) are the per-dataset defaults here, ImageNet's (1.0, also
TTA-VLM's everywhere) for any other dataset. ||a_c|| comes from the Gram matrix of each class's
memory, kept up to date, so each image costs one pass over the memory (the similarities).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from wca.deferred import F, torch
from wca.methods.base import OnlineHead
from wca.methods.online import (
    Base,
    Fraction,
    SlotCache,
    Weight,
    block_size,
    blocks,
    build_base,
    for_dataset,
    most_confident,
    take,
    tuned_for,
)
from wca.methods.ragged import by_length, check_counts
from wca.methods.registry import EncodeTexts, register_method
from wca.methods.sources import TextSources
from wca.methods.zero import LogitScale

if TYPE_CHECKING:
    from torch import Tensor

# the searched weight of the dynamic memory in YBZh/DMN's camera-ready zero-shot logs
WEIGHTS = {
    "imagenet": 1.0,
    "imagenet-a": 3.0,
    "imagenetv2": 1.0,
    "imagenet-r": 0.3,
    "imagenet-sketch": 1.0,
    "caltech101": 0.3,
    "dtd": 10.0,
    "eurosat": 0.3,
    "fgvc": 1.0,
    "food101": 0.3,
    "oxford-flowers": 10.0,
    "oxford-pets": 1.0,
    "stanford-cars": 0.3,
    "sun397": 3.0,
    "ucf101": 0.3,
}


def confident_mean(probabilities: Tensor, fraction: float) -> Tensor:
    """The mean ``[B, C]`` of each image's views' probabilities ``[B, V, C]`` over its
    int(fraction V) (at least 1) of lowest entropy -sum p log(p + 1e-6)."""
    view_entropy = -(probabilities + 1e-6).log_().mul_(probabilities).sum(-1)
    return take(probabilities, most_confident(view_entropy, fraction)).mean(1)


@dataclass
class DMNHead(OnlineHead):
    base: Base  # with its class vectors
    memory_size: int = 50
    beta: float = 5.5
    weight: float = 1.0
    fraction: float = 0.1
    logit_scale: float = 100.0
    uses_crops = True  # the views vote the pseudo-label

    def probabilities(self, logits: Tensor, logit_scale: float) -> Tensor:
        """The outputs are p_full + weight * memory probabilities: normalised, a mixture."""
        return logits / logits.sum(-1, keepdim=True)

    def stream(self, length: int | None = None) -> DMNStream:
        return DMNStream(self)


class DMNStream:
    """One stream of DMN-ZS: its memory (features ``[C, L + 1, D]``, the class vector last,
    and their Gram matrices), carried from call to call."""

    def __init__(self, head: DMNHead) -> None:
        self.head = head
        text = F.normalize(head.base.text, dim=-1)
        classes, dim = text.shape
        self.keys = text.new_zeros(classes, head.memory_size + 1, dim)
        self.keys[:, -1] = text
        self.gram = self.keys @ self.keys.transpose(1, 2)
        self.memory = SlotCache(classes, head.memory_size)

    def logits(
        self, image_emb: Tensor, crop_emb: Tensor | None = None, *, counts: Tensor | None = None
    ) -> Tensor:
        counts = check_counts(counts, crop_emb)
        classes, slots = self.keys.shape[:2]
        views = 1 + (0 if crop_emb is None else crop_emb.shape[1])
        step, base = block_size(classes * (slots + views)), self.head.base
        out = []
        for image, crops, part in blocks(step, image_emb, crop_emb, counts):
            features, logits = base.views(image, crops, True, counts=part)
            out.append(self._block(features, logits, base.view_counts(part, True)))
        return torch.cat(out) if out else image_emb.new_zeros(0, classes)

    def _block(self, features: Tensor, logits: Tensor, lengths: Tensor | None) -> Tensor:
        head, size = self.head, len(features)
        self.keys = self.keys.to(features.device, features.dtype)
        self.gram = self.gram.to(features.device, features.dtype)
        probabilities = logits.softmax(-1)
        mean = by_length(partial(confident_mean, fraction=head.fraction), lengths, probabilities)
        labels = mean.argmax(-1).tolist()
        entropies = (-(mean * torch.log(mean + 1e-8)).sum(-1)).tolist()
        block = self.memory.block(size)
        for image in range(size):
            block.add(image, labels[image], entropies[image])
        query = features[:, 0]
        unit = F.normalize(query, dim=-1)
        old, new = block.alive(unit.device)
        memory = self._read(unit, old, new, block.labels(unit.device))
        memory = head.logit_scale * query.norm(dim=-1, keepdim=True) * memory
        self._store(unit, *block.commit(None))
        return probabilities[:, 0] + head.weight * memory.softmax(-1)

    def _read(self, unit: Tensor, old: Tensor, new: Tensor, new_labels: Tensor) -> Tensor:
        """a_c . q / ||a_c|| ``[b, C]``: the memory at the block's start (``old``, plus the
        class vectors) and the block's own entries (``new``), each where it is in memory.
        Laid out ``[C, L + 1, b]`` so the Gram products need no copies."""
        beta = self.head.beta
        classes, slots, dim = self.keys.shape
        similarity = (self.keys.view(-1, dim) @ unit.T).view(classes, slots, -1)
        weights = similarity.mul(beta).sub_(beta).exp_()  # exp(-beta (1 - q.k))
        gone = (~old).T.reshape(classes, slots - 1, -1)
        weights[:, :-1].masked_fill_(gone, 0.0)  # the class vector (last) is always there
        # ||sum_k w_k k||^2 = w^T G w over the old memory, + the block entries' cross terms
        square = torch.bmm(self.gram, weights).mul_(weights).sum(1).T  # [b, C]
        cross = torch.einsum("jd,jld->jl", unit, self.keys[new_labels])  # k_j . memory of c_j
        cross = (weights[new_labels] * cross[..., None]).sum(1).T  # [b, b]
        dot = similarity.mul_(weights).sum(1).T
        new_similarity = unit @ unit.T
        new_weights = torch.exp(-beta * (1 - new_similarity)) * new  # [b, b]
        dot = dot.index_add(1, new_labels, new_weights * new_similarity)
        same = (new_labels[:, None] == new_labels[None]).to(unit.dtype) * new_similarity
        pairs = new_weights * (new_weights @ same)
        square = square.index_add(1, new_labels, 2 * cross * new_weights + pairs)
        return dot / square.sqrt()

    def _store(self, unit: Tensor, slots: Tensor, rows: Tensor) -> None:
        """Write the block's surviving features into the memory and their Gram rows."""
        if not len(slots):
            return
        capacity = self.head.memory_size
        slots, rows = slots.to(unit.device), rows.to(unit.device)
        labels, places = slots // capacity, slots % capacity
        self.keys[labels, places] = unit[rows]
        rows_gram = torch.einsum("pd,pmd->pm", self.keys[labels, places], self.keys[labels])
        self.gram[labels, places] = rows_gram
        self.gram[labels, :, places] = rows_gram


@register_method(
    "dmn",
    per_dataset=tuned_for(WEIGHTS),
    summary="DMN-ZS (CVPR 2024): a dynamic memory of the test images' features",
)
def _dmn(
    encode_texts: EncodeTexts,
    sources: TextSources,
    dataset: str | None = None,
    base: str = "clip",
    memory_size: Annotated[int, Field(ge=1, le=1000)] = 50,
    beta: Weight = 5.5,
    weight: Weight | None = None,
    fraction: Fraction = 0.1,
    logit_scale: LogitScale = 100.0,
) -> DMNHead:
    """``dataset`` picks the authors' weight of the memory when ``weight`` is unset;
    ``fraction`` of the views vote the pseudo-label."""
    return DMNHead(
        build_base("dmn", base, encode_texts, sources, logit_scale, with_text=True),
        memory_size,
        beta,
        for_dataset(WEIGHTS, dataset or sources.dataset) if weight is None else weight,
        fraction,
        logit_scale,
    )
