"""Image-only encoders (wca.encoders.vision), loaded through the public spec path as a user's
saved model: their embeddings and views equal those of their own library."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tiny_vision import DINO_SIZE, save_dinov2, save_timm_test_vit
from wca import preprocessing
from wca.config import resolve_config
from wca.encoders import load_encoder
from wca.encoders.vision import load_image_encoder
from wca.errors import SettingError

NO_BOXES = torch.zeros(0, 4, dtype=torch.long)


@pytest.fixture(scope="module")
def dinov2(tmp_path_factory):
    return save_dinov2(tmp_path_factory.mktemp("dinov2") / "tiny-dinov2")


def picture(width: int = 45, height: int = 37) -> Image.Image:
    generator = torch.Generator().manual_seed(width * height)
    pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def test_dinov2_is_its_cls_token_on_its_processors_pixels(dinov2):
    from transformers import AutoImageProcessor, Dinov2Model

    encoder = load_image_encoder(str(dinov2), device="cpu")  # a bare folder, as --aux-model
    assert encoder.name == f"hf:{dinov2}" and encoder.identity.startswith(f"image:hf:{dinov2}#")
    assert load_image_encoder(f"hf:{dinov2}").identity == encoder.identity
    assert encoder.embed_dim == 24 and encoder.preprocessing.image_size == DINO_SIZE
    model = Dinov2Model.from_pretrained(dinov2)
    processor = AutoImageProcessor.from_pretrained(dinov2)
    image = picture()
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        expected = F.normalize(model(pixel_values=pixels).last_hidden_state[:, 0], dim=-1)
    torch.testing.assert_close(encoder.encode_images(pixels), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(encoder.preprocess(image)[None], pixels)
    fast = preprocessing.fast_views(image, NO_BOXES, encoder.preprocessing)  # the feature pass's
    torch.testing.assert_close(fast, pixels, rtol=0, atol=1e-5)


def test_timm_is_its_pooled_features_with_its_eval_transform(tmp_path):
    import timm
    import timm.data

    weights = save_timm_test_vit(tmp_path / "test_vit.safetensors")
    encoder = load_image_encoder(f"timm:test_vit@{weights}", device="cpu")
    model = timm.create_model("test_vit", pretrained=False, num_classes=0)
    from safetensors.torch import load_file

    model.load_state_dict(load_file(weights))
    config = timm.data.resolve_model_data_config(model)
    transform = timm.data.create_transform(**config, is_training=False)
    image = picture(200, 170)
    pixels = transform(image)[None]
    with torch.inference_mode():
        expected = F.normalize(model.eval()(pixels), dim=-1)
    torch.testing.assert_close(encoder.encode_images(pixels), expected, rtol=0, atol=1e-6)
    assert encoder.embed_dim == model.num_features
    fast = preprocessing.fast_views(image, NO_BOXES, encoder.preprocessing)
    level = 1 / 255 / min(encoder.preprocessing.std)  # PIL and torch round a few pixels apart
    torch.testing.assert_close(fast, pixels, rtol=0, atol=level + 1e-6)


def test_a_dual_encoder_gives_its_image_tower(tmp_path):
    from tiny_hf_families import save_clip

    for spec in (save_clip(tmp_path / "clip"), "demo"):  # transformers' and open_clip's
        aux, clip = load_image_encoder(spec), load_encoder(spec, device="cpu", text_cache=False)
        assert aux.identity == clip.identity and aux.text_cache_dir is None
        pixels = clip.preprocess(picture())[None]
        torch.testing.assert_close(aux.encode_images(pixels), clip.encode_images(pixels))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("foo:bar", "image model spec 'foo:bar': unknown backend 'foo' (known: hf, open_clip, "),
        ("timm:", "image model spec 'timm:' is malformed: no model after 'timm'"),
        ("/no/such/folder", "model /no/such/folder: no such checkpoint file or model folder"),
    ],
)
def test_a_bad_spec_is_one_line_naming_aux_model_before_any_model(spec, message):
    with pytest.raises(SettingError) as caught:
        resolve_config("cub", overrides={"aux_model": spec})
    assert str(caught.value).startswith("aux_model: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_models_that_cannot_load_say_so_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = {
        "timm:no_such_net": "timm:no_such_net: 'no_such_net' is not a timm model",
        f"timm:test_vit@{tmp_path / 'x.safetensors'}": "x.safetensors does not exist",
        f"hf:{tmp_path / 'empty'}": "empty has no config.json",
    }
    for spec, message in cases.items():
        with pytest.raises((ValueError, FileNotFoundError)) as caught:
            load_image_encoder(spec)
        assert message in str(caught.value) and "\n" not in str(caught.value)


def test_wca_models_lists_the_image_only_forms(capsys):
    from wca.cli import main
    from wca.encoders.vision import IMAGE_FORMS

    assert main(["models"]) == 0
    listed = capsys.readouterr().out.split("--aux-model")[1]
    assert all(form in listed and example in listed for form, _, example in IMAGE_FORMS)
