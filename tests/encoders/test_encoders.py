"""Model backends: tiny models built with each library's config API, loaded back by spec."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hub_constants
from open_clip.transformer import QuickGELU
from PIL import Image
from transformers import AutoProcessor

import tiny_models
import wca
from wca.encoders import BACKENDS, Encoder, ModelNotAvailableError, load_encoder, register_backend
from wca.encoders.base import resolve_device
from wca.preprocessing import fast_views

BUILDERS = {
    "open_clip_config": tiny_models.save_open_clip_model,
    "openai_state_dict": tiny_models.save_openai_state_dict,
    "hf_clip": tiny_models.save_hf_clip_model,
    "hf_siglip": tiny_models.save_hf_siglip_model,
}
NO_BOXES = torch.zeros(0, 4, dtype=torch.long)


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One tiny model per backend form, saved once for the module."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {kind: build(root / kind) for kind, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def encoders(specs: dict[str, str]) -> dict[str, Encoder]:
    return {kind: load_encoder(spec, device="cpu") for kind, spec in specs.items()}


@pytest.fixture
def image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face cache and a Hub endpoint that refuses connections (port 9)."""
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    return cache


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every ``time.sleep`` a test makes: a retry loop with backoff shows up here."""
    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", calls.append)
    return calls


@pytest.mark.parametrize("kind", BUILDERS)
def test_tiny_models_load_through_their_spec(kind, specs, encoders, image):
    encoder = encoders[kind]
    assert encoder.name == specs[kind]
    assert encoder.identity.startswith(specs[kind]) and encoder.identity != specs[kind]
    assert encoder.embed_dim == (64 if kind == "hf_siglip" else tiny_models.EMBED_DIM)
    assert encoder.device == torch.device("cpu") and encoder.dtype == torch.float32
    assert encoder.preprocessing.image_size == tiny_models.IMAGE_SIZE
    assert encoder.preprocessing.resize_mode == ("squash" if kind == "hf_siglip" else "shortest")
    assert encoder.logit_scale == pytest.approx(1 / 0.07 if kind != "hf_siglip" else 1.0, rel=1e-3)
    pixels = encoder.preprocess(image)
    assert pixels.shape == (3, tiny_models.IMAGE_SIZE, tiny_models.IMAGE_SIZE)
    embedding = encoder.encode_images(pixels[None])
    assert embedding.shape == (1, encoder.embed_dim) and embedding.dtype == torch.float32


def test_load_encoder_is_the_top_level_name():
    assert wca.load_encoder is load_encoder


@pytest.mark.parametrize("kind", BUILDERS)
def test_embeddings_are_normalised_and_batch_size_independent(kind, encoders):
    encoder = encoders[kind]
    pixels = torch.randn(5, 3, tiny_models.IMAGE_SIZE, tiny_models.IMAGE_SIZE)
    texts = ["a photo of a cat.", "a dog", "an apple on a table", "x", "a photo of a car."]
    encoder.batch_size = 5
    images_one_batch, texts_one_batch = encoder.encode_images(pixels), encoder.encode_texts(texts)
    encoder.clear_text_cache()
    encoder.batch_size = 2
    try:
        images_small_batches = encoder.encode_images(pixels)
        texts_small_batches = encoder.encode_texts(texts)
    finally:
        encoder.batch_size = 32
    for embeddings in (images_one_batch, texts_one_batch):
        assert embeddings.device.type == "cpu" and embeddings.dtype == torch.float32
        assert not embeddings.is_inference()  # callers may modify them in place
        torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(images_small_batches, images_one_batch, atol=1e-5, rtol=0)
    torch.testing.assert_close(texts_small_batches, texts_one_batch, atol=1e-5, rtol=0)
    assert encoder.encode_images(pixels[:0]).shape == (0, encoder.embed_dim)
    assert encoder.encode_texts([]).shape == (0, encoder.embed_dim)
    with pytest.raises(ValueError, match=r"expects pixels \[B, 3, 32, 32\], got \(2, 3, 16, 16\)"):
        encoder.encode_images(torch.zeros(2, 3, 16, 16))
    with pytest.raises(TypeError, match="not one string"):
        encoder.encode_texts("a cat")


def test_openai_state_dict_equals_open_clips_own_model(specs, encoders):
    reference = tiny_models.openai_format_model().float()
    encoder = encoders["openai_state_dict"]
    pixels = torch.randn(3, 3, tiny_models.IMAGE_SIZE, tiny_models.IMAGE_SIZE)
    texts = ["a photo of a bird.", "a red car", "the word " * 200]
    with torch.no_grad():
        image_ref = F.normalize(reference.encode_image(pixels), dim=-1)
        text_ref = F.normalize(reference.encode_text(open_clip.tokenize(texts)), dim=-1)
    torch.testing.assert_close(encoder.encode_images(pixels), image_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(encoder.encode_texts(texts), text_ref, atol=1e-5, rtol=0)


def _count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, method: str) -> list[int]:
    """Record the batch size of every call to ``owner.method``."""
    calls: list[int] = []
    original = getattr(owner, method)

    def counted(*args, **kwargs):
        tokens = kwargs.get("input_ids", args[0] if args else None)
        calls.append(len(tokens))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, method, counted)
    return calls


@pytest.mark.parametrize("kind", ["open_clip_config", "hf_clip"])
def test_text_cache_returns_identical_embeddings_without_the_model(kind, specs, monkeypatch):
    encoder = load_encoder(specs[kind], device="cpu", text_cache=False)
    method = "encode_text" if kind == "open_clip_config" else "get_text_features"
    calls = _count_calls(monkeypatch, encoder.model, method)
    first = encoder.encode_texts(["a cat", "a dog", "a cat"])
    assert calls == [2]  # one batch, the repeated text encoded once
    again = encoder.encode_texts(["a dog", "a cat"])
    assert calls == [2]
    assert torch.equal(again, first[[1, 0]]) and torch.equal(first[0], first[2])
    encoder.encode_texts(["a bird", "a cat"])
    assert calls == [2, 1]


@pytest.mark.parametrize("kind", BUILDERS)
def test_over_long_text_is_truncated(kind, encoders):
    long_text = "a very long description of a small bird with a red head " * 30
    embeddings = encoders[kind].encode_texts([long_text, long_text + "and more words"])
    # both are cut at the model's text length, so the extra words do not change anything
    torch.testing.assert_close(embeddings[0], embeddings[1], atol=1e-6, rtol=0)


def test_hf_tokenizer_from_open_clip_bpe_matches_open_clip(encoders):
    tokenizer = encoders["hf_clip"].tokenizer
    texts = ["a photo of a Laysan albatross.", "Café crème, 42 times!", "hello   world"]
    ours = tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt")
    theirs = open_clip.tokenize(texts)
    mask = ours["attention_mask"].bool()
    assert torch.equal(ours["input_ids"][mask], theirs[theirs != 0])


@pytest.mark.parametrize("kind", ["hf_clip", "hf_siglip"])
def test_hf_preprocess_reproduces_the_processor(kind, specs, encoders, image):
    processor = AutoProcessor.from_pretrained(specs[kind].removeprefix("hf:"))
    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    assert torch.equal(encoders[kind].preprocess(image), expected)


@pytest.mark.parametrize("kind", BUILDERS)
def test_preprocessing_parameters_reproduce_the_models_transform(kind, encoders, image):
    encoder = encoders[kind]
    gradient = np.broadcast_to(np.linspace(0, 255, 70)[None, :, None], (45, 70, 3))
    smooth = Image.fromarray(gradient.astype(np.uint8))
    for picture, tolerance in ((smooth, 1e-5), (image, 0.05)):
        fast = fast_views(picture, NO_BOXES, encoder.preprocessing)[0]
        torch.testing.assert_close(fast, encoder.preprocess(picture), atol=tolerance, rtol=0)


def test_bf16_precision_on_cpu(specs, encoders):
    encoder = load_encoder(specs["openai_state_dict"], device="cpu", precision="bf16")
    assert encoder.dtype == torch.bfloat16
    pixels = torch.randn(2, 3, tiny_models.IMAGE_SIZE, tiny_models.IMAGE_SIZE)
    embeddings = encoder.encode_images(pixels)
    assert embeddings.dtype == torch.float32
    reference = encoders["openai_state_dict"].encode_images(pixels)
    torch.testing.assert_close(embeddings, reference, atol=0.05, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "fp16"}, "use bf16 or fp32"),
        ({"precision": "fp64"}, "fp32, fp16, bf16"),
        ({"device": "cuda:0" if not torch.cuda.is_available() else "tpu"}, "device"),
        ({"batch_size": 0}, "positive integer"),
    ],
)
def test_bad_device_precision_and_batch_size(specs, kwargs, message):
    options = {"device": "cpu", **kwargs}
    with pytest.raises(ValueError, match=message):
        load_encoder(specs["openai_state_dict"], **options)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ViT-B-32", "malformed: expected ARCH/TAG, BACKEND:MODEL"),
        ("open_clip:", "malformed"),
        ("clip:ViT-B-32/openai", "unknown backend 'clip'"),
        ("open_clip:ViT-B-99/openai", "unknown open_clip architecture 'ViT-B-99'.*ViT-B-32"),
        ("open_clip:ViT-B-32/nonsense", "no pretrained tag 'nonsense'.*laion2b"),
        ("open_clip:ViT-B-32", "no weights given"),
        ("open_clip:hf-hub:onlyname", "expected open_clip:hf-hub:ORG/NAME"),
        ("hf:not a/valid id", "malformed"),
    ],
)
def test_malformed_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        load_encoder(spec, device="cpu")


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder(f"open_clip:{tmp_path / 'nothing.pt'}", device="cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder(f"open_clip:ViT-B-16@{tmp_path / 'nothing.pt'}", device="cpu")
    with pytest.raises(FileNotFoundError, match="model folder .* does not exist"):
        load_encoder(f"hf:{tmp_path / 'nothing'}", device="cpu")
    with pytest.raises(ValueError, match="has no config.json"):
        load_encoder(f"hf:{tmp_path}", device="cpu")
    (tmp_path / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(ValueError, match="not a loadable transformers clip model"):
        load_encoder(f"hf:{tmp_path}", device="cpu")


def test_checkpoint_not_matching_its_architecture(specs):
    tiny_file = specs["openai_state_dict"].removeprefix("open_clip:")
    with pytest.raises(ValueError, match=f"do not match the {tiny_models.TINY_ARCH} architecture"):
        load_encoder(f"open_clip:{tiny_models.TINY_ARCH}@{tiny_file}", device="cpu")


def test_not_an_openai_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="do not match an OpenAI-format CLIP model"):
        load_encoder(f"open_clip:{path}", device="cpu")


@pytest.mark.parametrize("form", ["openai", "arch"])
def test_corrupt_checkpoints(specs, tmp_path, form):
    tiny_file = Path(specs["openai_state_dict"].removeprefix("open_clip:"))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_file.read_bytes()[: tiny_file.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    for path in (truncated, garbage):
        arch = "" if form == "openai" else f"{tiny_models.TINY_ARCH}@"
        spec = f"open_clip:{arch}{path}"
        with pytest.raises(ValueError, match="is not a readable PyTorch checkpoint"):
            load_encoder(spec, device="cpu")


@pytest.mark.parametrize(
    "spec",
    [
        "open_clip:ViT-B-32/openai",
        "open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "hf:openai/clip-vit-base-patch32",
    ],
)
def test_uncached_hub_model_fails_fast_and_says_how_to_provide_it(offline_hub, sleeps, spec):
    with pytest.raises(ModelNotAvailableError) as caught:
        load_encoder(spec, device="cpu")
    assert sleeps == []  # fails at the first refused connection, no retries with backoff
    message = str(caught.value)
    assert message.startswith(f"{spec}: the model is not on disk")
    assert "127.0.0.1:9 cannot be reached" in message and str(offline_hub) in message
    assert "hf download" in message or "@/path/to/weights.pt" in message
    assert isinstance(caught.value, FileNotFoundError)


def test_offline_mode_is_named(offline_hub, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotAvailableError, match="offline mode is on"):
        load_encoder("hf:openai/clip-vit-base-patch32", device="cpu")


def _put_in_hub_cache(cache: Path, repo: str, folder: Path, commit: str = "c0ffee" * 6 + "0000"):
    """Lay ``folder``'s files out as a Hugging Face cache snapshot of ``repo``."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(folder, root / "snapshots" / commit)
    return commit


