"""Description files and LLM endpoints that fail: a silent endpoint, and duplicate class keys
in a descriptions file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from fake_encoder import FakeEncoder
from fake_llm_server import FakeLLMServer
from wca.classifier import WCAClassifier
from wca.cli import main
from wca.descriptions import load_descriptions, match_descriptions
from wca.descriptions.generate import GenerationConfig, generate_descriptions, progress_path
from wca.descriptions.llm import make_client
from wca.methods.sources import load_text_sources
from wca.web.inputs import InputError, class_texts

NAMES = ["owl", "cat", "elk", "bee", "ant"]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("WCA_TEST_KEY", "sk-test")


def _describe(server: FakeLLMServer, tmp_path: Path, *options: str) -> list[str]:
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(NAMES))
    return ["describe", "--classes-file", str(classes), "--output", str(tmp_path / "out.json"),
            "--llm", "m", "--base-url", server.url, "--api-key-env", "WCA_TEST_KEY",
            "--style", "clip-d", "--concurrency", "1", "--backoff", "0.001", *options]


def _lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


# a silent LLM endpoint


def test_silent_endpoint_fails_at_the_probe(tmp_path, capsys):
    """The probe is a real one-token request with its own short timeout: a server that
    accepts and never answers stops the run at once, whatever --timeout says."""
    with FakeLLMServer(NAMES) as server:
        server.always[""] = "silent"
        args = _describe(server, tmp_path, "--timeout", "600", "--probe-timeout", "0.2")
        assert main(args) == 2
        assert server.heard_silent.is_set()
    [line] = _lines(capsys)
    assert line.startswith(f"wca: error: the LLM endpoint {server.url}")
    assert "did not answer a one-token request within 0.2 s" in line
    assert server.probes == 1 and not server.counts  # no class was asked
    assert not (tmp_path / "out.json").exists()
    assert not progress_path(tmp_path / "out.json").exists()


@pytest.mark.slow
def test_endpoint_silent_after_the_probe_stops_after_k_failed_requests(tmp_path, capsys):
    """--timeout bounds each request's read; K failed requests in a row stop the run with one
    line naming the endpoint; a run that produced nothing writes no file."""
    with FakeLLMServer(NAMES) as server:
        for name in NAMES:
            server.always[name] = "silent"
        args = _describe(server, tmp_path, "--timeout", "0.2", "--retries", "1",
                         "--max-consecutive-failures", "3", "--no-progress")
        assert main(args) == 1
    lines = _lines(capsys)
    assert lines[-1].startswith(
        f"wca: error: stopped after 3 failed requests in a row to the LLM endpoint {server.url}"
    )
    assert lines[-1].endswith("(last: timed out after 0.2 s after 2 attempts); nothing written")
    # a line per class while it worked, then the stop
    assert lines[:3] == [
        f"wca: describe {k}/5: {name}: failed: timed out after 0.2 s after 2 attempts"
        for k, name in enumerate(NAMES[:3], 1)
    ]
    assert len(lines) == 4
    assert [server.counts[name] for name in NAMES[:3]] == [2, 2, 2]  # one retry each
    assert sum(server.counts.values()) <= 7  # then at most the request already taken up
    assert not (tmp_path / "out.json").exists()
    assert not progress_path(tmp_path / "out.json").exists()


def test_a_trickling_endpoint_fails_at_the_probe_within_its_timeout(tmp_path, capsys):
    """A server that sends its headers and then a byte at a time: the probe's timeout bounds
    the whole request, not each read, so the run stops at the probe with one line."""
    with FakeLLMServer(NAMES, trickle_seconds=0.02) as server:
        server.always[""] = "trickle"
        assert main(_describe(server, tmp_path, "--probe-timeout", "0.3")) == 2
    [line] = _lines(capsys)
    assert line.startswith(f"wca: error: the LLM endpoint {server.url}")
    assert "did not answer a one-token request within 0.3 s" in line
    assert not server.counts and not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_an_endpoint_trickling_after_the_probe_stops_after_k_failed_requests(tmp_path, capsys):
    """--timeout bounds each request whole: trickled answers fail as timeouts, and K of them
    in a row stop the run with one line naming the endpoint, as for a silent server."""
    with FakeLLMServer(NAMES, trickle_seconds=0.02) as server:
        server.always.update(dict.fromkeys(NAMES, "trickle"))
        args = _describe(server, tmp_path, "--timeout", "0.3", "--retries", "0",
                         "--max-consecutive-failures", "2", "--no-progress")  # fmt: skip
        assert main(args) == 1
    lines = _lines(capsys)
    assert lines[-1] == (
        f"wca: error: stopped after 2 failed requests in a row to the LLM endpoint "
        f"{server.url}/ (last: timed out after 0.3 s); nothing written"
    )
    assert [server.counts[name] for name in NAMES[:2]] == [1, 1]


def test_a_stopped_run_keeps_what_it_finished(tmp_path, capsys):
    with FakeLLMServer(NAMES) as server:
        for name in NAMES[1:]:
            server.always[name] = "silent"
        options = ["--timeout", "0.2", "--retries", "0", "--max-consecutive-failures", "2"]
        assert main(_describe(server, tmp_path, *options, "--no-progress")) == 1
        out = tmp_path / "out.json"
        lines = _lines(capsys)
        assert lines == [
            "wca: describe 1/5: owl: 3 descriptions",
            "wca: describe 2/5: cat: failed: timed out after 0.2 s",
            "wca: describe 3/5: elk: failed: timed out after 0.2 s",
            f"wca: error: stopped after 2 failed requests in a row to the LLM endpoint "
            f"{server.url}/ (last: timed out after 0.2 s); {out} has 1 of 5 classes",
        ]
        assert list(json.loads(out.read_text())) == ["owl"]
        assert not progress_path(out).exists()

        # -q: errors only, no line per class; the finished class is not asked again
        server.reset_counts()
        assert main(["-q", *_describe(server, tmp_path, *options)]) == 1
        [line] = _lines(capsys)
        assert line.startswith("wca: error: stopped after 2 failed requests in a row")
        assert "owl" not in server.counts


def test_the_api_reports_the_stop_and_writes_nothing(tmp_path):
    with FakeLLMServer(NAMES) as server:
        server.always.update(dict.fromkeys(NAMES, "500"))
        config = GenerationConfig(
            model="m", style="clip-d", base_url=server.url, api_key_env="WCA_TEST_KEY",
            max_retries=0, concurrency=1, max_consecutive_failures=2,
        )
        report = generate_descriptions(NAMES, tmp_path / "o.json", config, progress=False)
        assert not report.ok and report.descriptions == {}
        assert report.stopped.startswith("stopped after 2 failed requests in a row")
        assert set(report.failed) == set(NAMES)  # the classes not asked are reported too
        assert not (tmp_path / "o.json").exists()

        # without the stop, every class fails by itself: still no file
        config.max_consecutive_failures = 100
        report = generate_descriptions(NAMES, tmp_path / "o.json", config, progress=False)
        assert report.stopped is None and set(report.failed) == set(NAMES)
        assert not (tmp_path / "o.json").exists()
    with pytest.raises(ValueError, match="max_consecutive_failures must be at least 1"):
        GenerationConfig(model="m", max_consecutive_failures=0)
    with pytest.raises(ValueError, match="probe_timeout must be positive"):
        GenerationConfig(model="m", probe_timeout=0)


def test_timeout_bounds_connect_read_and_the_whole_request():
    client = make_client("http://127.0.0.1:9/v1", "WCA_TEST_KEY", 7.0)
    timeout = client.timeout
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (7.0, 7.0, 7.0, 7.0)


# duplicate class keys in a descriptions file

DUPLICATED = (
    '{"brindle": ["A striped brown coat."], "skarrow": ["A grey bird."],\n'
    ' "brindle": ["A spotted coat."]}'
)


@pytest.fixture
def duplicated(tmp_path) -> Path:
    path = tmp_path / "dup.json"
    path.write_text(DUPLICATED)
    return path


def test_a_file_with_a_repeated_key_is_an_error_naming_it(duplicated, tmp_path):
    message = f"{duplicated}: duplicate key 'brindle': a JSON object keeps only the last value"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_descriptions(duplicated)
    several = tmp_path / "several.json"
    several.write_text('{"a": ["x"], "b": ["y"], "a": ["z"], "b": ["w"], "c": ["v"]}')
    with pytest.raises(ValueError, match="duplicate keys 'a', 'b': "):
        load_descriptions(several)


def test_the_api_classify_and_explain_refuse_it(duplicated, tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="duplicate key 'brindle'"):
        WCAClassifier(FakeEncoder(), ["brindle", "skarrow"], duplicated)
    fake = lambda *args, **kwargs: FakeEncoder()  # noqa: E731
    monkeypatch.setattr("wca.cli.classifier_options.load_encoder", fake)
    image = tmp_path / "dog.png"
    Image.new("RGB", (40, 32), (120, 80, 40)).save(image)
    common = [str(image), "--classes", "brindle,skarrow", "--descriptions", str(duplicated),
              "--model", "fake:any"]
    for command in (["classify", *common], ["explain", *common, "--output", str(tmp_path / "why")]):
        assert main(command) == 2
        assert _lines(capsys) == [f"wca: error: {duplicated}: duplicate key 'brindle': a JSON "
                                  "object keeps only the last value of equal keys, so name each "
                                  "key once (merge their lists)"]
    assert not (tmp_path / "why").exists()


def test_eval_refuses_it_as_a_file_and_in_a_folder(duplicated, tmp_path, capsys):
    root = tmp_path / "images"
    for name in ("brindle", "skarrow"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / name / "a.png")
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "clip-d.json").write_text(DUPLICATED)
    for descriptions, where in ((duplicated, duplicated), (folder, folder / "clip-d.json")):
        args = ["eval", "--dataset", "imagefolder", "--data-root", str(root), "--descriptions",
                str(descriptions), "--model", "open_clip:none/none", "--output",
                str(tmp_path / "r.json"), "--no-progress"]
        assert main(args) == 2
        [line] = _lines(capsys)
        assert line.startswith(f"wca: error: {where}: duplicate key 'brindle'")
    with pytest.raises(ValueError, match="duplicate key 'brindle'"):
        load_text_sources(folder, ["brindle", "skarrow"])


def test_the_web_page_and_its_api_report_it_for_an_upload(duplicated):
    with pytest.raises(InputError, match=r"^upload\.json: duplicate key 'brindle': "):
        class_texts(["brindle", "skarrow"], duplicated, {}, name="upload.json")
    with pytest.raises(InputError, match=r"^dup\.json: duplicate key 'brindle': "):
        class_texts(["brindle", "skarrow"], duplicated, {})  # the upload's own file name


def test_keys_that_match_one_class_only_loosely_are_ambiguous():
    texts = {"Owl": ["Round face."], "owl": ["Big eyes."], "cat": ["Whiskers."]}
    assert match_descriptions(["owl", "cat"], texts) == [["Big eyes."], ["Whiskers."]]
    with pytest.raises(ValueError, match="keys 'Owl', 'owl' all match class 'OWL'"):
        match_descriptions(["OWL", "cat"], texts, "t.json")


def test_check_still_lists_the_duplicates(duplicated, tmp_path, capsys):
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(["brindle", "skarrow"]))
    assert main(["descriptions", "check", str(duplicated), "--classes-file", str(classes)]) == 1
    out = capsys.readouterr().out
    assert "duplicate keys in the file: 1\n  brindle\n" in out
