"""Bad models, bad settings, bad images and the classify command, through the API and the CLI
with a tiny open_clip model."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fake_encoder import FakeEncoder
from tiny_models import save_open_clip_model
from wca.classifier import WCAClassifier
from wca.cli import main
from wca.descriptions import load_classnames
from wca.encoders import load_encoder
from wca.images import load_image
from wca.options import MAX_PIXELS_ENV

CLASSES = ["red fox", "blue whale", "green frog"]
TEXTS = {name: [f"A photo of a {name}.", f"A {name} in the wild."] for name in CLASSES}


def picture(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8))


def bomb_png(path: Path, side: int = 30000) -> Path:
    """A PNG of a few dozen bytes whose header declares a ``side`` x ``side`` grey image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A tiny model, three good images (two classes' folders), descriptions."""
    base = tmp_path_factory.mktemp("robust")
    spec = save_open_clip_model(base / "model")
    images = base / "images"
    for k in range(3):
        folder = images / CLASSES[k % 2].replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        picture(k, (40 + 4 * k, 36)).save(folder / f"{k}.png")
    descriptions = base / "texts.json"
    descriptions.write_text(json.dumps(TEXTS))
    return {"spec": spec, "base": base, "images": images, "descriptions": descriptions}


def classify(world, *images, extra=()) -> list[str]:
    return [
        "classify",
        *map(str, images),
        "--classes",
        ",".join(CLASSES),
        "--model",
        world["spec"],
        "--n-crops",
        "3",
        "--top-k",
        "2",
        "--no-progress",
        *extra,
    ]


def eval_args(world, data_root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--dataset",
        "imagefolder",
        "--data-root",
        str(data_root),
        "--descriptions",
        str(world["descriptions"]),
        "--methods",
        "clip,wca",
        "--model",
        world["spec"],
        "--cache-dir",
        str(tmp_path / "cache"),
        "--output",
        str(tmp_path / "result.json"),
        "--n-crops",
        "4",
        "--n-run",
        "2",
        "--patch-n",
        "3",
        "--no-progress",
        *extra,
    ]


# ----------------------------------------------------------------------


@pytest.mark.slow
def test_nonfinite_embeddings_stop_the_run(world, tmp_path, capsys):
    weights = Path(world["spec"].split("@", 1)[1])
    state = torch.load(weights, weights_only=True)
    state["visual.proj"][0, 0] = float("nan")  # a valid file whose image tower answers NaN
    broken = tmp_path / "nan.pt"
    torch.save(state, broken)
    spec = f"{world['spec'].split('@', 1)[0]}@{broken}"
    image = next(world["images"].rglob("*.png"))
    args = classify(world, image, extra=["--descriptions", str(world["descriptions"])])
    args[args.index(world["spec"])] = spec
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "nan" not in captured.out.lower()
    assert spec in captured.err and "non-finite" in captured.err
    args = eval_args(world, world["images"], tmp_path)
    args[args.index(world["spec"])] = spec
    assert main(args) == 2
    err = capsys.readouterr().err
    assert spec in err and "non-finite" in err
    assert not (tmp_path / "result.json").exists()


def test_nonfinite_scores_stop_the_api():
    class NanEncoder(FakeEncoder):
        name = "nan-model"

        def encode_images(self, pixels):
            return torch.full((len(pixels), self.embed_dim), float("nan"))

    classifier = WCAClassifier(NanEncoder(), CLASSES, TEXTS, n_crops=3)
    with pytest.raises(ValueError, match="nan-model.*non-finite"):
        classifier.predict(picture(0))


def test_corrupt_zip_checkpoint_fails_its_crc(world, tmp_path, capsys):
    weights = Path(world["spec"].split("@", 1)[1])
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2  # inside the stored tensor bytes
    data[middle : middle + 4096] = bytes(b ^ 0xFF for b in data[middle : middle + 4096])
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(bytes(data))
    spec = f"{world['spec'].split('@', 1)[0]}@{corrupt}"
    with pytest.raises(ValueError, match="fails the zip CRC check"):
        load_encoder(spec, device="cpu")
    image = next(world["images"].rglob("*.png"))
    args = classify(world, image)
    args[args.index(world["spec"])] = spec
    assert main(args) == 2
    assert "corrupt" in capsys.readouterr().err


def test_a_damaged_safetensors_header_is_called_damaged(world, tmp_path, capsys):
    """A safetensors file whose header cannot be read is damaged, not a model of another
    architecture."""
    from safetensors.torch import save_file

    weights = tmp_path / "ViT-B-32.safetensors"
    save_file({"visual.proj": torch.zeros(4, 2)}, weights)
    data = bytearray(weights.read_bytes())
    data[10:14] = b"\xff\xfe{{"  # inside the JSON header: no longer UTF-8
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is a damaged safetensors file .*invalid UTF-8") as error:
        load_encoder(f"open_clip:{weights}", device="cpu")
    assert "do not match" not in str(error.value)
    args = classify(world, next(world["images"].rglob("*.png")))
    args[args.index(world["spec"])] = str(weights)
    assert main(args) == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert line.startswith(f"wca: error: open_clip:{weights}: {weights} is a damaged safetensors")


# ----------------------------------------------------------------------- items 2 and 3


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"n_crops": 0}, "n_crops"),
        ({"n_crops": -3}, "n_crops"),
        ({"alpha": float("nan")}, "alpha"),
        ({"alpha": 0.95}, "alpha: must be <= beta"),
        ({"beta": 2.0}, "beta"),
        ({"seed": -1}, "seed"),
        ({"image_scale": float("inf")}, "image_scale"),
        ({"text_scale": "abc"}, "text_scale"),
    ],
)
def test_settings_are_validated_at_construction(setting, message):
    with pytest.raises(ValueError, match=message):
        WCAClassifier(FakeEncoder(), CLASSES, TEXTS, **setting)


