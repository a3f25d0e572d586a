"""AWT (Zhu et al., "AWT: Transferring Vision-Language Models via Augmentation, Weighting, and
Transportation", NeurIPS 2024), zero-shot: an optimal transport between the views of an image
and the prompts of a class, as the authors' ``AWT_evaluation``.

Prompts of class c: the label prompt (the authors' template of the dataset, e.g. "a photo of
the {c}." for CUB; "a photo of a {c}." for datasets they did not use) and the label prompt
followed by each of its first ``n_descriptions`` sentences. With o[v, p, c] = logit_scale *
cos(view v, prompt p of c):

- view weights: softmax_v(-H(softmax_c(mean_p o[v, p, c])) / 0.5);
- prompt weights of class c: softmax_p(-H_pc / 0.5), H_pc the entropy of the full view's
  prompt-mean distribution with class c's entry swapped for prompt p's logit;
- per class, Sinkhorn (epsilon 0.1, cost 1 - cos, at most 100 iterations, stopping once the
  mean change of the row scaling over all classes is below 0.01) between view and prompt
  weights;
- score of class c: sum_{v, p} T_c[v, p] o[v, p, c].

Speed (the [views x prompts] cosine product is the floor): it is made for a sub-batch of
images at once; the view weights come from the views against each class's mean prompt (the
mean of o over the prompts, a product 51x smaller); then each image's kernel ``[C, V, P]`` is
made once and stays in the CPU's cache through its Sinkhorn iterations, whose products are
row vectors times each class's kernel.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from wca.defaults import LABEL_TEMPLATE
from wca.deferred import torch
from wca.descriptions.io import match_descriptions
from wca.methods.base import Head
from wca.methods.prompts import encode_prompts
from wca.methods.ragged import by_count
from wca.methods.registry import EncodeTexts, register_method, require
from wca.methods.sources import TextSources
from wca.methods.zero import LogitScale, all_views

if TYPE_CHECKING:
    from torch import Tensor

EPSILON = 0.1
SINKHORN_ITERATIONS = 100
SINKHORN_TOLERANCE = 1e-2
BLOCK = 2**26  # cosines per sub-batch of images [b, V, C, P]: bounds the memory


def entropy(logits: Tensor, dim: int = -1) -> Tensor:
    log_p = torch.log_softmax(logits, dim=dim)
    return -(log_p.exp() * log_p).sum(dim)


def swapped_entropy(anchor: Tensor, swaps: Tensor) -> Tensor:
    """``H[..., c, p]``: entropy of softmax(anchor ``[..., C]``) with entry c replaced by
    ``swaps[..., c, p]``, from leave-one-out sums over the anchor (no ``[C, C]`` matrix).
    The sums subtract, so they are taken in float64; the ``[..., C, P]`` part runs in the
    swaps' dtype."""
    a = anchor.double()
    top = a.max(-1, keepdim=True).values
    t = a - top
    e = t.exp()
    loo_z = e.sum(-1, keepdim=True) - e  # sum over k != c of exp(t_k)
    loo_n = (e * t).sum(-1, keepdim=True) - e * t
    argmax = t.argmax(-1, keepdim=True)  # the only entry that can dominate: summed directly
    others = e.scatter(-1, argmax, 0.0)
    loo_z = loo_z.scatter(-1, argmax, others.sum(-1, keepdim=True)).to(swaps.dtype)[..., None]
    loo_n = loo_n.scatter(-1, argmax, (others * t).sum(-1, keepdim=True)).to(swaps.dtype)[..., None]
    xt = swaps - top.to(swaps.dtype).unsqueeze(-1)
    shift = xt.clamp_min(0)  # shift again where the swapped-in logit is the largest
    rest = torch.exp(-shift)
    xt -= shift
    swapped = xt.exp()
    z = loo_z * rest + swapped
    n = rest * (loo_n - shift * loo_z) + swapped * xt
    return z.log() - n / z


