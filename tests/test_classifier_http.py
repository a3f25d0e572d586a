"""Images given as http(s) URLs: fetched with a timeout and a size limit, tested against a
local ``http.server`` in a thread."""

from __future__ import annotations

import http.server
import io
import threading

import numpy as np
import pytest
from PIL import Image

from fake_encoder import FakeEncoder
from wca.classifier import WCAClassifier
from wca.images import fetch


def _png() -> bytes:
    pixels = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
    data = io.BytesIO()
    Image.fromarray(pixels).save(data, format="PNG")
    return data.getvalue()


@pytest.fixture
def server():
    """A local server: /image.png, /large (declares no length, sends 64 KB), /slow (answers
    once released), anything else 404. Yields (base URL, the release event)."""
    png, release = _png(), threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the server's name for it)
            if self.path == "/slow":
                release.wait(30)
            if self.path in ("/image.png", "/slow"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)
            elif self.path == "/large":
                self.send_response(200)
                self.end_headers()
                for _ in range(64):
                    self.wfile.write(b"x" * 1024)
            else:
                self.send_error(404)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", release
    release.set()
    httpd.shutdown()
    httpd.server_close()


def test_a_url_is_classified_as_the_same_image_from_disk(server, tmp_path):
    base, _ = server
    path = tmp_path / "image.png"
    path.write_bytes(_png())
    classifier = WCAClassifier(FakeEncoder(), ["fox", "whale"], n_crops=4)
    assert classifier(f"{base}/image.png") == classifier(str(path))
    assert classifier.predict([f"{base}/image.png"])[0].source == f"{base}/image.png"


def test_too_large_slow_and_missing_urls_are_one_line_each(server):
    base, release = server
    with pytest.raises(ValueError, match=r"/large: more than 10000 bytes, the limit"):
        fetch(f"{base}/large", max_bytes=10_000)
    with pytest.raises(ValueError, match=r"/slow: no whole answer within 0.2 s"):
        fetch(f"{base}/slow", timeout=0.2)
    release.set()
    with pytest.raises(ValueError, match=r"/nothing: HTTP 404"):
        fetch(f"{base}/nothing")
    classifier = WCAClassifier(FakeEncoder(), ["fox", "whale"], n_crops=4)
    results = dict(classifier.predict_each([f"{base}/nothing", f"{base}/image.png"]))
    assert isinstance(results[0], ValueError) and results[1].labels