def test_cli_n_crops_zero_is_one_line(world, capsys):
    image = next(world["images"].rglob("*.png"))
    args = classify(world, image)
    args[args.index("--n-crops") + 1] = "0"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == "wca: error: --n-crops: Input should be greater than or equal to 1, got 0\n"


@pytest.mark.parametrize(
    "descriptions, message",
    [
        ({**TEXTS, "red fox": "a purple square body"}, "'red fox' must be a list of strings"),
        ({**TEXTS, "red fox": [1, 2]}, "'red fox' must be a list of strings"),
        ([1, 2], "descriptions must be"),
        ({"red fox": ["a"], 3: ["b"]}, "class name 3"),
    ],
)
def test_description_types_are_checked(descriptions, message):
    with pytest.raises(ValueError, match=message):
        WCAClassifier(FakeEncoder(), CLASSES, descriptions)


def test_classnames_must_be_a_list_of_strings():
    with pytest.raises(ValueError, match="list of strings"):
        WCAClassifier(FakeEncoder(), "red fox", TEXTS)
    with pytest.raises(ValueError, match="non-empty strings"):
        WCAClassifier(FakeEncoder(), ["red fox", 7], TEXTS)


# ----------------------------------------------------------------------


def test_same_image_same_answer_however_batched():
    images = [picture(k, (50 + 3 * k, 44)) for k in range(5)]
    classifier = WCAClassifier(FakeEncoder(), CLASSES, TEXTS, n_crops=5)
    classifier.encoder.batch_size = 8
    together = classifier.predict(images, top_k=3)
    reverse = classifier.predict(images[::-1], top_k=3)[::-1]
    for k, image in enumerate(images):
        (alone,) = classifier.predict(image, top_k=3)
        for other in (together[k], reverse[k]):
            assert torch.equal(alone.boxes, other.boxes)
            assert alone.labels == other.labels
            assert alone.scores == pytest.approx(other.scores, abs=1e-6)
    assert not torch.equal(together[0].boxes, together[1].boxes)
    seeded = WCAClassifier(FakeEncoder(), CLASSES, TEXTS, n_crops=5, seed=1)
    assert not torch.equal(seeded.boxes(images[0]), together[0].boxes)