def sinkhorn_scalings(
    kernel: Tensor,
    u: Tensor,
    v: Tensor,
    iterations: int = SINKHORN_ITERATIONS,
    tolerance: float = SINKHORN_TOLERANCE,
) -> tuple[Tensor, Tensor]:
    """Row and column scalings ``r [C, V]``, ``c [C, P]`` of one image's kernels
    ``exp(-cost / eps)`` ``[C, V, P]`` for view marginals ``u [V]`` and prompt marginals
    ``v [C, P]``, by the authors' loop (row scaling, then column scaling; stop once the mean
    of |r - r_old| over all classes is below ``tolerance``). Both products are row vectors
    times each class's kernel (one batched product each, no temporary of the kernel's size)."""
    r = torch.ones_like(kernel[..., 0])
    c = (v != 0).to(v)  # ones; zero on padding prompts (weight 0), as if they were absent
    for _ in range(iterations):
        new_r = u / torch.bmm(c.unsqueeze(-2), kernel.transpose(-1, -2)).squeeze(-2)
        c = v / torch.bmm(new_r.unsqueeze(-2), kernel).squeeze(-2)
        change = torch.dist(new_r, r, 1).item() / r.numel()  # mean |new_r - r|, in one pass
        r = new_r
        if change < tolerance:
            break
    return r, c


def sinkhorn(
    kernel: Tensor,
    u: Tensor,
    v: Tensor,
    iterations: int = SINKHORN_ITERATIONS,
    tolerance: float = SINKHORN_TOLERANCE,
) -> Tensor:
    """Transport plans ``[B, C, V, P]`` of kernels ``[B, C, V, P]``, marginals ``u [B, V]``
    and ``v [B, C, P]`` (:func:`sinkhorn_scalings` per image)."""
    plans = []
    for image_kernel, image_u, image_v in zip(kernel, u, v, strict=True):
        r, c = sinkhorn_scalings(image_kernel, image_u, image_v, iterations, tolerance)
        plans.append(r.unsqueeze(-1) * c.unsqueeze(-2) * image_kernel)
    return torch.stack(plans)


