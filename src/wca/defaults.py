"""The defaults every entry point shares (the API, the CLI, the web page, the benchmarks), each
defined once. A leaf module: it imports nothing of wca, so the core can read it too.

The method's defaults are the paper's (Li et al., ICML 2024, section 4): N = 60 crops of side
U(0.5, 0.9) x the short side, crop weights softmax(exp(4) cos), description weights
softmax(exp(2) cos). Speed defaults never change a number.
"""

from __future__ import annotations

import os
from pathlib import Path

# WCA, as the paper states it
N_CROPS = 60
ALPHA = 0.5  # the authors' code crops with 0.1 whatever its config says: see wca.config
BETA = 0.9  # the authors hard-code the upper bound of the crop scale
IMAGE_SCALE = 4.0  # w_i = softmax_i(exp(image_scale) * cos(crop_i, full view))
TEXT_SCALE = 2.0  # v_j = softmax_j(exp(text_scale) * cos(desc_j, label prompt))
SEED = 0
# Runs of an evaluation when none are asked for (n_run unset): the authors' 20 crop draws, and
# 50 stream orders when an online method is scored, so that its expected tail accuracy (the
# mean top-1 of the worst 10 % of runs) averages 5 orders (wca.config.EvalConfig.n_run says why;
# tests/test_config_runs.py simulates it).
CROP_RUNS = 20
STREAM_ORDERS = 50
LABEL_TEMPLATE = "a photo of a {}."  # CLIP's prompt, WCA's reference text, the fallback

# Speed: the device ("auto": cuda, then mps, then cpu), views per encoder forward pass, loader
# processes (0: one prefetching thread), images per cache shard, model precision. The API and
# the CLI take the same values (tests/test_cli_startup.py checks both).
DEVICE = "auto"
BATCH_SIZE = 256
NUM_WORKERS = 0
SHARD_SIZE = 1000
# seconds a process waits for a feature-cache lock whose holder makes no progress (stopped, hung)
LOCK_TIMEOUT = 600.0
PRECISION = "fp32"
# Images larger than this many pixels are refused (PIL's own Image.MAX_IMAGE_PIXELS): a guard
# against decompression bombs; 0 lifts it.
MAX_IMAGE_PIXELS = 89_478_485
# An image given as an http(s) URL: seconds to wait for it, and the most bytes it may have.
URL_TIMEOUT = 10.0
URL_MAX_BYTES = 20 * 2**20

# ImageNet and its test-only variants share ImageNet's class lists (the authors' convention)
IMAGENET_FAMILY = ("imagenet", "imagenetv2", "imagenet-sketch", "imagenet-r", "imagenet-a")

CACHE_ENV = "WCA_CACHE_DIR"
# the tiny CLIP shipped with wca (trained by `wca demo train`): the model spec `demo`
DEMO_ASSETS = Path(__file__).parent / "demo" / "assets"
DEMO_MODEL = DEMO_ASSETS / "wca-demo-rn.pt"


def demo_model() -> Path:
    """The shipped demo model's file (an OpenAI-format state dict), checked to be there."""
    if not DEMO_MODEL.is_file():
        raise FileNotFoundError(f"{DEMO_MODEL}: the shipped demo model is missing")
    return DEMO_MODEL


def cache_dir(kind: str) -> Path:
    """The cache folder of one ``kind`` (``features``, ``texts``, ``descriptions``):
    ``$WCA_CACHE_DIR/<kind>``, else the platform's user cache folder (``~/.cache/wca`` or
    ``$XDG_CACHE_HOME/wca`` on Linux) + ``/<kind>``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / kind
    from platformdirs import user_cache_path

    return user_cache_path("wca", appauthor=False) / kind