# ----------------------------------------------------------------------


def test_decompression_bomb_names_file_limit_and_option(
    world, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 100
    with pytest.raises(ValueError, match=r"bomb\.png: image too large.*raise max_image_pixels"):
        load_image(bomb)
    classifier = WCAClassifier(FakeEncoder(), CLASSES, TEXTS, n_crops=3)
    with pytest.raises(ValueError, match="89478485 pixels"):
        classifier.predict(bomb)
    assert main(classify(world, bomb)) == 1
    err = capsys.readouterr().err
    assert "bomb.png: image too large" in err and "Traceback" not in err
    assert "(pass --max-image-pixels)" in err
    data = tmp_path / "data"
    for name in ("red_fox", "blue_whale"):
        (data / name).mkdir(parents=True)
        picture(1).save(data / name / "ok.png")
    bomb_png(data / "red_fox" / "bomb.png")
    assert main(eval_args(world, data, tmp_path)) == 2
    assert "bomb.png: image too large" in capsys.readouterr().err
    assert main(classify(world, bomb, extra=["--max-image-pixels", "0"])) == 1
    err = capsys.readouterr().err
    assert "too large" not in err and "not a readable image" in err


# ----------------------------------------------------------------------


def test_broken_image_is_reported_and_the_others_printed(world, tmp_path, capsys):
    good = sorted(world["images"].rglob("*.png"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(classify(world, good[0], broken, good[1])) == 1
    captured = capsys.readouterr()
    printed = [line for line in captured.out.splitlines() if not line.startswith(" ")]
    assert printed == [str(good[0]), str(good[1])]
    assert f"{broken}: not a readable image" in captured.err
    assert "1 of 3 images could not be classified" in captured.err


# ----------------------------------------------------------------------


def test_eval_stops_at_a_bad_image_unless_skipping(world, tmp_path, capsys):
    data = tmp_path / "data"
    for c, name in enumerate(("red_fox", "blue_whale")):
        for k in range(2):
            (data / name).mkdir(parents=True, exist_ok=True)
            picture(10 * c + k).save(data / name / f"{k}.png")
    (data / "red_fox" / "2.png").write_bytes(b"not a png")
    assert main(eval_args(world, data, tmp_path)) == 2
    assert "2.png: not a readable image" in capsys.readouterr().err
    assert main(eval_args(world, data, tmp_path, "--bad-images", "skip")) == 0
    assert "2.png: not a readable image" in capsys.readouterr().err
    document = json.loads((tmp_path / "result.json").read_text())
    (skipped,) = document["config"]["skipped_images"]
    assert skipped["file"].endswith("2.png") and "not a readable image" in skipped["error"]
    assert document["results"]["n_images"] == 4
    # the cached pass is reused by a skipping run, and refused by a strict one
    assert main(eval_args(world, data, tmp_path, "--bad-images", "skip")) == 0
    assert "cached features" in capsys.readouterr().err
    assert main(eval_args(world, data, tmp_path)) == 2
    assert "2.png: not a readable image" in capsys.readouterr().err


# ----------------------------------------------------------------------


def test_views_of_several_images_share_encoder_batches():
    encoder = FakeEncoder()
    encoder.batch_size = 16
    classifier = WCAClassifier(encoder, CLASSES, TEXTS, n_crops=7)  # 8 views per image
    images = [picture(k) for k in range(6)]
    batched = classifier.predict(images, top_k=3)
    assert (encoder.calls, encoder.views) == (3, 48)  # 3 full batches, not 6 small ones
    one_by_one = [classifier.predict(image, top_k=3)[0] for image in images]
    for a, b in zip(batched, one_by_one, strict=True):
        assert a.labels == b.labels and torch.allclose(a.crop_emb, b.crop_emb, atol=1e-6)
    encoder.batch_size = 12  # images straddle batches as in extraction
    straddled = classifier.predict(images, top_k=3)
    assert [p.labels for p in straddled] == [p.labels for p in batched]


def test_progress_bar_from_a_few_images(capsys):
    classifier = WCAClassifier(FakeEncoder(), CLASSES, TEXTS, n_crops=2)
    classifier.predict([picture(k) for k in range(2)])
    assert "classify" not in capsys.readouterr().err
    classifier.predict([picture(k) for k in range(8)])
    assert "classify" in capsys.readouterr().err


# ----------------------------------------------------------------------


def test_folder_json_evidence_and_clip_prompt_fallback(world, capsys):
    assert main(classify(world, world["images"], extra=["--json"])) == 0
    captured = capsys.readouterr()
    assert "CLIP prompt 'a photo of a {class}.'" in captured.err
    document = json.loads(captured.out)
    assert [Path(entry["image"]) for entry in document] == sorted(world["images"].rglob("*.png"))
    entry = document[0]
    assert len(entry["crops"]) == 3 and len(entry["crops"][0]["box"]) == 4
    assert sum(crop["weight"] for crop in entry["crops"]) == pytest.approx(1.0, abs=1e-5)
    label = entry["predictions"][0]["label"]
    (row,) = entry["descriptions"][label]
    assert row["description"] == f"a photo of a {label}." and {"weight", "similarity"} <= set(row)


def test_duplicate_classes_hint_names_a_classify_option(world, tmp_path, capsys):
    image = next(world["images"].rglob("*.png"))
    args = classify(world, image)
    args[args.index("--classes") + 1] = "red fox,red fox,green frog"
    assert main(args) == 2
    assert "--allow-duplicate-classes" in capsys.readouterr().err
    assert main([*args, "--allow-duplicate-classes"]) == 0


def test_hash_lines_in_a_classes_file_are_comments(world, tmp_path, capsys):
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\nred fox\n\n  # another comment\nblue_whale\n")
    assert load_classnames(path) == ["red fox", "blue whale"]
    args = classify(world, world["images"])
    args[args.index("--classes") : args.index("--classes") + 2] = ["--classes-file", str(path)]
    assert main(args) == 0
    assert "#" not in capsys.readouterr().out


def test_an_empty_descriptions_object_is_an_error(world, tmp_path, capsys):
    """`--descriptions {}` is not "no descriptions" (CLIP's prompt alone): classify refuses
    it, naming the file, as eval and serve do; the API too."""
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    image = world["images"] / "red_fox" / "0.png"
    assert main(classify(world, image, extra=("--descriptions", str(empty)))) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"wca: error: {empty}: no class has descriptions (an empty object)")
    with pytest.raises(ValueError, match="no class has descriptions"):
        WCAClassifier(FakeEncoder(), CLASSES, {})


def test_eval_names_the_descriptions_file_that_lacks_classes(world, tmp_path, capsys):
    """The sentences of a --descriptions file (or a folder's cupl.json) that lack classes are
    named by that file, not by the method that read them."""
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"red fox": ["A red fox."]}))
    args = eval_args(world, world["images"], tmp_path)
    args[args.index("--descriptions") + 1] = str(partial)
    assert main(args) == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert line == f"wca: error: {partial}: no descriptions for 1 classes: 'blue whale'"
    assert not (tmp_path / "result.json").exists()


def test_classify_takes_the_adaptive_budget(world, capsys):
    """--crop-budget adaptive: each image's crops are a prefix of its fixed N = 12 crops."""
    budget = ["--n-crops", "12", "--crop-budget", "adaptive", "--min-crops", "2", "--json",
              "--crops-per-round", "2", "--stop-rule", "patience", "--patience", "4"]  # fmt: skip
    assert main(classify(world, world["images"], extra=budget)) == 0
    adaptive = json.loads(capsys.readouterr().out)
    assert main(classify(world, world["images"], extra=["--n-crops", "12", "--json"])) == 0
    fixed = json.loads(capsys.readouterr().out)
    for mine, full in zip(adaptive, fixed, strict=True):
        read = len(mine["crops"])
        assert 6 <= read <= 12 and read % 2 == 0  # patience 4 after 2 crops: 6 at least
        assert [c["box"] for c in mine["crops"]] == [c["box"] for c in full["crops"]][:read]
