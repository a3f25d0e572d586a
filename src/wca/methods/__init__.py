"""The text side of every method and how it becomes class scores, in one registry.

- ``clip``:   "a photo of a {c}."
- ``clip-e``: a template ensemble (CLIP-E): normalised mean of the template embeddings.
- ``clip-d``: "{c}, which (is/has/...) {descriptor}" (CLIP-D, Menon & Vondrick 2023).
- ``waffle``: WaffleCLIP's random-word and random-character descriptors (Roth et al. 2023).
- ``cupl``:   the mean embedding of LLM-written sentences (CuPL, Pratt et al. 2023).
- ``wca``:    the sentences weighted against "a photo of a {c}." and aligned with image crops;
  its ablations ``wca-uniform-crops``, ``wca-uniform-text``, ``wca-full-view``, ``wca-paper``;
  ``bifta`` (BiFTA: WCA on near-duplicate-free descriptions, with ``--crop-strategy bifta``).
- ``zero``, ``mta``, ``awt``: the peers that also score many views (ZERO, MTA, AWT), on the
  same views (the full view and the crops); ``lazsl`` (LaZSL: crops and descriptions aligned
  by optimal transport).
- ``tda``, ``dmn``, ``boostadapter``, ``onzeta``, ``dota``, ``ecalp``, ``bca``, ``oga``,
  ``cosmic``: online methods that keep a memory over the stream of test images (TDA, DMN-ZS,
  BoostAdapter, OnZeta, DOTA, ECALP, BCA, OGA, COSMIC, whose stream also takes a second
  encoder's embeddings, ``aux_emb``), each starting from a per-image method (``base=``, CLIP by
  default); ``tda+wca`` is TDA on WCA, likewise ``dota+wca``, ``ecalp+wca``, ``bca+wca``,
  ``oga+wca``, ``cosmic+wca``
  (see :mod:`wca.methods.online` for the stream protocol).

``build_head(name, encoder, sources, **options)`` looks the method up in the registry and
returns a head that turns image (and crop) embeddings into ``[B, C]`` scores; the peers take the
encoder's ``logit_scale``, AWT its authors' prompt template for ``sources.dataset``.
"""

from wca.methods import (  # noqa: F401  (each module registers its methods)
    awt,
    bca,
    bifta,
    boostadapter,
    cosmic,
    dmn,
    dota,
    ecalp,
    lazsl,
    mta,
    oga,
    onzeta,
    prompts,
    tda,
    wca,
    zero,
)
from wca.methods.base import Head, OnlineHead
from wca.methods.prompts import (
    LABEL_TEMPLATE,
    PromptHead,
    clip_prompts,
    descriptor_prompts,
    descriptor_sentence,
    encode_prompts,
    template_prompts,
    waffle_descriptors,
)
from wca.methods.registry import METHODS, EncodeTexts, build_head, register_method
from wca.methods.sources import TextSources, load_text_sources
from wca.methods.wca import WCAHead

__all__ = [
    "LABEL_TEMPLATE",
    "METHODS",
    "EncodeTexts",
    "Head",
    "OnlineHead",
    "PromptHead",
    "TextSources",
    "WCAHead",
    "build_head",
    "clip_prompts",
    "descriptor_prompts",
    "descriptor_sentence",
    "encode_prompts",
    "load_text_sources",
    "register_method",
    "template_prompts",
    "waffle_descriptors",
]
