"""The open_clip backend: pretrained tags, Hub repos, local checkpoints and OpenAI files.

Specs (after ``open_clip:``):

- ``ARCH/TAG``: an ``open_clip.list_pretrained()`` pair, e.g. ``ViT-B-32/openai``. Tags trained
  with QuickGELU (the OpenAI ones) get QuickGELU, as OpenAI's ``clip.load`` builds them.
- ``hf-hub:org/name``: an open_clip model repository on the Hugging Face Hub.
- ``ARCH@/path/weights.pt``: a named architecture (built in, or registered with
  ``open_clip.add_model_config``) with weights from a local checkpoint.
- ``/path/file.pt``: an OpenAI-format checkpoint (state dict or TorchScript archive); the
  architecture is inferred from the weights, as ``clip.load`` does.
"""

from __future__ import annotations

import difflib
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
from open_clip.model import get_model_preprocess_cfg
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from torch import Tensor

from wca.crops import Preprocessing
from wca.encoders.base import Encoder
from wca.encoders.hub import cached_commit, file_fingerprint, hf_cache_hint, load_from_hub
from wca.encoders.registry import register_backend

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


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
        )
        self.model = model
        self.tokenizer = tokenizer

    def _image_features(self, pixels: Tensor) -> Tensor:
        return self.model.encode_image(pixels)

    def _text_features(self, texts: list[str]) -> Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


def _preprocessing(cfg: PreprocessCfg, name: str) -> Preprocessing:
    """open_clip's preprocessing config as :class:`wca.crops.Preprocessing` (square inputs)."""
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


@register_backend("open_clip")
def load_open_clip(
    spec: str, model: str, *, device: torch.device, precision: str, batch_size: int
) -> OpenClipEncoder:
    """Load an open_clip spec (see the module docstring for the forms)."""
    options = {"device": device, "precision": precision, "batch_size": batch_size}
    if model.startswith(open_clip.factory.HF_HUB_PREFIX):
        return _load_hf_hub(spec, model, **options)
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
    if arch in open_clip.list_models():
        return arch
    close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else " (see open_clip.list_models())"
    raise ValueError(f"{spec}: unknown open_clip architecture {arch!r}{hint}")


def _load_pretrained_tag(spec: str, arch: str, tag: str, **options) -> OpenClipEncoder:
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


def _load_arch_checkpoint(spec: str, arch: str, path: Path, **options) -> OpenClipEncoder:
    arch = _known_arch(spec, arch)
    _check_archive(spec, path)
    try:
        model, _, _ = open_clip.create_model_and_transforms(
            arch, pretrained=str(path), device=options["device"], precision=options["precision"]
        )
    except Exception as error:
        raise _checkpoint_error(spec, path, f"the {arch} architecture", error) from error
    return OpenClipEncoder(
        model,
        open_clip.get_tokenizer(arch),
        name=spec,
        identity=f"{spec}#{file_fingerprint(path)}",
        **options,
    )


def _load_openai_file(spec: str, path: Path, **options) -> OpenClipEncoder:
    _check_archive(spec, path)
    try:
        with warnings.catch_warnings():  # open_clip tries torch.jit.load first, now deprecated
            warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
            model = open_clip.load_openai_model(
                str(path), precision=options["precision"], device=options["device"]
            )
    except Exception as error:
        raise _checkpoint_error(spec, path, "an OpenAI-format CLIP model", error) from error
    tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
    return OpenClipEncoder(
        model, tokenizer, name=spec, identity=f"{spec}#{file_fingerprint(path)}", **options
    )


def _checkpoint_error(spec: str, path: Path, what: str, error: Exception) -> ValueError:
    """A clear error for a checkpoint that cannot be read or does not fit its architecture."""
    message = f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]
    readable = _is_torch_archive(path) or path.suffix == ".safetensors"
    if not readable:
        return ValueError(
            f"{spec}: {path} is not a readable PyTorch checkpoint "
            f"(corrupt or another format): {message}"
        )
    return ValueError(f"{spec}: the weights in {path} do not match {what}: {message}")


def _check_archive(spec: str, path: Path) -> None:
    """Refuse a zip checkpoint (``torch.save``, TorchScript) whose members fail their CRC-32:
    torch reads the bytes without checking, so a corrupted file would load and answer NaN or
    nonsense. One sequential read of the file, before the model is built."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"{spec}: {path} is a damaged zip checkpoint ({error})") from None
    if bad is not None:
        raise ValueError(
            f"{spec}: {path} is corrupt: its member {bad!r} fails the zip CRC check "
            "(download or copy the checkpoint again)"
        )


def _is_torch_archive(path: Path) -> bool:
    """Whether ``path`` is a complete zip archive, the format of ``torch.save`` and TorchScript."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False
