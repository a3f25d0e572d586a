"""LLM description generation against a local fake chat-completions server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_llm_server import FakeLLMServer
from wca.cli import main
from wca.descriptions.generate import (
    CUPL_QUESTIONS,
    GenerationConfig,
    article,
    fill_template,
    generate_descriptions,
    load_questions,
    progress_path,
    resolve_api_key,
)

CLASSES = [f"bird {i:02d}" for i in range(50)]
KEY = "sk-test-secret-do-not-store"


@pytest.fixture
def server():
    with FakeLLMServer(CLASSES + ["owl", "Eagle", "umbrella", "cat"]) as srv:
        yield srv


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("WCA_TEST_KEY", KEY)


def _asked(server: FakeLLMServer) -> list[dict]:
    """The logged requests about a class (not the endpoint probe)."""
    return [record for record in server.log if record["class"]]


def config(server: FakeLLMServer, **options) -> GenerationConfig:
    settings = {
        "model": "fake-model",
        "base_url": server.url,
        "api_key_env": "WCA_TEST_KEY",
        "n": 2,
        "timeout": 5.0,
        "max_retries": 3,
        "backoff_base": 0.001,
        "concurrency": 8,
    }
    settings.update(options)
    return GenerationConfig(**settings)


def test_article_follows_the_first_letter():
    assert [article(c) for c in ("owl", "Eagle", "umbrella", "cat", " apple")] == [
        "an", "an", "an", "a", "an",
    ]
    assert fill_template("Describe {a} {c}", "owl") == "Describe an owl"
    assert fill_template("A photo of {}.", "cat") == "A photo of cat."


def test_cupl_prompts_sent_to_the_server(server, tmp_path):
    report = generate_descriptions(
        ["owl", "cat"], tmp_path / "out.json", config(server, n=3), progress=False
    )
    assert report.ok
    prompts = {r["body"]["messages"][-1]["content"] for r in server.log if r["class"] == "owl"}
    assert prompts == {q.replace("{a}", "an").replace("{c}", "owl") for q in CUPL_QUESTIONS}
    body = _asked(server)[0]["body"]
    assert body["n"] == 3 and body["model"] == "fake-model"
    assert body["temperature"] == 0.99 and body["max_tokens"] == 50
    assert server.counts == {"owl": 5, "cat": 5}
    assert len(report.descriptions["owl"]) == 15  # 5 questions x 3 answers, all distinct


@pytest.mark.slow
def test_fifty_classes_with_injected_failures(server, tmp_path, capsys):
    failures = {
        "bird 03": ("429", "500"),
        "bird 04": ("malformed", "drop"),
        "bird 11": ("nochoices", "500", "429"),
        "bird 49": ("drop",),
    }
    for name, behaviours in failures.items():
        server.script(name, *behaviours)
    out = tmp_path / "descriptions.json"
    report = generate_descriptions(CLASSES, out, config(server))

    assert report.ok, report.failed
    assert "50/50" in capsys.readouterr().err  # the progress bar
    data = json.loads(out.read_text())
    assert list(data) == CLASSES  # every class exactly once, in class-file order
    assert all(len(texts) == 10 for texts in data.values())  # 5 questions x n=2
    expected = {name: 5 + len(failures.get(name, ())) for name in CLASSES}
    assert dict(server.counts) == expected
    assert {k: v for k, v in report.retries.items() if v} == {
        name: len(b) for name, b in failures.items()
    }
    assert not progress_path(out).exists()
    # the key went to the server and nowhere else
    assert {r["authorization"] for r in server.log} == {f"Bearer {KEY}"}
    assert KEY not in out.read_text()


def test_permanent_failure_is_reported_and_a_rerun_asks_only_for_it(server, tmp_path):
    server.always["bird 07"] = "500"
    out = tmp_path / "d.json"
    cfg = config(server, style="clip-d", n=1)
    report = generate_descriptions(CLASSES[:20], out, cfg, progress=False)
    assert list(report.failed) == ["bird 07"]
    assert "HTTP 500" in report.failed["bird 07"] and "4 attempts" in report.failed["bird 07"]
    assert server.counts["bird 07"] == cfg.max_retries + 1
    assert list(json.loads(out.read_text())) == [c for c in CLASSES[:20] if c != "bird 07"]

    server.reset_counts()
    del server.always["bird 07"]
    report = generate_descriptions(CLASSES[:20], out, cfg, progress=False)
    assert report.ok and report.generated == ["bird 07"] and len(report.resumed) == 19
    assert dict(server.counts) == {"bird 07": 1}
    assert list(json.loads(out.read_text())) == CLASSES[:20]
    # CLIP-D answers became short descriptor phrases
    assert report.descriptions["bird 07"] == [f"feature {k} of the bird 07" for k in (1, 2, 3)]
    assert _asked(server)[0]["body"]["messages"][-1]["content"] == (
        "What are useful features for distinguishing a bird 07 in a photo?"
    )


def test_resume_from_progress_file_left_by_a_killed_run(server, tmp_path):
    out = tmp_path / "d.json"
    done = {name: [f"Old text about {name}."] for name in CLASSES[:10]}
    lines = [json.dumps({"class": n, "descriptions": t}) for n, t in done.items()]
    progress_path(out).write_text("\n".join(lines) + '\n{"class": "bird 10", "descri')
    report = generate_descriptions(CLASSES, out, config(server, style="clip-d"), progress=False)
    assert report.ok and report.resumed == CLASSES[:10]
    assert set(server.counts) == set(CLASSES[10:])  # nothing asked for the done classes
    data = json.loads(out.read_text())
    assert list(data) == CLASSES and data["bird 00"] == ["Old text about bird 00."]


def test_timeout_is_retried(tmp_path):
    with FakeLLMServer(["owl"], slow_seconds=2.0) as srv:
        srv.script("owl", "slow")
        cfg = config(srv, style="clip-d", n=1, timeout=0.4)
        report = generate_descriptions(["owl"], tmp_path / "o.json", cfg, progress=False)
    assert report.ok and report.retries == {"owl": 1} and srv.counts["owl"] == 2


def test_postprocess_runs_on_the_merged_result(server, tmp_path):
    out = tmp_path / "o.json"
    progress_path(out).write_text(json.dumps({"class": "owl", "descriptions": ["A.", "B."]}))
    seen = []

    def keep_first(descriptions):
        seen.append(list(descriptions))
        return {name: texts[:1] for name, texts in descriptions.items()}

    cfg = config(server, style="clip-d", n=1)
    generate_descriptions(["owl", "cat"], out, cfg, postprocess=keep_first, progress=False)
    assert seen == [["owl", "cat"]] and dict(server.counts) == {"cat": 1}
    assert json.loads(out.read_text()) == {"owl": ["A."], "cat": ["feature 1 of the cat"]}


@pytest.mark.slow
def test_retry_after_is_honoured(tmp_path):
    with FakeLLMServer(["owl"], retry_after="1") as srv:
        srv.script("owl", "429")
        cfg = config(srv, style="clip-d", backoff_base=0.0)
        assert generate_descriptions(["owl"], tmp_path / "o.json", cfg, progress=False).ok
        first, second = (r["time"] for r in _asked(srv))
    assert srv.counts["owl"] == 2 and second - first >= 0.95


def test_wrong_key_stops_the_run(server, tmp_path):
    server.script("bird 00", "401")
    cfg = config(server, style="clip-d", concurrency=1)
    report = generate_descriptions(CLASSES, tmp_path / "o.json", cfg, progress=False)
    assert "HTTP 401" in report.failed["bird 00"]
    assert len(report.descriptions) + len(report.failed) == len(CLASSES)
    assert sum(server.counts.values()) < len(CLASSES)  # stopped early, no retries of a 401
    assert server.counts["bird 00"] == 1


def test_server_that_ignores_n_is_topped_up(tmp_path):
    with FakeLLMServer(["owl"], max_choices=1) as srv:
        cfg = config(srv, n=3)
        report = generate_descriptions(["owl"], tmp_path / "o.json", cfg, progress=False)
    assert srv.counts["owl"] == 15 and len(report.descriptions["owl"]) == 15
    prompt = "What does an owl look like?"
    sent = [r["body"] for r in srv.log if r["body"]["messages"][-1]["content"] == prompt]
    assert [body.get("n") for body in sent] == [3, 2, None]


def test_repeat_mode_sends_one_request_per_answer(server, tmp_path):
    cfg = config(server, n=2, n_mode="repeat")
    report = generate_descriptions(["owl"], tmp_path / "o.json", cfg, progress=False)
    assert server.counts["owl"] == 10 and all("n" not in r["body"] for r in server.log)
    assert len(report.descriptions["owl"]) == 10


def test_class_with_only_empty_answers_fails(tmp_path):
    with FakeLLMServer(["owl", "cat"], answer=lambda c, p, i: "" if c == "owl" else "Fine.") as srv:
        report = generate_descriptions(
            ["owl", "cat"], tmp_path / "o.json", config(srv, n=1), progress=False
        )
    assert report.failed == {"owl": "no usable description in 5 answers"}
    assert report.descriptions == {"cat": ["Fine."]}


def test_user_questions_and_validation(server, tmp_path):
    cfg = config(server, questions=["Draw {a} {c}"], n=1, system_prompt="")
    report = generate_descriptions(["umbrella"], tmp_path / "o.json", cfg, progress=False)
    assert report.ok
    asked = _asked(server)[0]["body"]["messages"]
    assert asked == [{"role": "user", "content": "Draw an umbrella"}]
    with pytest.raises(ValueError, match="no \\{c\\}"):
        config(server, questions=["Describe it"])
    with pytest.raises(ValueError, match="style"):
        config(server, style="poem")
    with pytest.raises(ValueError, match="n must be at least 1"):
        config(server, n=0)


def test_output_with_unknown_classes_is_refused(server, tmp_path):
    out = tmp_path / "o.json"
    out.write_text(json.dumps({"dragon": ["Big."]}))
    with pytest.raises(ValueError, match="dragon"):
        generate_descriptions(["owl"], out, config(server), progress=False)
    report = generate_descriptions(["owl"], out, config(server), overwrite=True, progress=False)
    assert list(report.descriptions) == ["owl"]


def test_api_key_resolution(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR"):
        resolve_api_key("NO_SUCH_KEY_VAR", None)
    assert resolve_api_key("NO_SUCH_KEY_VAR", "http://localhost:8000/v1") == "not-needed"
    assert resolve_api_key("WCA_TEST_KEY", None) == KEY


def _write_classes(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(names))
    return path


def test_cli_reports_failures_with_a_nonzero_exit(server, tmp_path, capsys):
    server.always["bird 02"] = "500"
    classes = _write_classes(tmp_path, CLASSES[:5])
    out = tmp_path / "out.json"
    args = ["describe", "--classes-file", str(classes), "--output", str(out), "--style", "clip-d",
            "--model", "m", "--base-url", server.url, "--api-key-env", "WCA_TEST_KEY",
            "--retries", "1", "--backoff", "0.001", "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "1 classes failed" in err and "bird 02: HTTP 500" in err and KEY not in err
    del server.always["bird 02"]
    assert main(args) == 0
    assert list(json.loads(out.read_text())) == CLASSES[:5]


def test_killed_cli_run_resumes_without_asking_again(tmp_path):
    """A run killed mid-way (SIGKILL: no clean-up at all) loses no finished class."""
    names = CLASSES[:12]
    classes = _write_classes(tmp_path, names)
    out = tmp_path / "out.json"
    with FakeLLMServer(names) as srv:
        srv.always.update(dict.fromkeys(names[3:], "silent"))  # the run waits at the 4th class
        command = [sys.executable, "-m", "wca", "describe", "--classes-file", str(classes),
                   "--output", str(out), "--style", "clip-d", "--llm", "m", "--base-url",
                   srv.url, "--concurrency", "1", "--no-progress"]
        env = {**os.environ, "OPENAI_API_KEY": ""}
        process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        # waits for events, not a deadline: the 4th class asked (so three are done), then the
        # third on disk; a process that died ends the waits
        while process.poll() is None and not srv.heard_silent.wait(0.05):
            pass
        partial = progress_path(out)
        while process.poll() is None and partial.read_text().count("\n") < 3:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not out.exists()
        finished = [json.loads(line)["class"] for line in partial.read_text().splitlines()]
        asked_before = dict(srv.counts)
        srv.reset_counts()
        srv.always.clear()
        cfg = GenerationConfig(model="m", style="clip-d", base_url=srv.url)
        report = generate_descriptions(names, out, cfg, progress=False)
    assert finished == names[:3] and report.ok
    assert not set(finished) & set(srv.counts)  # finished classes were not asked again
    assert all(asked_before[name] == 1 for name in finished)
    assert list(json.loads(out.read_text())) == names


def test_question_files(tmp_path):
    (tmp_path / "q.json").write_text(json.dumps(["Draw {a} {c}.", "Paint {c}."]))
    (tmp_path / "q.txt").write_text("Draw {a} {c}.\n\n  Paint {c}.  \n")
    (tmp_path / "bad.json").write_text(json.dumps({"q": "Draw {c}"}))
    assert load_questions(tmp_path / "q.json") == load_questions(tmp_path / "q.txt")
    with pytest.raises(ValueError, match="bad.json: expected a JSON list"):
        load_questions(tmp_path / "bad.json")


def test_cli_without_api_key_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    classes = _write_classes(tmp_path, ["owl"])
    args = ["describe", "--classes-file", str(classes), "--output", str(tmp_path / "o.json"),
            "--model", "gpt-4o-mini"]
    assert main(args) == 2
    assert "set the environment variable OPENAI_API_KEY" in capsys.readouterr().err


def _closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_refused_connection_fails_before_the_run(tmp_path, capsys):
    classes = _write_classes(tmp_path, CLASSES[:3])
    out = tmp_path / "o.json"
    # with retries this slow, any retry of a refused connection would hang the test
    args = ["describe", "--classes-file", str(classes), "--output", str(out), "--llm", "m",
            "--base-url", _closed_port_url(), "--api-key-env", "WCA_TEST_KEY",
            "--retries", "5", "--backoff", "600", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wca: error: cannot reach the LLM endpoint http://127.0.0.1:")
    assert "\n" not in err and not out.exists()


@pytest.mark.parametrize(("behaviour", "message"), [
    ("401", "HTTP 401.*check the API key in \\$WCA_TEST_KEY"),
    ("404", "HTTP 404.*is the model name 'fake-model' right"),
])
def test_wrong_key_or_model_stops_at_the_probe(server, tmp_path, behaviour, message):
    server.always[""] = behaviour
    cfg = config(server, backoff_base=600)
    with pytest.raises(ValueError, match=message):
        generate_descriptions(CLASSES[:3], tmp_path / "o.json", cfg, progress=False)
    assert server.probes == 1 and sum(server.counts.values()) == 0  # no class asked


def test_probe_lets_rate_limits_and_server_errors_retry(server, tmp_path):
    server.script("", "429")
    report = generate_descriptions(CLASSES[:2], tmp_path / "o.json", config(server), progress=False)
    assert report.ok and server.probes == 1
    server.script("", "500")
    report = generate_descriptions(CLASSES[:3], tmp_path / "o.json", config(server), progress=False)
    assert report.ok and server.probes == 2
    generate_descriptions(CLASSES[:3], tmp_path / "o.json", config(server), progress=False)
    assert server.probes == 2  # nothing left to ask: no probe


def test_describe_llm_with_model_as_deprecated_alias(server, tmp_path, capsys):
    classes = _write_classes(tmp_path, ["owl"])
    base = ["describe", "--classes-file", str(classes), "--style", "clip-d",
            "--base-url", server.url, "--api-key-env", "WCA_TEST_KEY", "--no-progress"]
    assert main([*base, "--output", str(tmp_path / "a.json"), "--llm", "m1"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "b.json"), "--model", "m2"]) == 0
    assert "--model is deprecated, use --llm" in capsys.readouterr().err
    assert [r["body"]["model"] for r in server.log if r["class"]] == ["m1", "m2"]
    assert main([*base, "--output", str(tmp_path / "c.json")]) == 2
    assert "--llm is required" in capsys.readouterr().err
