"""Generate class descriptions with an LLM, the CuPL way or the CLIP-D way.

Any OpenAI-compatible chat-completions endpoint works (OpenAI, vLLM, llama.cpp server, Ollama,
LM Studio). The run is built to survive ImageNet-sized jobs:

- requests run on a bounded thread pool, each retried with backoff (:mod:`.llm`);
- each finished class goes at once into a progress file next to the output, and the output
  JSON is rewritten atomically at the end, so an interrupted run resumes where it stopped and
  never asks again for a class it already has (:mod:`.progress`);
- a class whose requests failed is reported with the reason and left out, for the next run;
  ``max_consecutive_failures`` requests failed in a row stop the run (the endpoint is gone);
- one small request probes the endpoint before the run, with a short timeout of its own, so a
  server that is not there (refused connection, unknown host), does not answer, refuses the
  key (401/403) or lacks the model (404) stops it at once instead of costing every class its
  retries.

The questions and how answers become texts are in :mod:`.prompts`. The output is exactly the
published format, ``{class: [text, ...]}`` in class-list order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from wca.descriptions.clean import dedupe
from wca.descriptions.llm import (
    ChatRunner,
    RequestFailed,
    RetryPolicy,
    make_client,
    probe_endpoint,
    resolve_api_key,
)
from wca.descriptions.progress import append_done, progress_path, read_done, write_json_atomic
from wca.descriptions.prompts import (
    CUPL_QUESTIONS,
    STYLE_DEFAULTS,
    STYLE_QUESTIONS,
    STYLE_SYSTEM_PROMPTS,
    STYLES,
    article,
    chat_messages,
    fill_template,
    load_questions,
    parse_answer,
)
from wca.extras import require
from wca.progress import progress_bar

openai = require("openai", "generating descriptions with an LLM")

# Names that lived here before the split, still importable from this module.
__all__ = [
    "CUPL_QUESTIONS",
    "GenerationConfig",
    "GenerationReport",
    "article",
    "fill_template",
    "generate_descriptions",
    "load_questions",
    "progress_path",
    "resolve_api_key",
    "write_json_atomic",
]

logger = logging.getLogger("wca")


@dataclass
class GenerationConfig:
    """Settings of a generation run; ``None`` fields take the style's default.

    ``questions`` are templates with ``{c}`` (or ``{}``) for the class name and ``{a}`` for its
    article; ``n`` answers per question come from the API's ``n`` parameter (``n_mode="param"``,
    topped up when a server returns fewer) or from ``n`` requests (``"repeat"``). Each request
    gets ``timeout`` seconds in all, from connecting to the last byte of its answer, and up to
    ``max_retries`` retries, waiting ``backoff_base * 2**k`` seconds (jittered, at most
    ``backoff_max``) or what ``Retry-After`` asks (at most ``max_retry_after``). The probe
    before the run waits at most ``probe_timeout`` seconds (and at most ``timeout``); the run
    stops after ``max_consecutive_failures`` requests in a row failed for good.
    """

    model: str
    style: str = "cupl"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    questions: Sequence[str] | None = None
    system_prompt: str | None = None
    n: int | None = None
    n_mode: str = "param"
    temperature: float | None = None
    max_tokens: int | None = None
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 300.0
    probe_timeout: float = 30.0
    max_consecutive_failures: int = 3

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")
        if self.n_mode not in ("param", "repeat"):
            raise ValueError(f"n_mode must be 'param' or 'repeat', got {self.n_mode!r}")
        defaults = STYLE_DEFAULTS[self.style]
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.questions is None:
            self.questions = STYLE_QUESTIONS[self.style]
        self.questions = tuple(self.questions)
        if not self.questions:
            raise ValueError("questions: need at least one question template")
        for question in self.questions:
            if "{c}" not in question and "{}" not in question:
                raise ValueError(f"question template {question!r} has no {{c}} for the class name")
        if self.system_prompt is None:
            self.system_prompt = STYLE_SYSTEM_PROMPTS[self.style]
        for name in ("n", "concurrency", "max_tokens", "max_consecutive_failures"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("timeout", "backoff_base", "backoff_max", "max_retry_after", "max_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.probe_timeout > 0:
            raise ValueError(f"probe_timeout must be positive, got {self.probe_timeout}")
        if not self.model:
            raise ValueError("model: name the model to ask (e.g. gpt-4o-mini, llama3.1:8b)")

    def messages(self, classname: str, question: str) -> list[dict[str, str]]:
        """The chat messages that ask ``question`` about ``classname``."""
        return chat_messages(self.style, self.system_prompt, classname, question)

    def parse(self, answer: str, truncated: bool) -> list[str]:
        """Descriptions from one answer, in the style's shape."""
        return parse_answer(self.style, answer, truncated)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.max_retries, self.backoff_base, self.backoff_max, self.max_retry_after
        )


