"""Which crops each run of the multi-run protocol reads, and in which order online methods
see the images (:func:`wca.evaluate.evaluate` scores them).

Protocols (every run scores every method on every image):

- ``"pool"`` (the authors'): run ``r`` draws ``patch_n`` crop indices with replacement from the
  pool of ``n_crops`` crops, the same indices for every image. Runs share crops, so the
  spread over runs measures the draw from a fixed pool.
- ``"fresh"``: run ``r`` uses pool crops ``r*patch_n .. (r+1)*patch_n - 1``. With the paper's
  random sampler, crop ``i`` of an image is an independent draw (it depends only on seed, image
  and ``i``), so disjoint slices are fresh crops for every run, with no crop seen twice; the
  pool must hold ``n_run * patch_n`` crops.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from wca.config import check_protocol

STREAM_ORDER = "numpy.random.default_rng((seed, run)).permutation(n_images)"


def run_indices(n_crops: int, n_run: int, patch_n: int, seed: int, protocol: str) -> Tensor:
    """Crop indices ``[n_run, patch_n]`` into the pool, shared by all images (see module doc)."""
    check_protocol(n_crops, n_run, patch_n, protocol)
    if protocol == "pool":
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(0, n_crops, (n_run, patch_n), generator=generator)
    return torch.arange(n_run * patch_n).view(n_run, patch_n)


def stream_order(n_images: int, seed: int, run: int) -> Tensor:
    """The order in which run ``run`` streams the images to an online method."""
    return torch.from_numpy(np.random.default_rng((seed, run)).permutation(n_images))