def test_cached_hub_models_load_without_network(offline_hub, sleeps, specs, tmp_path):
    hf_folder = Path(specs["hf_clip"].removeprefix("hf:"))
    commit = _put_in_hub_cache(offline_hub, "wca-test/tiny-clip", hf_folder)
    open_clip_folder = tmp_path / "open_clip_repo"
    open_clip_folder.mkdir()
    tiny_file = Path(specs["open_clip_config"].split("@", 1)[1])
    shutil.copy(tiny_file, open_clip_folder / "open_clip_pytorch_model.bin")
    config = {"model_cfg": tiny_models.TINY_CONFIG, "preprocess_cfg": {"interpolation": "bilinear"}}
    (open_clip_folder / "open_clip_config.json").write_text(json.dumps(config))
    _put_in_hub_cache(offline_hub, "wca-test/tiny-open-clip", open_clip_folder, commit)
    from_hub = load_encoder("hf:wca-test/tiny-clip", device="cpu")
    from_open_clip_hub = load_encoder("open_clip:hf-hub:wca-test/tiny-open-clip", device="cpu")
    assert sleeps == []  # the cache answers: no retries against the unreachable Hub
    assert from_hub.identity == f"hf:wca-test/tiny-clip@{commit}"
    assert from_open_clip_hub.identity == f"open_clip:hf-hub:wca-test/tiny-open-clip@{commit}"
    assert from_open_clip_hub.preprocessing.interpolation == "bilinear"
    local = load_encoder(specs["hf_clip"], device="cpu")
    pixels = torch.randn(2, 3, tiny_models.IMAGE_SIZE, tiny_models.IMAGE_SIZE)
    torch.testing.assert_close(from_hub.encode_images(pixels), local.encode_images(pixels))