@dataclass
class GenerationReport:
    """What a run did: the descriptions now on disk and the classes that failed, with why."""

    descriptions: dict[str, list[str]]
    generated: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None  # why the run stopped early; None when it ran to the end

    @property
    def ok(self) -> bool:
        return not self.failed and self.stopped is None


def generate_descriptions(
    classnames: Sequence[str],
    out: str | Path,
    config: GenerationConfig,
    *,
    client: openai.OpenAI | None = None,
    overwrite: bool = False,
    postprocess: Callable[[dict[str, list[str]]], dict[str, list[str]]] | None = None,
    progress: bool = True,
    probe: bool = True,
) -> GenerationReport:
    """Ask the LLM about every class not yet in ``out`` and write ``{class: [text, ...]}``.

    Repeated class names are asked about once. ``postprocess`` (e.g. near-duplicate removal)
    runs on the merged result before it is written; a run that has no class at all writes no
    file. Interrupting (Ctrl-C) keeps every finished class on disk. Returns a report;
    ``report.failed`` maps classes to reasons, ``report.stopped`` says why a run stopped early
    (a fatal answer, or ``max_consecutive_failures`` failed requests in a row).
    ``probe``: check the endpoint with :func:`probe_endpoint` first (when there is work).
    ``progress``: a progress bar on stderr; without it, one ``wca`` log line (INFO) per class.
    """
    out = Path(out)
    names = list(dict.fromkeys(classnames))
    if not names:
        raise ValueError("no class names to describe")
    partial = progress_path(out)
    if overwrite:
        out.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    done = read_done(out, set(names))
    report = GenerationReport(descriptions={}, resumed=[c for c in names if c in done])
    todo = [c for c in names if c not in done]

    own_client = client is None
    client = client or make_client(config.base_url, config.api_key_env, config.timeout)
    try:
        if probe and todo:
            probe_timeout = min(config.timeout, config.probe_timeout)
            probe_endpoint(client, config.model, probe_timeout, config.api_key_env)
        try:
            if todo:
                out.parent.mkdir(parents=True, exist_ok=True)
                run = _Run(client, config, len(names), done, report, progress)
                with partial.open("a", encoding="utf-8") as progress_file:
                    run.ask(todo, progress_file)
        finally:
            merged = {c: done[c] for c in names if c in done}
            if merged and postprocess is not None:
                merged = postprocess(merged)
            if merged:
                write_json_atomic(out, merged)
            partial.unlink(missing_ok=True)
            report.descriptions = merged
    finally:
        if own_client:
            client.close()
    return report


