"""Fetching published description sets from a local HTTP server, with verification."""

from __future__ import annotations

import functools
import json
import shutil
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from wca.cli import main
from wca.descriptions import fetch as fetch_module
from wca.descriptions.fetch import (
    FetchError,
    build_registry,
    default_cache_dir,
    fetch,
    published_file,
    published_sets,
)


class _Server:
    """A static file server on 127.0.0.1 that counts the requests it gets."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def no_mirror_env(monkeypatch):
    monkeypatch.delenv(fetch_module.URL_ENV, raising=False)


@pytest.fixture
def mirror(descriptors_dir):
    with _Server(descriptors_dir) as server:
        yield server


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_registry_matches_the_shared_descriptors(descriptors_dir):
    shipped = json.loads(Path(fetch_module.__file__).with_name("published.json").read_text())
    assert shipped == build_registry(descriptors_dir)
    sets = published_sets()
    assert {"cupl", "clip-d", "clip-e"} <= set(sets["cub"])
    assert "bird_prompts_full" in sets["cupl-original"]


def test_upstream_urls():
    assert published_file("cub", "cupl").url == (
        "https://raw.githubusercontent.com/tmlr-group/WCA/main/prompts/cub/cupl.json"
    )
    assert published_file("cupl-original", "bird_prompts_full").url == (
        "https://raw.githubusercontent.com/sarahpratt/CuPL/main/all_prompts/bird_prompts_full.json"
    )
    assert published_file("cub", "clip-d", "http://mirror/x/").url == (
        "http://mirror/x/cub/clip-d.json"
    )


def test_fetch_verifies_and_then_reuses_the_cache(mirror, descriptors_dir, tmp_path):
    path = fetch("cub", "clip-d", tmp_path, base_url=mirror.url)
    assert path == tmp_path / "cub" / "clip-d.json"
    assert path.read_bytes() == (descriptors_dir / "cub" / "clip-d.json").read_bytes()
    assert mirror.requests == ["/cub/clip-d.json"]
    # a verified cached file is used with no network at all
    assert fetch("cub", "clip-d", tmp_path, base_url=_closed_port_url()) == path
    assert len(mirror.requests) == 1
    assert list(tmp_path.rglob("*.tmp")) == []


def test_cupl_original_file(mirror, descriptors_dir, tmp_path):
    path = fetch("cupl-original", "pet_prompts_base", tmp_path, base_url=mirror.url)
    expected = descriptors_dir / "cupl-original" / "pet_prompts_base.json"
    assert path.read_bytes() == expected.read_bytes()


@pytest.mark.parametrize("tamper", ["flip", "append", "truncate"])
def test_tampered_file_is_rejected_and_not_kept(descriptors_dir, tmp_path, tamper):
    served = tmp_path / "served"
    (served / "cub").mkdir(parents=True)
    data = bytearray((descriptors_dir / "cub" / "clip-d.json").read_bytes())
    if tamper == "flip":
        data[100] ^= 0x01
    elif tamper == "append":
        data += b" "
    else:
        data = data[:-10]
    (served / "cub" / "clip-d.json").write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with _Server(served) as server, pytest.raises(FetchError, match="not kept"):
        fetch("cub", "clip-d", cache, base_url=server.url)
    assert not (cache / "cub" / "clip-d.json").exists()
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_corrupt_cached_file_is_downloaded_again(mirror, descriptors_dir, tmp_path):
    target = tmp_path / "cub" / "cupl.json"
    target.parent.mkdir()
    target.write_text("{}")
    assert fetch("cub", "cupl", tmp_path, base_url=mirror.url) == target
    assert target.read_bytes() == (descriptors_dir / "cub" / "cupl.json").read_bytes()
    assert mirror.requests == ["/cub/cupl.json"]


def test_offline_fails_fast_and_says_where_to_put_the_file(descriptors_dir, tmp_path, monkeypatch):
    attempts = []
    stream = fetch_module.httpx.stream
    monkeypatch.setattr(
        fetch_module.httpx, "stream", lambda *a, **k: attempts.append(a) or stream(*a, **k)
    )
    with pytest.raises(FetchError) as error:
        fetch("cub", "clip-e", tmp_path, base_url=_closed_port_url(), connect_timeout=1.0)
    assert len(attempts) == 1  # fails at the first refused connection: no retry loop
    message = str(error.value)
    destination = tmp_path / "cub" / "clip-e.json"
    assert str(destination) in message and "by hand" in message
    # following the instructions works with no network
    destination.parent.mkdir()
    shutil.copy(descriptors_dir / "cub" / "clip-e.json", destination)
    assert fetch("cub", "clip-e", tmp_path, base_url=_closed_port_url()) == destination


def test_missing_upstream_file_and_unknown_names(tmp_path):
    with _Server(tmp_path / "empty") as server, pytest.raises(FetchError, match="HTTP 404"):
        fetch("cub", "cupl", tmp_path / "cache", base_url=server.url)
    with pytest.raises(ValueError, match="unknown dataset 'birds'"):
        fetch("birds", "cupl", tmp_path)
    with pytest.raises(ValueError, match="available: .*clip-d"):
        fetch("cub", "poems", tmp_path)


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WCA_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "descriptions"
    monkeypatch.delenv("WCA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "wca" / "descriptions"


def test_cli_fetch(mirror, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WCA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(fetch_module.URL_ENV, mirror.url)
    assert main(["descriptions", "fetch", "--dataset", "cub", "--set", "cupl"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "descriptions" / "cub" / "cupl.json")
    args = ["descriptions", "fetch", "--dataset", "dtd", "--set", "clip-e", "--dir",
            str(tmp_path / "d"), "--base-url", _closed_port_url()]
    assert main(args) == 1
    assert "by hand" in capsys.readouterr().err


def test_failed_fetch_leaves_no_empty_folder(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(FetchError):
        fetch("cub", "clip-e", cache, base_url=_closed_port_url(), connect_timeout=1.0)
    assert not cache.exists()
    (tmp_path / "kept").mkdir()  # a folder that was there before stays
    with pytest.raises(FetchError):
        fetch("cub", "clip-e", tmp_path / "kept", base_url=_closed_port_url())
    assert list((tmp_path / "kept").iterdir()) == []


def test_file_url_mirror_is_accepted(descriptors_dir, tmp_path):
    path = fetch("cub", "cupl", tmp_path / "c", base_url=descriptors_dir.resolve().as_uri())
    assert path.read_bytes() == (descriptors_dir / "cub" / "cupl.json").read_bytes()
    with pytest.raises(FetchError, match="No such file"):
        fetch("cub", "cupl", tmp_path / "d", base_url=(tmp_path / "nowhere").as_uri())
    assert not (tmp_path / "d").exists()


def _wca_imports(module: str) -> set[str]:
    """The wca modules that ``module``'s source imports (at any depth of its code)."""
    import ast

    from wca.descriptions import io

    path = Path(io.__file__).parents[1].joinpath(*module.split(".")[1:]).with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wca"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("wca")}
    return found


def test_no_import_circle_between_dataset_names_and_fetch(monkeypatch, tmp_path):
    """Dataset spellings and cache folders come from leaf modules, so that neither side
    imports the other."""
    assert not {m for m in _wca_imports("wca.descriptions.fetch") if m.startswith("wca.datasets")}
    assert "wca.descriptions.fetch" not in _wca_imports("wca.datasets.names")
    assert _wca_imports("wca.dataset_names") == set()
    assert published_file("oxford_pets", "cupl").path == "oxford_pet/cupl.json"
    assert published_file("Places365", "cupl").path == "place365/cupl.json"

    from wca.datasets import default_descriptions_dir

    monkeypatch.setenv("WCA_CACHE_DIR", str(tmp_path))
    assert default_descriptions_dir() == default_cache_dir() == tmp_path / "descriptions"
