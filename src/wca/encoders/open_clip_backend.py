"""The open_clip backend: pretrained tags, Hub repos, local checkpoints and OpenAI files.

Specs (after ``open_clip:``):

- ``ARCH/TAG``: an ``open_clip.list_pretrained()`` pair, e.g. ``ViT-B-32/openai``. Tags trained
  with QuickGELU (the OpenAI ones) get QuickGELU, as OpenAI's ``clip.load`` builds them.
- ``hf-hub:org/name``: an open_clip model repository on the Hugging Face Hub.
- ``ARCH@/path/weights.pt``: a named architecture (built in, or registered with
  ``open_clip.add_model_config``) with weights from a local checkpoint.
- ``/path/file.pt``: an OpenAI-format checkpoint (state dict, safetensors file or TorchScript
  archive); the architecture is inferred from the weights, as ``clip.load`` does.
- ``local-dir:/path/folder``: an open_clip model folder (``open_clip_config.json`` and weights).

The named model ``demo`` (:mod:`wca.specs`) is ``open_clip:<wca.defaults.DEMO_MODEL>``.
Checkpoints are never unpickled as arbitrary Python: state dicts load with
``torch.load(weights_only=True)`` (passed explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
cannot turn it off), and a file that holds Python code objects is refused
(:mod:`wca.encoders.checkpoints`).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from wca.encoders.base import Encoder
from wca.encoders.checkpoints import check_archive, is_torchscript, load_error
from wca.encoders.hub import cached_commit, file_fingerprint, hf_cache_hint, load_from_hub
from wca.encoders.registry import CHECKPOINT_SUFFIXES, register_backend
from wca.preprocessing import Preprocessing

if TYPE_CHECKING:
    from open_clip.transform import PreprocessCfg

# open_clip (and the transformers it imports) loads with the first open_clip model, not with
# wca.encoders: a command that uses another backend, or none, never pays for its import.

OPENAI_CLIP = "an OpenAI-format CLIP model"
# The spec forms, for `wca models` (see the module docstring).
SPEC_FORMS = (
    ("open_clip:ARCH/TAG", "an open_clip.list_pretrained() pair", "open_clip:ViT-B-32/openai"),
    ("open_clip:hf-hub:ORG/NAME", "an open_clip model repository on the Hub",
     "open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    ("open_clip:ARCH@/path/weights.pt", "an architecture with local weights",
     "open_clip:ViT-B-16@/models/vit-b-16.pt"),
    ("open_clip:/path/file.pt", "an OpenAI-format checkpoint (architecture inferred)",
     "open_clip:/models/ViT-B-32.pt"),
    ("open_clip:local-dir:/path/folder", "an open_clip model folder (open_clip_config.json)",
     "open_clip:local-dir:./my-open-clip"),
)


class OpenClipEncoder(Encoder):
    """An open_clip model (``open_clip.CLIP`` or ``CustomTextCLIP``) and its tokenizer."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable[[list[str]], Tensor],
        *,
        name: str,
        identity: str,
        device: torch.device,
        precision: str,
        batch_size: int,
    ) -> None:
        import open_clip
        from open_clip.model import get_model_preprocess_cfg
        from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

        settings = merge_preprocess_dict(PreprocessCfg(), get_model_preprocess_cfg(model))
        cfg = PreprocessCfg(**settings)
        transform = image_transform_v2(cfg, is_train=False)
        model.eval()
        with torch.inference_mode():
            probe = model.encode_text(tokenizer(["a"]).to(device))
        super().__init__(
            name=name,
            identity=identity,
            embed_dim=probe.shape[-1],
            device=device,
            dtype=open_clip.get_input_dtype(precision) or torch.float32,
            preprocessing=_preprocessing(cfg, name),
            logit_scale=float(model.logit_scale.detach().float().exp().item()),
            batch_size=batch_size,
            transform=transform,
            logit_bias=_logit_bias(model),
            context_length=getattr(tokenizer, "context_length", None)
            or getattr(model, "context_length", None),
        )
        self.model = model
        self.tokenizer = tokenizer

    def _image_features(self, pixels: Tensor) -> Tensor:
        return self.model.encode_image(pixels)

    def _text_features(self, texts: list[str]) -> Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))

    def _count_tokens(self, texts: list[str]) -> list[int] | None:
        """CLIP's BPE (``SimpleTokenizer``: start and end of text around the text's tokens), or
        the transformers tokenizer inside open_clip's ``HFTokenizer`` / ``SigLipTokenizer``
        after the same cleaning; ``None`` for another tokenizer."""
        import open_clip
        from open_clip.tokenizer import SigLipTokenizer, basic_clean, canonicalize_text

        tokenizer = self.tokenizer
        if isinstance(tokenizer, open_clip.SimpleTokenizer):
            return [len(tokenizer.encode(text)) + 2 for text in texts]
        inner = getattr(tokenizer, "tokenizer", None)
        if inner is None:
            return None
        if isinstance(tokenizer, SigLipTokenizer):
            texts = [canonicalize_text(basic_clean(text)) for text in texts]
        elif callable(getattr(tokenizer, "clean_fn", None)):
            texts = [tokenizer.clean_fn(text) for text in texts]
        ids = inner(texts, truncation=False, padding=False, verbose=False)["input_ids"]
        return [len(row) for row in ids]