def test_pretrained_tag_loads_from_cache_with_the_tags_quick_gelu(offline_hub, specs, monkeypatch):
    """A QuickGELU tag (like the OpenAI ones) gets QuickGELU, as OpenAI's clip.load builds it."""
    weights = Path(specs["open_clip_config"].split("@", 1)[1])
    repo = offline_hub / "tiny-repo"
    repo.mkdir()
    shutil.copy(weights, repo / "open_clip_pytorch_model.bin")
    _put_in_hub_cache(offline_hub, "wca-test/tiny-tag", repo)
    tag = open_clip.pretrained._pcfg(hf_hub="wca-test/tiny-tag/", quick_gelu=True)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, tiny_models.TINY_ARCH, {"tiny": tag})
    encoder = load_encoder(f"open_clip:{tiny_models.TINY_ARCH}/tiny", device="cpu")
    assert encoder.identity == f"open_clip:{tiny_models.TINY_ARCH}/tiny"
    assert isinstance(encoder.model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    same_weights = load_encoder(specs["open_clip_config"], device="cpu")
    assert isinstance(same_weights.model.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    pixels = torch.randn(1, 3, tiny_models.IMAGE_SIZE, tiny_models.IMAGE_SIZE)
    assert not torch.allclose(encoder.encode_images(pixels), same_weights.encode_images(pixels))


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_auto_device_prefers_cuda_then_mps(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto") == torch.device(expected)


def test_backends_are_a_registry():
    assert set(BACKENDS) >= {"open_clip", "hf"}
    with pytest.raises(ValueError, match="already registered"):
        register_backend("hf")(lambda *args, **kwargs: None)


@pytest.mark.parametrize("kind", BUILDERS)
def test_wca_classifier_runs_end_to_end(kind, encoders, image):
    descriptions = {
        "cat": ["a small furry pet.", "an animal with whiskers."],
        "dog": ["a loyal pet that barks.", "an animal with a wagging tail.", "a hound."],
        "car": ["a vehicle with four wheels."],
    }
    classifier = wca.WCAClassifier(encoders[kind], list(descriptions), descriptions, n_crops=4)
    (prediction,) = classifier.predict([image], top_k=3)
    assert sorted(prediction.labels) == ["car", "cat", "dog"]
    assert sum(prediction.scores) == pytest.approx(1.0, abs=1e-4)
    assert prediction.crop_weights.shape == (4,)


class _RunsCode:
    """Unpickling this runs ``exec``: what a crafted checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("form", ["openai", "arch"])
def test_crafted_pickle_does_not_run(tmp_path, monkeypatch, form):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(2), "payload": _RunsCode(marker)}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    arch = "" if form == "openai" else f"{tiny_models.TINY_ARCH}@"
    tiny_models.save_open_clip_model(tmp_path / "arch")  # registers the architecture
    with pytest.raises(ValueError) as error:
        load_encoder(f"open_clip:{arch}{path}", device="cpu")
    assert not marker.exists()
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert "contains Python code objects (builtins.exec" in message

