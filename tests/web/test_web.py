"""`wca serve`: the page in a real browser (Playwright driving Debian's Chromium), the
``/classify`` endpoint through gradio_client, and every bad input answered by a message while
the server keeps answering. One server (the shipped demo model) serves the whole module."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from wca.budget import BudgetSpec
from wca.cli import main
from wca.web.inputs import InputError, check_image_file, parse_classnames
from wca.web.service import EXAMPLE_INDICES, Service, demo_service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# the true class first, then its two siblings (they differ only in one tiny part) and others
CLASSES = ["fluggen", "hestra", "jorrin", "brindle", "corvash", "quimble"]
IMAGE = "images/fluggen/00005.png"  # the fluggen image of `wca demo --export --per-class 1`


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo-export")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["demo", "--export", str(out), "--per-class", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def expected(exported) -> list[dict]:
    """`wca classify`'s answer for the image, classes and settings the page gets."""
    args = ["classify", str(exported / IMAGE), "--classes", ",".join(CLASSES), "--json"]
    args += ["--descriptions", str(exported / "cupl.json"), "--device", "cpu"]
    args += ["--model", f"open_clip:{exported / 'wca-demo-rn.pt'}", "--n-crops", "60"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args + ["--alpha", "0.5"]) == 0
    return json.loads(out.getvalue())[0]["predictions"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``wca serve`` on a free local port; yields its URL and its log file."""
    folder = tmp_path_factory.mktemp("serve")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(folder)}
    env["WCA_CACHE_DIR"] = str(folder / "cache")  # the explanation crops' cache, the test's own
    env["PYTHONUNBUFFERED"] = "1"  # the URL line reaches the log as soon as it is printed
    log = folder / "serve.log"
    command = [sys.executable, "-m", "wca", "serve", "--port", str(port), "--device", "cpu"]
    with open(log, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    # wait for the event (Gradio says it runs once it serves), however slow the imports
    while "Running on local URL" not in log.read_text():
        assert process.poll() is None, f"wca serve exited:\n{log.read_text()}"
        time.sleep(0.2)
    assert httpx.get(url, timeout=60).status_code == 200, log.read_text()
    yield url, log
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)


def classify(client, image, classes="\n".join(CLASSES), descriptions=None):
    from gradio_client import handle_file

    image = None if image is None else handle_file(str(image))
    descriptions = None if descriptions is None else handle_file(str(descriptions))
    return client.predict(image, classes, descriptions, 60, 0.5, api_name="/classify")


def no_traceback(log: Path) -> None:
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.mark.slow
def test_client_classify_matches_wca_classify(client, exported, expected):
    answer = classify(client, exported / IMAGE)
    assert [a["label"] for a in answer] == [e["label"] for e in expected]
    assert [a["score"] for a in answer] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A PNG header claiming ``side`` x ``side`` pixels (400 MP), with a sliver of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (side + 1))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat))
    return path


def bad_request(case: str, exported: Path, folder: Path) -> tuple[dict, str]:
    """The /classify arguments of one bad input and a part of the message it must get."""
    good = exported / IMAGE
    if case == "no image":
        return {"image": None}, "no image"
    if case == "not an image":
        fake = folder / "holiday.png"
        fake.write_text("not pixels at all\n")
        return {"image": fake}, "holiday.png: not an image"
    if case == "decompression bomb":
        return {"image": bomb_png(folder / "bomb.png")}, "decompression bomb"
    if case == "no classes":
        return {"image": good, "classes": " \n\n"}, "no classes"
    if case == "duplicate classes":
        return {"image": good, "classes": "fluggen\nhestra\nFluggen"}, "duplicate classes"
    descriptions = folder / "birds.json"
    descriptions.write_text(json.dumps({"fluggen": ["a fluggen."], "blue jay": ["a bird."]}))
    return {"image": good, "descriptions": descriptions}, "birds.json: no descriptions for 5"


BAD_INPUTS = [
    "no image",
    "not an image",
    "decompression bomb",
    "no classes",
    "duplicate classes",
    "descriptions not matching the classes",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_client_bad_input_gets_a_message_and_the_server_goes_on(
    case, client, server, exported, expected, tmp_path
):
    from gradio_client.exceptions import AppError

    arguments, message = bad_request(case, exported, tmp_path)
    with pytest.raises(AppError, match=message):
        classify(client, **arguments)
    assert classify(client, exported / IMAGE)[0]["label"] == expected[0]["label"]
    no_traceback(server[1])


def launch_chromium(playwright):
    if not Path(CHROMIUM).is_file():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: install Debian's (apt-get install -y chromium) for the "
            "browser test"
        )
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.mark.slow
def test_page_in_a_browser_answers_like_wca_classify(server, exported, expected, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, log = server
    big = tmp_path / "big.png"
    with open(big, "wb") as file:  # sparse: 21 MB on paper, no disk written
        file.truncate(21 * 2**20)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        submit = page.get_by_role("button", name="Classify")
        upload = page.locator("input[type=file]").first
        submit.click()
        expect(page.get_by_text("no image: upload one").first).to_be_visible(timeout=30_000)
        upload.set_input_files(big)
        expect(page.get_by_text("exceed the maximum allowed size of 20").first).to_be_visible()
        upload.set_input_files(exported / IMAGE)
        expect(page.locator("img[src*='00005.png']").first).to_be_visible()
        page.get_by_label("Class names, one per line").fill("\n".join(CLASSES))
        submit.click()
        top = page.locator("#wca-label [data-testid=label-output-value]")
        expect(top).to_be_visible(timeout=60_000)
        assert top.inner_text().strip() == expected[0]["label"]
        for baseline in ("#clip-label", "#clipd-label"):
            expect(page.locator(f"{baseline} [data-testid=label-output-value]")).to_be_visible()
        shot = tmp_path / "page.png"
        page.screenshot(path=shot, full_page=True)
        browser.close()
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    no_traceback(log)


SCREENSHOT_ENV = "WCA_WEB_SCREENSHOT"  # a path: also save the page's screenshot there (docs/)


def overlap(a: dict, b: dict) -> float:
    """The area two bounding boxes (Playwright's x, y, width, height) share."""
    width = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
    height = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
    return max(width, 0) * max(height, 0)


@pytest.mark.slow
def test_page_layout_no_label_covers_a_figure(server, exported, tmp_path):
    """After a classification, no panel label or heading covers the explanation figures, and
    the figures are drawn at (nearly) their own width at the default window width."""
    from playwright.sync_api import expect, sync_playwright

    url, log = server
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(exported / IMAGE)
        expect(page.locator("img[src*='00005.png']").first).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Classify").click()
        figures = [page.locator(f"#{key}-plot img").first for key in ("why", "where")]
        for figure in figures:
            expect(figure).to_be_visible(timeout=120_000)
        labels = page.locator("[data-testid=block-label], #why-heading, #where-heading")
        boxes = [labels.nth(i).bounding_box() for i in range(labels.count())]
        boxes = [box for box in boxes if box and box["width"] > 1 and box["height"] > 1]
        assert len(boxes) >= 7  # image, class names, 3 rankings, JSON, the 2 headings...
        for figure in figures:
            drawn = figure.bounding_box()
            assert all(overlap(drawn, box) == 0 for box in boxes), (drawn, boxes)
            natural = figure.evaluate("image => image.naturalWidth")
            assert drawn["width"] >= 0.85 * min(natural, 1216), (drawn, natural)
        shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "page.png")
        page.screenshot(path=shot, full_page=True)
        browser.close()
    no_traceback(log)


def test_texts_the_page_falls_back_to_and_says_so(exported, tmp_path):
    service = demo_service(tmp_path / "examples", device="cpu")
    assert [p.name for p in service.preloaded.examples] == [
        f"{service.preloaded.classnames[i]}.png" for i in EXAMPLE_INDICES
    ]
    classes = "fluggen\nhestra\na blue jay"  # the last one has no preloaded texts
    result = service.classify(exported / IMAGE, classes, n_crops=8, alpha=0.6)
    assert result.classifier.descriptions[2] == ["a photo of a a blue jay."]
    assert "1 of 3 classes have no descriptions" in result.notes[1]
    assert "a blue jay" in result.notes[1]
    assert [r.title for r in result.baselines] == ["CLIP", "CuPL"]
    assert result.record()["settings"] == {"n_crops": 8, "alpha": 0.6, "seed": 0}
    budget = BudgetSpec(crop_budget="adaptive")  # min_crops 4: refused below, in one line
    adaptive = Service(service.encoder, service.name, service.preloaded, budget)
    with pytest.raises(InputError, match=r"crops: at least 4 \(the adaptive budget's min_crops\)"):
        adaptive.classify(exported / IMAGE, classes, n_crops=2, alpha=0.6)
    descriptors = tmp_path / "clip-d.json"
    descriptors.write_text(json.dumps({c: ["a small thing"] for c in classes.splitlines()}))
    result = service.classify(exported / IMAGE, classes, None, descriptors)
    assert [r.title for r in result.baselines] == ["CLIP", "CLIP-D"]
    assert result.notes[-1] == "CLIP-D descriptors: from clip-d.json, for 3 classes."
    assert result.wca.labels[0] == result.record()["explanation"]["classes"][0]["name"]


def test_checks_without_a_server(tmp_path):
    big = tmp_path / "big.jpg"
    with open(big, "wb") as file:
        file.truncate(20 * 2**20 + 1)
    with pytest.raises(InputError, match="big.jpg: 20.0 MB; the largest image accepted is 20 MB"):
        check_image_file(big)
    wide = tmp_path / "wide.png"
    Image.new("L", (1, 1)).save(wide)
    bomb_png(wide, side=9000)  # 81 MP: under PIL's own limit, over the page's
    with pytest.raises(InputError, match="9000 x 9000 pixels; refused as a decompression bomb"):
        check_image_file(wide)
    assert parse_classnames("  cat\n\n dog \n") == ["cat", "dog"]
    with pytest.raises(InputError, match="only one class"):
        parse_classnames("cat")


def test_serve_without_gradio_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    monkeypatch.delitem(sys.modules, "wca.web.app", raising=False)
    assert main(["serve"]) == 1  # not a usage error: an extra to install
    assert capsys.readouterr().err.strip() == (
        "wca: error: the web page needs gradio, which is not installed: pip install 'wca[web]'"
    )


def test_the_pages_functions_answer_in_process(exported, expected, tmp_path):
    """The page built without a server: its API function answers as `wca classify` does and a
    visitor's mistake is a message (the served page is tested above)."""
    import gradio as gr

    from wca.web.app import build_app

    app = build_app(demo_service(tmp_path / "examples", device="cpu"))
    functions = {f.api_name: f.fn for f in app.fns.values()}
    image = {"path": str(exported / IMAGE)}
    descriptions = {"path": str(exported / "cupl.json")}
    answer = functions["classify"](image, "\n".join(CLASSES), descriptions, 60, 0.5)
    assert [a["label"] for a in answer] == [e["label"] for e in expected]
    assert [a["score"] for a in answer] == pytest.approx([e["score"] for e in expected], abs=1e-4)
    with pytest.raises(gr.Error, match="only one class"):
        functions["classify"](image, "fluggen", None, 60, 0.5)