def _logit_bias(model: torch.nn.Module) -> float:
    """The bias of open_clip's SigLIP models (``init_logit_bias``); 0 for the others."""
    bias = getattr(model, "logit_bias", None)
    return 0.0 if bias is None else float(bias.detach().float().item())


def _preprocessing(cfg: PreprocessCfg, name: str) -> Preprocessing:
    """open_clip's preprocessing config as :class:`wca.preprocessing.Preprocessing` (square
    inputs)."""
    size = cfg.size if isinstance(cfg.size, int) else tuple(cfg.size)
    if isinstance(size, tuple):
        if len(set(size)) != 1:
            raise ValueError(f"{name}: input size {size} is not square, which wca does not support")
        size = size[0]
    return Preprocessing(
        image_size=int(size),
        mean=tuple(float(v) for v in cfg.mean),
        std=tuple(float(v) for v in cfg.std),
        interpolation=cfg.interpolation,
        resize_mode=cfg.resize_mode,
    )


@register_backend("open_clip", forms=SPEC_FORMS)
def load_open_clip(
    spec: str, model: str, *, device: torch.device, precision: str, batch_size: int
) -> OpenClipEncoder:
    """Load an open_clip spec (see the module docstring for the forms)."""
    import open_clip

    options = {"device": device, "precision": precision, "batch_size": batch_size}
    if model.startswith(open_clip.factory.HF_HUB_PREFIX):
        return _load_hf_hub(spec, model, **options)
    if model.startswith(open_clip.factory.LOCAL_DIR_PREFIX):
        return _load_local_dir(spec, model, **options)
    if "@" in model:
        arch, path = model.split("@", 1)
        return _load_arch_checkpoint(spec, arch, _existing_file(spec, path), **options)
    if model.startswith(("/", ".", "~")) or model.lower().endswith(CHECKPOINT_SUFFIXES):
        return _load_openai_file(spec, _existing_file(spec, model), **options)
    arch, _, tag = model.partition("/")
    return _load_pretrained_tag(spec, _known_arch(spec, arch), tag, **options)


def _existing_file(spec: str, path: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a folder, not a checkpoint file" if file.is_dir() else "does not exist"
        raise FileNotFoundError(f"{spec}: checkpoint file {file} {what}")
    return file


def _known_arch(spec: str, arch: str) -> str:
    import open_clip

    if arch in open_clip.list_models():
        return arch
    close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else " (see `wca models open_clip`)"
    hint += "; a transformers model on the Hub is hf:ORG/NAME"
    raise ValueError(f"{spec}: unknown open_clip architecture {arch!r}{hint}")


def _load_pretrained_tag(spec: str, arch: str, tag: str, **options) -> OpenClipEncoder:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not tag:
        raise ValueError(
            f"{spec}: no weights given; use open_clip:{arch}/TAG with a TAG in "
            f"{tags or '(none)'} or open_clip:{arch}@/path/to/weights.pt"
        )
    if tag not in tags:
        raise ValueError(
            f"{spec}: open_clip has no pretrained tag {tag!r} for {arch} "
            f"(tags: {', '.join(tags) or 'none'})"
        )
    quick_gelu = bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", False))

    def load() -> tuple[torch.nn.Module, Callable[[list[str]], Tensor]]:
        model, _, _ = open_clip.create_model_and_transforms(
            arch,
            pretrained=tag,
            force_quick_gelu=quick_gelu,
            device=options["device"],
            precision=options["precision"],
        )
        return model, open_clip.get_tokenizer(arch)

    how = (
        f"Download it where there is network (open_clip.create_model('{arch}', "
        f"pretrained='{tag}')) into {hf_cache_hint()}, or give a local checkpoint: "
        f"open_clip:{arch}@/path/to/weights.pt"
    )
    model, tokenizer = load_from_hub(spec, load, how)
    return OpenClipEncoder(model, tokenizer, name=spec, identity=spec, **options)


def _load_hf_hub(spec: str, model: str, **options) -> OpenClipEncoder:
    import open_clip

    repo = model[len(open_clip.factory.HF_HUB_PREFIX) :]
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"{spec} is malformed: expected open_clip:hf-hub:ORG/NAME")

    def load() -> tuple[torch.nn.Module, Callable[[list[str]], Tensor]]:
        clip, _, _ = open_clip.create_model_and_transforms(
            model, device=options["device"], precision=options["precision"]
        )
        return clip, open_clip.get_tokenizer(model)

    how = (
        f"Download the repository {repo} where there is network (`hf download {repo}`) "
        f"into {hf_cache_hint()}, or give a local checkpoint: open_clip:ARCH@/path/to/weights"
    )
    clip, tokenizer = load_from_hub(spec, load, how)
    commit = cached_commit(repo, "open_clip_config.json")
    identity = f"{spec}@{commit}" if commit else spec
    return OpenClipEncoder(clip, tokenizer, name=spec, identity=identity, **options)


