"""AWT (Zhu et al., "AWT: Transferring Vision-Language Models via Augmentation, Weighting, and
Transportation", NeurIPS 2024), zero-shot: an optimal transport between the views of an image
and the prompts of a class, as the authors' ``AWT_evaluation``, batched over images and classes.

Prompts of class c: "a photo of a {c}." and "a photo of a {c}. {description}" for its first
``n_descriptions`` sentences. With logits o[v, p, c] = logit_scale * cos(view v, prompt p of c):

- view weights: softmax_v(-H(softmax_c(mean_p o[v, p, c])) / 0.5);
- prompt weights of class c: softmax_p(-H_pc / 0.5), H_pc the entropy of the full view's
  prompt-mean distribution with class c's entry swapped for prompt p's logit;
- per class, Sinkhorn (epsilon 0.1, cost 1 - cos, at most 100 iterations, stopping once the
  mean change of the row scaling is below 0.01) between view and prompt weights;
- score of class c: sum_{v, p} T_c[v, p] o[v, p, c].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from wca.descriptions.io import match_descriptions
from wca.methods.prompts import LABEL_TEMPLATE, encode_prompts
from wca.methods.registry import EncodeTexts, Head, register_method, require
from wca.methods.sources import TextSources
from wca.methods.zero import LogitScale, all_views

EPSILON = 0.1
SINKHORN_ITERATIONS = 100
SINKHORN_TOLERANCE = 1e-2
BLOCK = 2**24  # logits per sub-batch of images [b, C, V, P]: bounds the memory


def entropy(logits: Tensor, dim: int = -1) -> Tensor:
    log_p = torch.log_softmax(logits, dim=dim)
    return -(log_p.exp() * log_p).sum(dim)


def swapped_entropy(anchor: Tensor, swaps: Tensor) -> Tensor:
    """``H[..., c, p]``: entropy of softmax(anchor ``[..., C]``) with entry c replaced by
    ``swaps[..., c, p]``, from leave-one-out sums in float64 (no ``[C, C]`` matrix)."""
    a, x = anchor.double(), swaps.double()
    top = a.max(-1, keepdim=True).values
    t = a - top
    e = t.exp()
    loo_z = e.sum(-1, keepdim=True) - e  # sum over k != c of exp(t_k)
    loo_n = (e * t).sum(-1, keepdim=True) - e * t
    argmax = t.argmax(-1, keepdim=True)  # the only entry that can dominate: summed directly
    others = e.scatter(-1, argmax, 0.0)
    loo_z = loo_z.scatter(-1, argmax, others.sum(-1, keepdim=True))
    loo_n = loo_n.scatter(-1, argmax, (others * t).sum(-1, keepdim=True))
    xt = x - top.unsqueeze(-1)  # shift again where the swapped-in logit is the largest
    shift = xt.clamp_min(0)
    rest = (-shift).exp()
    z = loo_z.unsqueeze(-1) * rest + (xt - shift).exp()
    n = rest * (loo_n.unsqueeze(-1) - shift * loo_z.unsqueeze(-1)) + (xt - shift).exp() * (
        xt - shift
    )
    return (z.log() - n / z).to(anchor.dtype)


def sinkhorn(
    kernel: Tensor,
    u: Tensor,
    v: Tensor,
    iterations: int = SINKHORN_ITERATIONS,
    tolerance: float = SINKHORN_TOLERANCE,
) -> Tensor:
    """Transport plans ``[B, C, V, P]`` for kernels ``exp(-cost / eps)`` ``[B, C, V, P]``,
    view marginals ``u [B, V]`` and prompt marginals ``v [B, C, P]``, by the authors' loop
    (row scaling, then column scaling; stop once mean |r - r_old| < tolerance), per image."""
    r = torch.ones_like(kernel[..., 0])  # [B, C, V]
    c = (v != 0).to(v)  # ones; zero on padding prompts (weight 0), as if they were absent
    active = torch.ones(len(kernel), dtype=torch.bool, device=kernel.device)
    for _ in range(iterations):
        new_r = u.unsqueeze(1) / (kernel @ c.unsqueeze(-1)).squeeze(-1)
        new_c = v / (kernel.transpose(-1, -2) @ new_r.unsqueeze(-1)).squeeze(-1)
        change = (new_r - r).abs().flatten(1).mean(1)
        r = torch.where(active[:, None, None], new_r, r)
        c = torch.where(active[:, None, None], new_c, c)
        active &= change >= tolerance
        if not bool(active.any()):
            break
    return r.unsqueeze(-1) * c.unsqueeze(-2) * kernel


@dataclass
class AWTHead:
    prompt_emb: Tensor  # [C, P, D]: the label prompt, then the description prompts (padded)
    mask: Tensor  # [C, P]
    logit_scale: float = 100.0
    image_temperature: float = 0.5
    text_temperature: float = 0.5
    uses_crops: bool = True
    n_draws: int = 1

    def logits(self, image_emb: Tensor, crop_emb: Tensor | None = None, draw: int = 0) -> Tensor:
        views = all_views(image_emb, crop_emb)
        step = max(1, BLOCK // self.prompt_emb[..., 0].numel() // views.shape[1])
        return torch.cat([self._scores(views[lo : lo + step]) for lo in range(0, len(views), step)])

    def _scores(self, views: Tensor) -> Tensor:
        mask = self.mask.to(views.device)
        cos = torch.einsum("bvd,cpd->bcvp", views, self.prompt_emb.to(views))
        cos = cos.masked_fill(~mask[None, :, None, :], 0.0)
        out = self.logit_scale * cos  # [b, C, V, P]
        mean = out.sum(-1) / mask.sum(-1).to(out)[:, None]  # [b, C, V]: mean over prompts
        view_weights = torch.softmax(-entropy(mean, dim=1) / self.image_temperature, dim=-1)
        swapped = swapped_entropy(mean[:, :, 0], out[:, :, 0])  # [b, C, P]
        prompt_logits = (-swapped / self.text_temperature).masked_fill(~mask, -torch.inf)
        prompt_weights = torch.softmax(prompt_logits, dim=-1)
        plan = sinkhorn(torch.exp(-(1.0 - cos) / EPSILON), view_weights, prompt_weights)
        return (plan * out).sum((-1, -2))


def awt_prompts(names: list[str], descriptions: list[list[str]], count: int) -> list[list[str]]:
    """Per class: the label prompt, then the label prompt followed by each description."""
    return [
        [LABEL_TEMPLATE.format(name)]
        + [f"{LABEL_TEMPLATE.format(name)} {text}" for text in texts[:count]]
        for name, texts in zip(names, descriptions, strict=True)
    ]


@register_method("awt")
def _awt(
    encode_texts: EncodeTexts,
    sources: TextSources,
    n_descriptions: Annotated[int, Field(ge=1)] = 50,
    logit_scale: LogitScale = 100.0,
) -> Head:
    """``n_descriptions``: the first that many sentences of each class (all, when fewer)."""
    names = sources.names("awt")
    sentences = require(sources.sentences, "awt", "sentences (cupl.json)")
    texts = match_descriptions(names, sentences, "awt")
    emb, mask = encode_prompts(encode_texts, awt_prompts(names, texts, n_descriptions))
    return AWTHead(emb, mask, logit_scale)