class _Run:
    """The requests of one run on a thread pool, and what their answers make of each class."""

    def __init__(
        self,
        client: openai.OpenAI,
        config: GenerationConfig,
        total: int,
        done: dict[str, list[str]],
        report: GenerationReport,
        progress: bool,
    ) -> None:
        self.client = client
        self.config = config
        self.total = total
        self.done = done  # filled in as classes finish
        self.report = report
        self.stop = threading.Event()
        self.failures_in_a_row = 0
        self.finished = len(done)
        self.progress = progress

    def ask(self, todo: list[str], progress_file: TextIO) -> None:
        """Ask for every class in ``todo``, appending each finished one to ``progress_file``."""
        config = self.config
        sampling = {
            "model": config.model,
            "temperature": config.temperature,
            "max_tokens": config.max_tokens,
        }
        chat = ChatRunner(self.client, sampling, config.timeout, config.retry_policy, self.stop)
        plans = {c: _plan(c, config) for c in todo}
        self.todo = todo
        self.answers: dict[str, list] = {c: [None] * len(plans[c]) for c in todo}
        self.pending = {c: len(plans[c]) for c in todo}
        self.bar = progress_bar(
            total=self.total,
            initial=self.finished,
            unit="class",
            desc="describe",
            enabled=self.progress,
        )
        executor = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="wca-llm")
        try:
            self.futures = {
                executor.submit(_ask, chat, config.n_mode, r): r for c in todo for r in plans[c]
            }
            self.waiting = set(self.futures)
            while self.waiting and not self.stop.is_set():
                finished, self.waiting = wait(self.waiting, return_when=FIRST_COMPLETED)
                for future in finished:
                    if self.stop.is_set():
                        break
                    if not future.cancelled():
                        self._take(self.futures[future], future, progress_file)
        finally:
            # requests in flight end within their timeout; their retries are not waited for
            self.stop.set()
            executor.shutdown(wait=False, cancel_futures=True)
            self.bar.close()

    def _take(self, request: _Request, future: Future, progress_file: TextIO) -> None:
        """Record one finished request; a class is done when all its requests are."""
        name = request.classname
        try:
            result, retries = future.result()
        except RequestFailed as error:
            self._request_failed(name, error)
            return
        self.failures_in_a_row = 0
        self.report.retries[name] = self.report.retries.get(name, 0) + retries
        if name in self.report.failed:
            return
        self.answers[name][request.slot] = result
        self.pending[name] -= 1
        if self.pending[name]:
            return
        parse = self.config.parse
        texts = dedupe(t for slot in self.answers[name] for a, cut in slot for t in parse(a, cut))
        if not texts:
            n_answers = sum(len(slot) for slot in self.answers[name])
            self._class_failed(name, f"no usable description in {n_answers} answers")
            return
        self.done[name] = texts
        self.report.generated.append(name)
        append_done(progress_file, name, texts)
        self._finished(name, f"{len(texts)} descriptions")

    def _request_failed(self, name: str, error: RequestFailed) -> None:
        """A request that failed for good: its class fails; a fatal answer, or
        ``max_consecutive_failures`` failures in a row, stop the run."""
        self.report.retries[name] = self.report.retries.get(name, 0) + error.retries
        self.failures_in_a_row += 1
        if name not in self.report.failed:
            self._class_failed(name, error.reason)
        where = f"the LLM endpoint {self.client.base_url}"
        if error.fatal:
            self._stop(f"{where} refused a request ({error.reason})")
        elif self.failures_in_a_row >= self.config.max_consecutive_failures:
            self._stop(
                f"stopped after {self.failures_in_a_row} failed requests in a row to {where} "
                f"(last: {error.reason})"
            )

    def _class_failed(self, name: str, reason: str) -> None:
        self.report.failed[name] = reason
        for future in list(self.waiting):  # the class's requests still queued
            if self.futures[future].classname == name:
                future.cancel()
        self._finished(name, f"failed: {reason}")

    def _finished(self, name: str, outcome: str) -> None:
        self.finished += 1
        self.bar.update(1)
        if not self.progress:
            logger.info("describe %d/%d: %s: %s", self.finished, self.total, name, outcome)

    def _stop(self, reason: str) -> None:
        """Stop the run: no new request is sent, and every class not done is reported."""
        self.stop.set()
        self.report.stopped = reason
        for name in self.todo:
            if name not in self.done:
                self.report.failed.setdefault(name, f"not done: {reason}")


@dataclass
class _Request:
    """``count`` answers to one question about one class."""

    classname: str
    slot: int
    messages: list[dict[str, str]]
    count: int


def _ask(chat: ChatRunner, n_mode: str, request: _Request) -> tuple[list[tuple[str, bool]], int]:
    """All ``request.count`` answers and the retries they took: one request with ``n``, topped
    up if the server returns fewer choices, or ``count`` single requests in "repeat" mode."""
    answers: list[tuple[str, bool]] = []
    retries = 0
    while len(answers) < request.count:
        n = request.count - len(answers) if n_mode == "param" else 1
        try:
            got, used = chat.complete(request.messages, n)
        except RequestFailed as error:
            error.retries += retries
            raise
        answers += got[:n]
        retries += used
    return answers, retries


def _plan(classname: str, config: GenerationConfig) -> list[_Request]:
    """The requests for one class, in output order (question by question)."""
    requests: list[_Request] = []
    for question in config.questions:
        messages = config.messages(classname, question)
        if config.n_mode == "param":
            requests.append(_Request(classname, len(requests), messages, config.n))
        else:
            start = len(requests)
            requests += [_Request(classname, start + k, messages, 1) for k in range(config.n)]
    return requests
