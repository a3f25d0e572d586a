"""Contrastive training of the demo's tiny CLIP on the demo world, and its OpenAI-format export.

The model is open_clip's standard ``CLIP`` (ModifiedResNet image tower, causal text transformer
over OpenAI's BPE tokens, QuickGELU), registered as the open_clip model config ``wca-demo-rn``.
Two measures make its small text tower learn shape words instead of merging them (see
``docs/demo.md``): the text tower is frozen for a warm-up of image-only updates, and it then
learns at a lower rate than the image tower.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from torch import Tensor

from wca import defaults
from wca.demo.world import TrainingStream

ASSETS = defaults.DEMO_ASSETS
MODEL_NAME = "wca-demo-rn"
MODEL_CONFIG = ASSETS / f"{MODEL_NAME}.json"
MODEL_FILE = defaults.DEMO_MODEL
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 1200
    batch_size: int = 128
    lr: float = 1e-3
    text_lr_factor: float = 0.3  # text tower learning rate = lr * text_lr_factor
    frozen_text_steps: int = 200  # image-only updates first
    warmup_steps: int = 100
    weight_decay: float = 0.1
    threads: int = 1
    save_every: int = 100


def register_model_config() -> None:
    """Make ``wca-demo-rn`` a model name of open_clip (``open_clip.create_model(...)``)."""
    if MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIG)


def build_model(seed: int = 0) -> CLIP:
    """A freshly initialised demo CLIP (seeded), in fp32."""
    register_model_config()
    torch.manual_seed(seed)
    return open_clip.create_model(MODEL_NAME, precision="fp32")


def round_to_fp16(model: CLIP) -> None:
    """Round every floating tensor of the model to fp16 values (kept in fp32), in place, so the
    evaluated model is exactly the one an OpenAI-format loader rebuilds from the saved file."""
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())


def save_openai(model: CLIP, path: Path) -> None:
    """Save the model as an OpenAI-format state dict in fp16 (what ``clip.load`` and
    ``open_clip.load_openai_model`` read); written atomically."""
    state = {
        k: (v.half() if v.is_floating_point() else v).clone() for k, v in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def normalise(images: Tensor) -> Tensor:
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def encode_text_truncated(model: CLIP, tokens: Tensor) -> Tensor:
    """``model.encode_text`` on tokens cut to the batch's longest caption: under the causal mask
    the end-of-text features are the same as at full context length, at a fraction of the cost."""
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    x = model.token_embedding(tokens) + model.positional_embedding[:length]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
    return x @ model.text_projection


def contrastive_loss(
    image_emb: Tensor, text_emb: Tensor, scale: Tensor, captions: list[str]
) -> Tensor:
    """Symmetric InfoNCE with soft targets: identical captions in a batch are all positives."""
    image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    logits = scale * image_emb @ text_emb.T
    index = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    ids = torch.tensor([index[c] for c in captions])
    same = (ids.view(-1, 1) == ids.view(1, -1)).float()
    targets = same / same.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def _param_groups(model: CLIP, config: TrainConfig) -> list[dict]:
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        text = not name.startswith("visual.") and name != "logit_scale"
        decay = p.ndim >= 2 and "embedding" not in name
        groups.setdefault((text, decay), []).append(p)
    return [
        {
            "params": params,
            "lr_factor": config.text_lr_factor if text else 1.0,
            "is_text": text,
            "weight_decay": config.weight_decay if decay else 0.0,
        }
        for (text, decay), params in groups.items()
    ]


def train(config: TrainConfig, out: Path, log=print, checkpoints: Path | None = None) -> CLIP:
    """Train a demo CLIP and save it (fp16-rounded, OpenAI format) to ``out``.

    The learning rate is constant after the warm-up, so the model after ``k`` steps of a longer
    run is the model of a ``k``-step run. ``out`` is rewritten every ``save_every`` steps (an
    interrupted run leaves a usable model); with ``checkpoints`` (a folder) every such snapshot
    is also kept there as ``step{k}.pt``.
    """
    torch.set_num_threads(config.threads)
    model = build_model(config.seed)
    stream = TrainingStream(config.seed, config.batch_size, model.visual.image_size)
    groups = _param_groups(model, config)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    meta = {"config": asdict(config), "params": sum(p.numel() for p in model.parameters())}
    log(json.dumps(meta))
    start = time.time()
    model.train()
    for step in range(config.steps):
        warm = min(1.0, (step + 1) / config.warmup_steps)
        text_on = step >= config.frozen_text_steps
        for group in groups:
            on = text_on or not group["is_text"]
            group["lr"] = config.lr * group["lr_factor"] * warm * on
        images, captions = stream.next_batch()
        with torch.set_grad_enabled(True):
            image_emb = model.encode_image(normalise(images))
            text_emb = encode_text_truncated(model, tokenizer(captions))
            loss = contrastive_loss(image_emb, text_emb, model.logit_scale.exp(), captions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 20 == 0 or step == config.steps - 1:
            log(
                f"step {step} loss {loss.item():.4f} scale {model.logit_scale.exp().item():.1f} "
                f"elapsed {time.time() - start:.0f}s"
            )
        if (step + 1) % config.save_every == 0 or step == config.steps - 1:
            snapshot = build_model(config.seed)
            snapshot.load_state_dict(model.state_dict())
            round_to_fp16(snapshot)
            save_openai(snapshot, out)
            if checkpoints is not None:
                save_openai(snapshot, Path(checkpoints) / f"step{step + 1:05d}.pt")
    log(f"done in {time.time() - start:.0f}s")
    model.eval()
    round_to_fp16(model)
    return model


def probe_model(model: CLIP, n_per_size: int = 256) -> dict[str, dict[str, float]]:
    """The single-object probe (:mod:`wca.demo.probe`) of a demo CLIP."""
    from wca.demo.probe import run_probe

    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    model.eval()
    return run_probe(
        model.encode_image, lambda texts: model.encode_text(tokenizer(texts)), normalise, n_per_size
    )