@dataclass
class AWTHead(Head):
    uses_crops = True
    own_probabilities = True

    prompt_emb: Tensor  # [C, P, D]: the label prompt, then the description prompts (padded)
    mask: Tensor  # [C, P]
    logit_scale: float = 100.0
    image_temperature: float = 0.5
    text_temperature: float = 0.5
    _text: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def logits(
        self,
        image_emb: Tensor,
        crop_emb: Tensor | None = None,
        draw: int = 0,
        *,
        counts: Tensor | None = None,
    ) -> Tensor:
        """Scores ``[B, C]``; image b's views are its full view and first ``counts[b]`` crops
        (images grouped by count: each group's Sinkhorn runs on its own views)."""
        return by_count(self._transport, image_emb, crop_emb, counts)

    def _transport(self, image_emb: Tensor, crop_emb: Tensor | None) -> Tensor:
        views = all_views(image_emb, crop_emb)  # [B, V, D]
        prompts, means = self._prompts(views)
        n_classes, n_prompts = self.mask.shape
        step = max(1, BLOCK // (len(prompts) * views.shape[1]))
        cos = views.new_empty(min(step, len(views)) * views.shape[1], len(prompts))
        cos_cvp = views.new_empty(n_classes, views.shape[1], n_prompts)  # one image's, cached
        kernel = torch.empty_like(cos_cvp)  # exp(-(1 - cos) / eps) = exp(cos / eps + offset)
        offset = views.new_tensor(-1 / EPSILON)
        scores = []
        for batch in views.split(step):
            block = torch.mm(batch.flatten(0, 1), prompts.T, out=cos[: batch.shape[:2].numel()])
            block = block.view(*batch.shape[:2], n_classes, n_prompts)  # [b, V, C, P]
            view_weights, prompt_weights = self._weights(batch, means, block[:, 0])
            for image_cos, u, v in zip(block, view_weights, prompt_weights, strict=True):
                cos_cvp.copy_(image_cos.transpose(0, 1))
                torch.add(offset, cos_cvp, alpha=1 / EPSILON, out=kernel).exp_()
                r, c = sinkhorn_scalings(kernel, u, v)
                plan_cos = torch.bmm(r.unsqueeze(-2), kernel.mul_(cos_cvp)).squeeze(-2)
                scores.append(self.logit_scale * (plan_cos * c).sum(-1))  # sum T o
        return torch.stack(scores) if scores else views.new_zeros(0, n_classes)

    def probabilities(self, logits: Tensor, logit_scale: float) -> Tensor:
        """softmax of the logits, which are at the model's temperature already."""
        return logits.softmax(-1)

    def _weights(
        self, views: Tensor, means: Tensor, full_view_cos: Tensor
    ) -> tuple[Tensor, Tensor]:
        """View weights ``[b, V]`` and prompt weights ``[b, C, P]`` from small products: the
        views against each class's mean prompt (o averaged over the prompts) and the full
        view's cosines ``[b, C, P]``."""
        mean = self.logit_scale * views @ means.T  # [b, V, C]
        view_weights = torch.softmax(-entropy(mean) / self.image_temperature, dim=-1)
        swapped = swapped_entropy(mean[:, 0], self.logit_scale * full_view_cos)  # [b, C, P]
        mask = self.mask.to(views.device)
        prompt_logits = (-swapped / self.text_temperature).masked_fill(~mask, -torch.inf)
        return view_weights, torch.softmax(prompt_logits, dim=-1)

    def _prompts(self, views: Tensor) -> tuple[Tensor, Tensor]:
        """The prompts ``[C * P, D]`` (padding zeroed: cosine 0, as if absent) and each class's
        mean prompt ``[C, D]``, in the views' dtype and device (made once per dtype)."""
        key = (views.dtype, views.device)
        if key not in self._text:
            mask = self.mask.to(views.device)
            emb = self.prompt_emb.to(views).masked_fill(~mask.unsqueeze(-1), 0.0)
            means = emb.sum(1) / mask.sum(-1, keepdim=True).to(emb)
            self._text[key] = emb.flatten(0, 1), means
        return self._text[key]


@functools.cache
def awt_templates() -> dict[str, str]:
    """The AWT authors' label prompt per dataset (wca's names, ``-`` and ``_`` alike)."""
    text = resources.files("wca").joinpath("data/awt_templates.json").read_text("utf-8")
    return {name.replace("_", "-"): t for name, t in json.loads(text)["templates"].items()}


def awt_template(dataset: str | None) -> str:
    """The label prompt AWT's authors use for ``dataset``; "a photo of a {}." elsewhere."""
    key = (dataset or "").lower().replace("_", "-")
    return awt_templates().get(key, LABEL_TEMPLATE)


def awt_prompts(
    names: list[str], descriptions: list[list[str]], count: int, template: str = LABEL_TEMPLATE
) -> list[list[str]]:
    """Per class: the label prompt, then the label prompt followed by each description."""
    return [
        [template.format(name)] + [f"{template.format(name)} {text}" for text in texts[:count]]
        for name, texts in zip(names, descriptions, strict=True)
    ]


@register_method(
    "awt",
    summary="AWT (NeurIPS 2024): optimal transport between the views and description prompts",
)
def _awt(
    encode_texts: EncodeTexts,
    sources: TextSources,
    n_descriptions: Annotated[int, Field(ge=1)] = 50,
    logit_scale: LogitScale = 100.0,
) -> AWTHead:
    """``n_descriptions``: the first that many sentences of each class (all, when fewer).
    The label prompt is the authors' template of ``sources.dataset`` (:func:`awt_template`)."""
    names = sources.names("awt")
    sentences = require(sources.sentences, "awt", "sentences (cupl.json)")
    texts = match_descriptions(names, sentences, sources.origin("sentences", "awt"))
    prompts = awt_prompts(names, texts, n_descriptions, awt_template(sources.dataset))
    emb, mask = encode_prompts(encode_texts, prompts)
    return AWTHead(emb, mask, logit_scale)
