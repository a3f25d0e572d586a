"""Tiny CLIP-style models saved to a folder, for tests: each function returns the model spec.

Built with each library's own configuration API and seeded, so they are deterministic and take
well under a second: vision width 64 on 32-pixel images, one transformer layer per tower, the
real 49408-token CLIP BPE vocabulary (open_clip's shipped file) so the tokenizers are the real
ones. Other test modules import these functions directly.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_weights_to_lp
from open_clip.tokenizer import bytes_to_unicode, default_bpe

TINY_ARCH = "wca-tiny-ViT"  # the open_clip architecture name registered by save_open_clip_model
IMAGE_SIZE = 32
EMBED_DIM = 32
VOCAB_SIZE = 49408
TINY_CONFIG = {
    "embed_dim": EMBED_DIM,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {
        "context_length": 77,
        "vocab_size": VOCAB_SIZE,
        "width": 64,
        "heads": 1,
        "layers": 1,
    },
}


def save_open_clip_model(directory: Path, seed: int = 0) -> str:
    """A tiny open_clip model for ``open_clip:wca-tiny-ViT@<file>``.

    The architecture is registered in this process with ``open_clip.add_model_config`` (the way
    open_clip documents); a fresh process must register it again (call this function) before
    loading the spec.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"{TINY_ARCH}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_ARCH)
    weights = directory / "tiny_open_clip.pt"
    torch.save(model.state_dict(), weights)
    return f"open_clip:{TINY_ARCH}@{weights}"


def openai_format_model(seed: int = 0) -> CLIP:
    """A tiny CLIP in OpenAI's layout: QuickGELU, 64-wide heads, fp16 linear/conv weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(
            EMBED_DIM,
            vision_cfg=CLIPVisionCfg(layers=1, width=64, patch_size=8, image_size=IMAGE_SIZE),
            text_cfg=CLIPTextCfg(
                context_length=77, vocab_size=VOCAB_SIZE, width=64, heads=1, layers=1
            ),
            quick_gelu=True,
        )
    convert_weights_to_lp(model, dtype=torch.float16)  # as OpenAI's checkpoints are stored
    return model.eval()


def save_openai_state_dict(directory: Path, seed: int = 0) -> str:
    """A tiny OpenAI-format state dict file, for ``open_clip:<file>`` (works in any process)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tiny_openai.pt"
    torch.save(openai_format_model(seed).state_dict(), path)
    return f"open_clip:{path}"


def clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The CLIP BPE vocabulary and merges, read from the file open_clip ships."""
    with gzip.open(default_bpe(), "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def clip_tokenizer(context_length: int):
    """transformers' CLIPTokenizer with the CLIP BPE (the same ids as open_clip's tokenizer)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=context_length)


def save_hf_clip_model(directory: Path, seed: int = 0) -> str:
    """A tiny transformers CLIP model and processor folder, for ``hf:<folder>``."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = CLIPConfig(
        text_config={
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=EMBED_DIM,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(directory)
    tokenizer = clip_tokenizer(77)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return f"hf:{directory}"


def save_hf_siglip_model(directory: Path, seed: int = 0) -> str:
    """A tiny transformers SigLIP model (squash resize, 16-token text) folder, for ``hf:<folder>``.

    Its processor pairs SigLIP's image processor with the CLIP BPE tokenizer (SigLIP's own
    SentencePiece vocabulary is not shipped with any installed package).
    """
    from transformers import (
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
        SiglipTextConfig,
        SiglipVisionConfig,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = SiglipTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    vision = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    config = SiglipConfig(text_config=text, vision_config=vision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipModel(config)
    model.save_pretrained(directory)
    tokenizer = clip_tokenizer(16)
    image_processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return f"hf:{directory}"
