"""What every method's head is and what it declares it can do.

A head turns L2-normalised image embeddings ``[B, D]`` (and, for crop readers, crops
``[B, N, D]``) into class scores ``[B, C]``. Its capabilities are declared as class attributes
with these defaults, so that the evaluation, the classifier and the online methods ask a head
what it does instead of probing it:

- ``uses_crops`` (False): it reads the crops (the image side is more than the full view);
- ``pooled_runs`` (False): :meth:`Head.pool_logits` scores many runs from a crop pool at once;
- ``own_probabilities`` (False): its scores are not cosines, and :meth:`Head.probabilities`
  says what its class probabilities are (vote shares, logits at the model's temperature);
- ``online`` (False): it keeps a memory over a stream of images (:class:`OnlineHead`);
- ``evidence`` (False): :meth:`Head.evidence` gives the crop weights and the description scores
  behind a prediction (WCA's);
- ``reads_aux`` (False): its ``logits`` (and its stream's) take ``aux_emb [B, D2]``, the full
  views by a second image encoder (``aux_model``), when the evaluation has them (COSMIC's).

``n_draws`` counts independent random draws of the text side (WaffleCLIP); 1 otherwise.

Ragged crops (anytime views, :mod:`wca.methods.ragged`): ``counts`` (integers ``[B]``) gives
image b the first ``counts[b]`` rows of ``crop_emb [B, N, D]``; the rows after are padding,
whatever they hold, and change no score: each image scores as it would alone on its own
crops. ``counts=None``: every image has all N crops. Heads that read no crops ignore it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from wca.deferred import torch

if TYPE_CHECKING:
    from torch import Tensor


CAPABILITIES = ("uses_crops", "pooled_runs", "own_probabilities", "online", "evidence", "reads_aux")


class Head(ABC):
    """A method's head (see the module doc for the capabilities it declares)."""

    uses_crops: ClassVar[bool] = False
    pooled_runs: ClassVar[bool] = False
    own_probabilities: ClassVar[bool] = False
    online: ClassVar[bool] = False
    evidence: ClassVar[bool] = False
    reads_aux: ClassVar[bool] = False
    n_draws: int = 1

    @abstractmethod
    def logits(
        self,
        image_emb: Tensor,
        crop_emb: Tensor | None = None,
        draw: int = 0,
        *,
        counts: Tensor | None = None,
    ) -> Tensor:
        """Scores ``[B, C]`` of the images (and their crops, image b's the first ``counts[b]``)
        with text draw ``draw``."""

    def probabilities(self, logits: Tensor, logit_scale: float) -> Tensor:
        """Class probabilities ``[B, C]``: softmax(logit_scale * logits), the scores being
        cosines (CLIP's zero-shot probabilities at the model's own temperature)."""
        return torch.softmax(logit_scale * logits, dim=-1)

    def pool_logits(self, image_emb: Tensor, crop_pool: Tensor, indices: Tensor) -> Tensor:
        """Scores ``[R, B, C]`` of R runs that each draw crops ``indices[r]`` from the pool
        (heads that declare ``pooled_runs``)."""
        raise NotImplementedError(f"{type(self).__name__} does not score pooled runs")

    def image_features(
        self, image_emb: Tensor, crop_emb: Tensor | None, *, counts: Tensor | None = None
    ) -> Tensor:
        """The image side ``[B, D]``, as an online method's memory key: the full view, unless
        the head forms its own from the crops (image b's the first ``counts[b]``)."""
        return image_emb

    def text_features(self) -> Tensor | None:
        """The class vectors ``[C, D]`` an online method keeps (None: the head has none)."""
        return None

    def crop_weights(
        self, image_emb: Tensor, crop_emb: Tensor, *, counts: Tensor | None = None
    ) -> Tensor:
        """Each crop's weight ``[B, N]`` in the image side (heads that declare ``evidence``);
        0 on the padding after image b's ``counts[b]`` crops."""
        raise NotImplementedError(f"{type(self).__name__} gives no evidence")

    def description_scores(
        self, classes: Sequence[int], weighted_crop: Tensor
    ) -> list[tuple[Tensor, Tensor]]:
        """Per class of ``classes``: each description's weight and its similarity to the
        weighted crop mean ``[D]`` (heads that declare ``evidence``)."""
        raise NotImplementedError(f"{type(self).__name__} gives no evidence")

    def crop_terms(self, image_emb: Tensor, crop_emb: Tensor) -> tuple[Tensor, Tensor]:
        """Each crop's class scores ``[B, N, C]`` and the logits of the crop weights ``[B, N]``
        whose softmax-weighted mean ranks the classes as :meth:`logits` does (heads that
        declare ``evidence``): what :func:`wca.stopping.crop_evidence` reads."""
        raise NotImplementedError(f"{type(self).__name__} gives no evidence")

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        """The declared capabilities, by name (for `wca methods`)."""
        return {name: bool(getattr(cls, name)) for name in CAPABILITIES}


class OnlineHead(Head):
    """Base of the online heads: a memory over the stream (``stream``), whose outputs are logits
    at the model's temperature; ``logits`` is a one-call stream from an empty memory.

    Stream protocol: ``head.stream(length)`` returns a fresh stream with an empty memory; its
    ``logits(image_emb [B, D], crop_emb [B, N, D] | None, *, counts=None) -> [B, C]`` takes the
    next B images in order (image b with its first ``counts[b]`` crops) and returns, for each,
    what the method outputs when that image arrives (before any later image is seen); the
    memory carries over to the next call, so scoring a stream in chunks gives the same outputs
    as one call. ``length`` is the number of images the stream will hold (OnZeta's schedule
    needs it); None takes the first call's images as the whole stream.
    """

    online = True
    own_probabilities = True

    @abstractmethod
    def stream(self, length: int | None = None):
        """A fresh stream, with an empty memory, of ``length`` images (None: unknown)."""

    def logits(
        self,
        image_emb: Tensor,
        crop_emb: Tensor | None = None,
        draw: int = 0,
        *,
        counts: Tensor | None = None,
    ) -> Tensor:
        return self.stream(len(image_emb)).logits(image_emb, crop_emb, counts=counts)

    def probabilities(self, logits: Tensor, logit_scale: float) -> Tensor:
        """softmax of the outputs, which are logits at the model's temperature already."""
        return logits.softmax(-1)
