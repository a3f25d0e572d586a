"""Explanations: the numbers equal the classifier's, the heat-maps point at the right crop, and
the files are what docs/explanations.md promises (whose Python runs in tests/test_docs.py)."""

from __future__ import annotations

import base64
import json
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import wca
from fake_encoder import FakeEncoder
from wca.cli import main
from wca.demo.run import export
from wca.explain import explanation_record, render_explanation, where_figure, write_explanations
from wca.explain.evidence import as_image
from wca.explain.where import colour_limit, where_maps
from wca.explain.windows import Windows

N_CROPS = 12


@pytest.fixture(scope="module", autouse=True)
def views_cache(tmp_path_factory):
    """The explanation crops' cache in a folder of this module's (shared by its tests)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WCA_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """The demo's exported test set (one image per class), texts and model."""
    return export(tmp_path_factory.mktemp("demo") / "wca-demo-data", per_class=1)


@pytest.fixture(scope="module")
def demo_args(demo_data) -> list[str]:
    return [
        "--classes-file", str(demo_data / "classnames.json"),
        "--descriptions", str(demo_data / "cupl.json"),
        "--model", f"open_clip:{demo_data / 'wca-demo-rn.pt'}",
        "--n-crops", str(N_CROPS),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def images(demo_data) -> list[Path]:
    return sorted((demo_data / "images").glob("*/*.png"))[:2]


@pytest.fixture(scope="module")
def explained(tmp_path_factory, demo_args, images) -> Path:
    """`wca explain` on two demo images, the first with its true label (explanation crops of
    one size: the default's maps and figures, in fewer views)."""
    out = tmp_path_factory.mktemp("explain")
    label = images[0].parent.name
    args = ["explain", *map(str, images), *demo_args, "--label", label, "--output", str(out)]
    args += ["--explain-crops", "0.2"]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def classifier(demo_data) -> wca.WCAClassifier:
    encoder = wca.load_encoder(f"open_clip:{demo_data / 'wca-demo-rn.pt'}", device="cpu")
    classnames = json.loads((demo_data / "classnames.json").read_text())
    return wca.WCAClassifier(encoder, classnames, demo_data / "cupl.json", n_crops=N_CROPS)


def test_json_numbers_are_predicts_evidence(explained, images, classifier):
    predictions = classifier.predict(images, top_k=3)
    for path, prediction in zip(images, predictions, strict=True):
        record = json.loads((explained / f"{path.stem}.json").read_text())
        assert record["source"] == str(path.resolve())
        boxes = torch.tensor([crop["box"] for crop in record["crops"]])
        assert torch.equal(boxes, prediction.boxes.long())
        weights = torch.tensor([crop["weight"] for crop in record["crops"]], dtype=torch.float64)
        assert torch.allclose(weights, prediction.crop_weights.double(), atol=1e-6)
        probabilities = [c["probability"] for c in record["classes"][:3]]
        assert [c["name"] for c in record["classes"][:3]] == prediction.labels
        assert probabilities == pytest.approx(prediction.scores, abs=1e-6)
        explained_classes = {c["name"]: c for c in record["explained"]}
        for label in prediction.labels:
            rows = {d["text"]: d for d in explained_classes[label]["descriptions"]}
            for evidence in prediction.descriptions[label]:
                row = rows[evidence.description]
                assert row["weight"] == pytest.approx(evidence.weight, abs=1e-6)
                assert row["local_match"] == pytest.approx(evidence.similarity, abs=1e-6)
        assert [c["role"] for c in record["explained"][:2]] == ["prediction", "runner-up"]
    first = json.loads((explained / f"{images[0].stem}.json").read_text())
    assert first["label"] == images[0].parent.name
    assert images[0].parent.name in {c["name"] for c in first["explained"]}


@pytest.mark.slow
def test_ranking_equals_classify(explained, images, demo_args, tmp_path, capsys):
    capsys.readouterr()
    extra = ["--json", "--top-k", "24", "--explain", str(tmp_path)]
    assert main(["classify", str(images[0]), *demo_args, *extra]) == 0
    classified = json.loads(capsys.readouterr().out)
    for path, entry in zip(images[:1], classified, strict=True):
        record = json.loads((explained / f"{path.stem}.json").read_text())
        assert [c["name"] for c in record["classes"]] == [p["label"] for p in entry["predictions"]]
        again = json.loads((tmp_path / f"{path.stem}.json").read_text())
        assert [c["name"] for c in again["classes"]] == [c["name"] for c in record["classes"]]
        assert [c["box"] for c in again["crops"]] == [c["box"] for c in record["crops"]]
        weights = [c["weight"] for c in record["crops"]]
        # classify encodes in batches (predict_each): float32 sums in another order
        assert [c["weight"] for c in again["crops"]] == pytest.approx(weights, abs=1e-5)


class OneHeavyCrop(FakeEncoder):
    """Crop ``heavy`` looks exactly like the full view (so it takes all the weight) and matches
    the description "the target part" best; every other crop is orthogonal to both."""

    def __init__(self, heavy: int) -> None:
        super().__init__()
        self.heavy = heavy

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(len(pixels))
        rows = torch.zeros(len(pixels), self.embed_dim)
        rows[:, 1] = 1.0
        rows[:, 4:] = 0.5 * torch.randn(len(pixels), self.embed_dim - 4, generator=generator)
        rows[0], rows[1 + self.heavy] = 0.0, 0.0
        rows[0, 0] = rows[1 + self.heavy, 0] = 1.0
        return F.normalize(rows, dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        rows = super().encode_texts(texts)
        for k, text in enumerate(texts):
            if text == "the target part":
                rows[k] = F.normalize(torch.tensor([1.0, 0, 0.5] + [0.0] * 13), dim=0)
        return rows


def test_maps_of_wcas_crops_peak_inside_the_heavy_crop_and_are_drawn():
    heavy = 3
    sentences = {"thing": ["the target part", "a plain part"], "other": ["a thing", "b thing"]}
    classifier = wca.WCAClassifier(OneHeavyCrop(heavy), ["thing", "other"], sentences, n_crops=8)
    image = Image.new("RGB", (200, 150), "grey")
    (prediction,) = classifier.predict(image, top_k=2)
    assert float(prediction.crop_weights[heavy]) > 0.999
    found = where_maps(image, prediction, classifier, top=2, grid=(100, 75), windows=None)
    assert classifier.classnames[found.class_index] == "thing"
    left, top, right, bottom = (prediction.boxes[heavy].double() * 0.5).tolist()
    for k in (0, 1 + found.descriptions.index(0)):  # the crop weights, the target part
        y, x = found.maps.peak(k)
        assert left <= x + 0.5 <= right and top <= y + 0.5 <= bottom
    figure = where_figure(image, prediction, classifier, top_descriptions=2, windows=None)
    drawn = [np.ma.filled(ax.images[-1].get_array(), np.nan) for ax in figure.axes if ax.images]
    shown = where_maps(image, prediction, classifier, top=2, windows=None)  # the figure's grid
    for k in torch.nonzero(shown.maps.localized).flatten().tolist():  # drawn over the image
        limit = colour_limit(shown.maps)
        expected = shown.maps.t[k].numpy().clip(-limit, limit)
        assert any(np.array_equal(a, expected, equal_nan=True) for a in drawn if a.ndim == 2)
    # the others say so: one crop standing out is no evidence of a place (any crop could)
    said = [t for ax in figure.axes for t in ax.texts if t.get_text() == "no localized evidence"]
    assert len(said) == int((~shown.maps.localized).sum())
    assert "WCA's own 8 crops" in " ".join(t.get_text() for ax in figure.axes for t in ax.texts)


def test_figures_are_legible_and_small(explained, images, classifier):
    """Big enough to read, small enough to send: a where-figure of a 128-pixel image at most
    400 KB, the page at most 1 MB per image."""
    for path in images:
        assert Image.open(path).size == (128, 128)
        for suffix in ("descriptions", "where"):
            figure = explained / f"{path.stem}-{suffix}.png"
            picture = np.asarray(Image.open(figure).convert("L"))
            assert min(picture.shape) >= 500 and picture.std() > 20, suffix
        assert (explained / f"{path.stem}-where.png").stat().st_size <= 400_000
    assert (explained / "index.html").stat().st_size <= 1_000_000 * len(images)
    (prediction,) = classifier.predict([images[0]])
    figure = where_figure(images[0], prediction, classifier, windows=Windows((0.2,)))
    figure.draw_without_rendering()
    box = figure.axes[0].get_window_extent()
    assert max(box.width, box.height) >= 350  # the image panel, in pixels at the saved size


class Page(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.images: dict[str, str] = {}
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images[attrs["alt"]] = attrs["src"]
        if tag == "a":
            self.links.append(attrs["href"])
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()


def test_html_page_inlines_every_image_and_parses(explained, images):
    page = Page()
    page.feed((explained / "index.html").read_text())
    page.close()
    assert page.open == []
    for path in images:
        for name in (f"{path.stem}-descriptions.png", f"{path.stem}-where.png"):
            source = page.images[name]
            assert source.startswith("data:image/png;base64,")
            assert base64.b64decode(source.split(",", 1)[1]) == (explained / name).read_bytes()
        assert f"{path.stem}.json" in page.links
    assert len(page.images) == 2 * len(images)


def test_inputs_as_path_pil_or_tensor(images, classifier, tmp_path):
    picture = Image.open(images[0]).convert("RGB")
    pixels = torch.from_numpy(np.asarray(picture).copy())
    for source in (images[0], str(images[0]), pixels, pixels.permute(2, 0, 1), pixels / 255.0):
        assert np.array_equal(np.asarray(as_image(source)), np.asarray(picture))
    (prediction,) = classifier.predict([images[0]])
    path = render_explanation(images[0], prediction, tmp_path / "from-path.png", classifier)
    assert Image.open(path).width > 800
    with pytest.raises(ValueError, match="not one of"):
        explanation_record(prediction, classifier, label="no such class")


def test_bad_label_is_one_clear_line(demo_args, images, tmp_path, capsys):
    args = ["explain", str(images[0]), *demo_args, "--label", "zebra", "--output", str(tmp_path)]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("wca: error: --label 'zebra'") and error.count("\n") == 1
    args = ["explain", str(images[0]), *demo_args, "--explain-crops", "0.1,2", "--output", "x"]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("wca: error: --explain-crops '0.1,2'") and error.count("\n") == 1


@pytest.mark.slow
def test_images_in_class_folders_take_their_true_class_from_the_folder(
    demo_data, demo_args, tmp_path
):
    out = tmp_path / "out"
    args = ["explain", *map(str, sorted((demo_data / "images").glob("*/*.png"))[:2]), *demo_args,
            "--explain-crops", "none", "--output", str(out)]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]
    assert [record["label"] for record in records] == [
        Path(record["source"]).parent.name for record in records
    ]
    assert all(record["correct"] is not None for record in records)


@pytest.mark.slow
def test_unreadable_file_is_named_skipped_and_the_rest_explained(
    demo_args, images, classifier, tmp_path, capsys
):
    """As classify: one line naming the file, the others explained, exit status 1; files of
    one stem in two folders are told apart by their folders, and each record names its file."""
    folder = tmp_path / "photos"
    for name, source in zip(("cats", "dogs"), images, strict=True):
        (folder / name).mkdir(parents=True)
        shutil.copy(source, folder / name / "photo.png")
    (folder / "dogs" / "broken.png").write_text("not pixels at all\n")
    out = tmp_path / "out"
    args = ["explain", str(folder), *demo_args, "--explain-crops", "none", "--output", str(out)]
    capsys.readouterr()
    assert main(args) == 1
    error = capsys.readouterr().err
    assert f"wca: error: {folder / 'dogs' / 'broken.png'}: not a readable image" in error
    assert error.rstrip().endswith("1 of 3 images could not be read")
    for name in ("cats", "dogs"):
        record = json.loads((out / f"{name}__photo.json").read_text())
        assert record["source"] == str((folder / name / "photo.png").resolve())
        assert (out / f"{name}__photo-where.png").stat().st_size > 0
    assert "broken.png" in (out / "index.html").read_text()
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        write_explanations(classifier, [folder / "dogs" / "broken.png"], tmp_path / "x")


@pytest.mark.slow
def test_an_image_too_small_for_a_where_map_is_named_and_the_rest_explained(
    demo_args, tmp_path, capsys
):
    """A valid 1x1 image has one explanation window, too few for a contrast: it is explained
    without its where-map (a line naming it, a note on the page), and the batch goes on."""
    tiny, small = tmp_path / "tiny.png", tmp_path / "small.png"
    Image.new("RGB", (1, 1), (200, 30, 30)).save(tiny)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), np.uint8)).save(small)
    out = tmp_path / "out"
    args = ["explain", str(tiny), str(small), *demo_args, "--explain-crops", "0.5",
            "--output", str(out)]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0
    [line] = [line for line in capsys.readouterr().err.splitlines() if "where-map" in line]
    assert line.startswith(f"wca: {tiny}: explained without a where-map: the image is 1x1")
    assert (out / "tiny-descriptions.png").stat().st_size > 0 and (out / "tiny.json").exists()
    assert not (out / "tiny-where.png").exists()
    assert (out / "small-where.png").stat().st_size > 0
    assert "No where-map: the image is 1x1" in (out / "index.html").read_text()


@pytest.mark.slow
def test_explain_honours_max_image_pixels_without_pil_warnings(
    demo_args, tmp_path, capsys, monkeypatch
):
    """The decompression-bomb guard is max_image_pixels, as in classify: an image over it is
    one line naming the file (no PIL warning before it), one under it is explained even
    above PIL's own warning threshold."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns above 1000 pixels
    picture = tmp_path / "wide.png"
    Image.new("RGB", (40, 30), (20, 160, 40)).save(picture)  # 1200 pixels
    base = ["explain", str(picture), *demo_args, "--explain-crops", "none"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # none may escape
        capsys.readouterr()
        assert main([*base, "--max-image-pixels", "1100", "--output", str(tmp_path / "a")]) == 1
        lines = capsys.readouterr().err.splitlines()
        assert lines[0].startswith(f"wca: error: {picture}: image too large (1200 pixels")
        assert main([*base, "--max-image-pixels", "2000", "--output", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "wide-where.png").stat().st_size > 0
