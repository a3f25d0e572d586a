"""Tiny transformers dual encoders of every family the ``hf:`` backend knows, saved with their
processors: each function writes a folder for ``hf:<folder>`` and returns the spec.

Built from each family's config classes, seeded, one layer per tower, so each builds in well
under a second. Tokenizers are the families' own classes over tiny vocabularies written here
(WordPiece for BERT-style ALIGN and Chinese-CLIP, Unigram for XLM-R-style AltCLIP and
MetaCLIP 2, BPE for SigLIP 2, CLIP's byte-level BPE with its first merges for CLIP and SigLIP,
whose own SentencePiece vocabulary no installed package ships). The image
processors mirror the published checkpoints' settings at a small size (ALIGN squashes to 43
and crops 32 with its [-1, 1] rescale; Chinese-CLIP squashes without a crop).
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

import tiny_models

SIZE = 32  # input side of the fixed-size families
TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
         "num_attention_heads": 2}
WORDS = ("a", "photo", "of", "the", "bird", "cat", "dog", "red", "green", "blue", "square",
         "circle", "star", "with", "wings", "fur", "it", "is", "has", "four", "sides", "round")
CHINESE = "一张鸟的照片猫狗红绿蓝"


def _seeded(build, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def bert_tokenizer(max_length: int):
    """A lower-casing WordPiece tokenizer: specials, characters, continuations and some words."""
    from transformers import BertTokenizer

    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    characters = list(string.ascii_lowercase + string.digits + string.punctuation + CHINESE)
    pieces += characters + ["##" + c for c in string.ascii_lowercase + string.digits] + list(WORDS)
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
    return BertTokenizer(vocab=vocab, model_max_length=max_length)


def xlm_roberta_tokenizer(max_length: int):
    """An XLM-R Unigram tokenizer: its four specials first (as XLM-R numbers them), then
    characters and whole words (longer pieces score higher)."""
    from transformers import XLMRobertaTokenizer

    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    characters = string.ascii_letters + string.digits + string.punctuation + CHINESE
    pieces += [(c, -5.0) for c in characters] + [("▁" + c, -5.5) for c in characters]
    pieces += [("▁" + word, -1.0) for word in WORDS] + [("▁", -6.0), ("<mask>", 0.0)]
    return XLMRobertaTokenizer(vocab=pieces, model_max_length=max_length)


def siglip2_tokenizer():
    """SigLIP 2's own (Gemma-style, lower-casing, left-padding) BPE over characters + merges."""
    from transformers import Siglip2Tokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for symbol in "▁" + string.ascii_lowercase + string.digits + string.punctuation:
        vocab.setdefault(symbol, len(vocab))
    merges = [("▁", "a"), ("r", "e"), ("▁", "b"), ("i", "r")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return Siglip2Tokenizer(vocab=vocab, merges=merges)


def clip_tokenizer(max_length: int, merges: int = 500):
    """CLIP's tokenizer over its byte symbols and first ``merges`` merges (the ids of the full
    vocabulary for those tokens; start and end of text follow them)."""
    from transformers import CLIPTokenizer

    vocab, all_merges = tiny_models.clip_bpe()
    kept = all_merges[:merges]
    tokens = sorted(vocab, key=vocab.get)[: 512 + merges] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=kept,
                         model_max_length=max_length)


def _clip_text(tokenizer, max_length: int) -> dict:
    return {**TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": max_length,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def _vision(**extra) -> dict:
    return {**TOWER, "image_size": SIZE, "patch_size": 8, **extra}


def save_align(directory: Path, seed: int = 0) -> str:
    """ALIGN: a two-stage EfficientNet and a BERT, the EfficientNet processor as published."""
    from transformers import (
        AlignConfig,
        AlignModel,
        AlignProcessor,
        AlignTextConfig,
        AlignVisionConfig,
        EfficientNetImageProcessor,
    )

    tokenizer = bert_tokenizer(64)
    vision = AlignVisionConfig(
        image_size=SIZE, width_coefficient=1.0, depth_coefficient=1.0, kernel_sizes=[3, 3],
        in_channels=[32, 16], out_channels=[16, 32], strides=[1, 2], num_block_repeats=[1, 1],
        expand_ratios=[1, 2], hidden_dim=64,
    )
    text = AlignTextConfig(vocab_size=len(tokenizer), max_position_embeddings=64, **TOWER)
    config = AlignConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                         projection_dim=32)
    image_processor = EfficientNetImageProcessor(
        size={"height": 43, "width": 43}, crop_size={"height": SIZE, "width": SIZE},
        do_center_crop=True, resample=2, rescale_factor=1 / 127.5, rescale_offset=True,
        do_normalize=False, include_top=False,
    )
    return _save(directory, _seeded(lambda: AlignModel(config), seed),
                 AlignProcessor(image_processor=image_processor, tokenizer=tokenizer))