def _load_local_dir(spec: str, model: str, **options) -> OpenClipEncoder:
    """An open_clip model folder: ``open_clip_config.json`` and its weights file."""
    import open_clip

    folder = Path(model[len(open_clip.factory.LOCAL_DIR_PREFIX) :]).expanduser()
    if not (folder / "open_clip_config.json").is_file():
        what = "has no open_clip_config.json" if folder.is_dir() else "is not a folder"
        raise FileNotFoundError(f"{spec}: {folder} {what}")
    weights = [file for file in folder.iterdir() if file.suffix in CHECKPOINT_SUFFIXES]
    for file in weights:
        check_archive(spec, file)
    try:
        clip, _, _ = open_clip.create_model_and_transforms(
            f"{open_clip.factory.LOCAL_DIR_PREFIX}{folder}",
            device=options["device"],
            precision=options["precision"],
        )
        tokenizer = open_clip.get_tokenizer(f"{open_clip.factory.LOCAL_DIR_PREFIX}{folder}")
    except Exception as error:
        path = weights[0] if weights else folder / "open_clip_config.json"
        what = "the architecture in its open_clip_config.json"
        raise load_error(spec, path, what, error) from error
    identity = f"{spec}#{file_fingerprint(folder)}"
    return OpenClipEncoder(clip, tokenizer, name=spec, identity=identity, **options)


def _load_arch_checkpoint(spec: str, arch: str, path: Path, **options) -> OpenClipEncoder:
    import open_clip

    arch = _known_arch(spec, arch)
    check_archive(spec, path)
    try:
        model, _, _ = open_clip.create_model_and_transforms(
            arch, pretrained=str(path), device=options["device"], precision=options["precision"]
        )
    except Exception as error:
        raise load_error(spec, path, f"the {arch} architecture", error) from error
    return OpenClipEncoder(
        model,
        open_clip.get_tokenizer(arch),
        name=spec,
        identity=f"{spec}#{file_fingerprint(path)}",
        **options,
    )


def _load_openai_file(spec: str, path: Path, **options) -> OpenClipEncoder:
    import open_clip
    from open_clip.model import build_model_from_openai_state_dict, get_cast_dtype

    check_archive(spec, path)
    precision = options["precision"]
    state = _openai_state_dict(spec, path)
    try:
        if "state_dict" in state:  # a training checkpoint saved through DataParallel
            state = {k.removeprefix("module."): v for k, v in state["state_dict"].items()}
        model = build_model_from_openai_state_dict(state, cast_dtype=get_cast_dtype(precision))
    except Exception as error:
        raise load_error(spec, path, OPENAI_CLIP, error) from error
    model = model.to(options["device"])
    if precision != "fp16":  # OpenAI weights are stored fp16; as open_clip.load_openai_model
        model.float()
        if precision == "bf16":
            open_clip.model.convert_weights_to_lp(model, dtype=torch.bfloat16)
    model.visual.image_mean = open_clip.OPENAI_DATASET_MEAN
    model.visual.image_std = open_clip.OPENAI_DATASET_STD
    tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
    return OpenClipEncoder(
        model, tokenizer, name=spec, identity=f"{spec}#{file_fingerprint(path)}", **options
    )


def _openai_state_dict(spec: str, path: Path) -> dict[str, Tensor]:
    """The weights of an OpenAI-format file: a safetensors file, a TorchScript archive (whose
    loader resolves only TorchScript's own types) or a state dict read with
    ``weights_only=True``; a file holding Python code objects is refused."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        if is_torchscript(path):
            with warnings.catch_warnings():  # torch.jit.load is deprecated, OpenAI ships it
                warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
                return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise load_error(spec, path, OPENAI_CLIP, error) from error
    if not isinstance(state, dict):
        raise ValueError(f"{spec}: {path} holds a {type(state).__name__}, not a state dict")
    return state