def save_altclip(directory: Path, seed: int = 0) -> str:
    """AltCLIP: a CLIP ViT and an XLM-R text tower (RoBERTa positions: two reserved)."""
    from transformers import AltCLIPConfig, AltCLIPModel, AltCLIPProcessor, CLIPImageProcessor

    tokenizer = xlm_roberta_tokenizer(40)
    text = {**TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": 42,
            "project_dim": 16, "pad_token_id": 1, "type_vocab_size": 1}
    config = AltCLIPConfig(text_config=text, vision_config=_vision(), projection_dim=16)
    image_processor = CLIPImageProcessor(size={"shortest_edge": SIZE},
                                         crop_size={"height": SIZE, "width": SIZE})
    return _save(directory, _seeded(lambda: AltCLIPModel(config), seed),
                 AltCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer))


def save_chinese_clip(directory: Path, seed: int = 0) -> str:
    """Chinese-CLIP: a ViT and a BERT; its processor squashes without a crop, as published."""
    from transformers import (
        ChineseCLIPConfig,
        ChineseCLIPImageProcessor,
        ChineseCLIPModel,
        ChineseCLIPProcessor,
    )

    tokenizer = bert_tokenizer(48)
    text = {**TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": 48}
    config = ChineseCLIPConfig(text_config=text, vision_config=_vision(), projection_dim=16)
    image_processor = ChineseCLIPImageProcessor(size={"height": SIZE, "width": SIZE},
                                                do_center_crop=False)
    return _save(directory, _seeded(lambda: ChineseCLIPModel(config), seed),
                 ChineseCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer))


def save_clip(directory: Path, seed: int = 0) -> str:
    """CLIP: ViT and causal text tower pooled at the end-of-text token."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = clip_tokenizer(77)
    config = CLIPConfig(text_config=_clip_text(tokenizer, 77), vision_config=_vision(),
                        projection_dim=16)
    image_processor = CLIPImageProcessor(size={"shortest_edge": SIZE},
                                         crop_size={"height": SIZE, "width": SIZE})
    return _save(directory, _seeded(lambda: CLIPModel(config), seed),
                 CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer))


def save_siglip(directory: Path, seed: int = 0) -> str:
    """SigLIP: squash resize, 16-token text padded to its length (pooled at the last one)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    tokenizer = clip_tokenizer(16)
    config = SiglipConfig(text_config=_clip_text(tokenizer, 16), vision_config=_vision())
    image_processor = SiglipImageProcessor(size={"height": SIZE, "width": SIZE})
    return _save(directory, _seeded(lambda: SiglipModel(config), seed),
                 SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer))


def save_metaclip_2(directory: Path, seed: int = 0) -> str:
    """MetaCLIP 2: CLIP towers over an XLM-R-style vocabulary (pooled at its EOS, id 2)."""
    from transformers import CLIPImageProcessor, CLIPProcessor, MetaClip2Config, MetaClip2Model

    tokenizer = xlm_roberta_tokenizer(24)
    text = {**TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": 24,
            "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
    config = MetaClip2Config(text_config=text, vision_config=_vision(), projection_dim=16)
    image_processor = CLIPImageProcessor(size={"shortest_edge": SIZE},
                                         crop_size={"height": SIZE, "width": SIZE})
    return _save(directory, _seeded(lambda: MetaClip2Model(config), seed),
                 CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer))


def save_siglip2(directory: Path, seed: int = 0) -> str:
    """SigLIP 2 NaFlex: patch sequences within the processor's budget (256 patches of 16)."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor

    tokenizer = siglip2_tokenizer()
    text = {**TOWER, "vocab_size": len(tokenizer), "max_position_embeddings": 64,
            "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1}
    vision = {**TOWER, "patch_size": 16, "num_patches": 256}
    config = Siglip2Config(text_config=text, vision_config=vision)
    image_processor = Siglip2ImageProcessor(patch_size=16, max_num_patches=256)
    return _save(directory, _seeded(lambda: Siglip2Model(config), seed),
                 Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer))


def _save(directory: Path, model, processor) -> str:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return f"hf:{directory}"


# Every family by its config model_type: the builder of its tiny checkpoint.
BUILDERS = {
    "align": save_align,
    "altclip": save_altclip,
    "chinese_clip": save_chinese_clip,
    "clip": save_clip,
    "metaclip_2": save_metaclip_2,
    "siglip": save_siglip,
    "siglip2": save_siglip2,
}
