"""Generate class descriptions with an LLM, the CuPL way or the CLIP-D way.

Any OpenAI-compatible chat-completions endpoint works (OpenAI, vLLM, llama.cpp server, Ollama,
LM Studio). The run is built to survive ImageNet-sized jobs:

- requests run on a bounded thread pool; each is retried with exponential backoff on timeouts,
  dropped connections, 429 (waiting as long as ``Retry-After`` says), 5xx and malformed
  responses. The client's own retries are off, so every attempt is visible and counted here;
- each finished class is appended at once to a JSONL progress file next to the output
  (``<out>.partial.jsonl``), and the output JSON is rewritten atomically at the end, so an
  interrupted run resumes where it stopped and never asks again for a class it already has;
- a class whose requests failed is reported with the reason and left out, for the next run.

The output is exactly the published format, ``{class: [text, ...]}`` in class-list order.
The API key is read from the environment and only handed to the client.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from tqdm.auto import tqdm

from wca.descriptions.clean import dedupe, parse_descriptors, parse_sentences
from wca.descriptions.io import load_descriptions, read_json, read_text
from wca.files import write_atomic

STYLES = ("cupl", "clip-d")

# CuPL's five questions (Pratt et al., 2023). {a} is the article, {c} the class name.
CUPL_QUESTIONS = (
    "Describe what {a} {c} looks like",
    "How can you identify {a} {c}?",
    "What does {a} {c} look like?",
    "Describe an image from the internet of {a} {c}",
    "A caption of an image of {a} {c}:",
)
CUPL_SYSTEM_PROMPT = (
    "You write short, factual descriptions of what things look like. "
    "Answer in one or two plain sentences, with no list and no preamble."
)

# CLIP-D's question (Menon & Vondrick, 2023), asked after one worked example so that chat
# models answer with the same bulleted shape as the original few-shot completion prompt.
CLIPD_QUESTION = "What are useful features for distinguishing a {c} in a photo?"
CLIPD_SYSTEM_PROMPT = (
    "You list the visual features that tell an object apart in a photo. Answer with one "
    "sentence ending in a colon, then one short noun phrase per line, each starting with '- '."
)
CLIPD_EXAMPLE = (
    (
        "user",
        "What are useful features for distinguishing a zebra in a photo?",
    ),
    (
        "assistant",
        "There are several useful visual features to tell there is a zebra in a photo:\n"
        "- a horse-like animal\n- black and white stripes\n- a short, upright mane\n"
        "- a tufted tail\n- dark hooves",
    ),
)

# Defaults per style: answers per question, temperature, max tokens (CuPL sampled 10 answers
# at temperature 0.99 with 50 tokens; CLIP-D asked once, greedily).
_STYLE_DEFAULTS = {
    "cupl": {"n": 10, "temperature": 0.99, "max_tokens": 50},
    "clip-d": {"n": 1, "temperature": 0.0, "max_tokens": 200},
}
_FATAL_STATUS = (401, 403, 404)
_RETRY_STATUS = (408, 409, 429)
PLACEHOLDER_API_KEY = "not-needed"


def article(classname: str) -> str:
    """The indefinite article CuPL uses: "an" before a vowel letter, "a" otherwise."""
    return "an" if classname.strip()[:1].lower() in "aeiou" else "a"


def fill_template(template: str, classname: str) -> str:
    """Put the class name (``{c}`` or ``{}``) and its article (``{a}``) into a question."""
    return (
        template.replace("{a}", article(classname))
        .replace("{c}", classname)
        .replace("{}", classname)
    )


def load_questions(path: str | Path) -> list[str]:
    """Question templates from a JSON list of strings or a text file with one per line."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        questions = read_json(path)
        if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
            raise ValueError(f"{path}: expected a JSON list of question templates (strings)")
    else:
        questions = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    return questions


@dataclass
class GenerationConfig:
    """Settings of a generation run; ``None`` fields take the style's default.

    ``questions`` are templates with ``{c}`` (or ``{}``) for the class name and ``{a}`` for its
    article; ``n`` answers per question come from the API's ``n`` parameter (``n_mode="param"``,
    topped up when a server returns fewer) or from ``n`` requests (``"repeat"``). Each request
    gets ``timeout`` seconds and up to ``max_retries`` retries, waiting ``backoff_base * 2**k``
    seconds (jittered, at most ``backoff_max``) or what ``Retry-After`` asks (at most
    ``max_retry_after``).
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

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")
        if self.n_mode not in ("param", "repeat"):
            raise ValueError(f"n_mode must be 'param' or 'repeat', got {self.n_mode!r}")
        defaults = _STYLE_DEFAULTS[self.style]
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.questions is None:
            self.questions = CUPL_QUESTIONS if self.style == "cupl" else (CLIPD_QUESTION,)
        self.questions = tuple(self.questions)
        if not self.questions:
            raise ValueError("questions: need at least one question template")
        for question in self.questions:
            if "{c}" not in question and "{}" not in question:
                raise ValueError(f"question template {question!r} has no {{c}} for the class name")
        if self.system_prompt is None:
            self.system_prompt = CUPL_SYSTEM_PROMPT if self.style == "cupl" else CLIPD_SYSTEM_PROMPT
        for name in ("n", "concurrency", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("timeout", "backoff_base", "backoff_max", "max_retry_after", "max_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.model:
            raise ValueError("model: name the model to ask (e.g. gpt-4o-mini, llama3.1:8b)")

    def messages(self, classname: str, question: str) -> list[dict[str, str]]:
        """The chat messages that ask ``question`` about ``classname``."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        if self.style == "clip-d":
            messages += [{"role": role, "content": text} for role, text in CLIPD_EXAMPLE]
        messages.append({"role": "user", "content": fill_template(question, classname)})
        return messages

    def parse(self, answer: str, truncated: bool) -> list[str]:
        """Descriptions from one answer, in the style's shape."""
        if self.style == "cupl":
            return parse_sentences(answer, truncated)
        return parse_descriptors(answer, truncated)


def resolve_api_key(env_name: str, base_url: str | None) -> str:
    """The API key from ``$env_name``; a placeholder for a custom endpoint that needs none."""
    key = os.environ.get(env_name, "")
    if key:
        return key
    if base_url:
        return PLACEHOLDER_API_KEY
    raise ValueError(
        f"no API key: set the environment variable {env_name}, or pass a base URL for a "
        "local server that needs none"
    )


def make_client(config: GenerationConfig) -> openai.OpenAI:
    """An OpenAI client for the configured endpoint, with the library's own retries off."""
    return openai.OpenAI(
        base_url=config.base_url,
        api_key=resolve_api_key(config.api_key_env, config.base_url),
        max_retries=0,
        timeout=config.timeout,
    )


class RequestFailed(Exception):
    """A request that failed for good; ``fatal`` failures stop the whole run."""

    def __init__(self, reason: str, retries: int, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retries = retries
        self.fatal = fatal


class _Malformed(Exception):
    pass


def _retry_after(error: openai.APIStatusError) -> float | None:
    headers = error.response.headers
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            return max(0.0, when.timestamp() - time.time())
    return None


def _classify(error: Exception, timeout: float) -> tuple[str, bool, bool, float | None]:
    """(reason, retryable, fatal, server-requested delay) for a failed request."""
    if isinstance(error, openai.APITimeoutError):
        return f"timed out after {timeout:g} s", True, False, None
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error
        return f"connection error ({type(cause).__name__}: {cause})", True, False, None
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        reason = f"HTTP {status}: {error.message}"
        if status in _RETRY_STATUS or status >= 500:
            return reason, True, False, _retry_after(error)
        return reason, False, status in _FATAL_STATUS, None
    if isinstance(error, (json.JSONDecodeError, openai.APIResponseValidationError, _Malformed)):
        return f"malformed response ({error})", True, False, None
    raise error


def _answers(response: Any) -> list[tuple[str, bool]]:
    """(text, cut off at the token limit) per choice; _Malformed if the shape is wrong."""
    choices = getattr(response, "choices", None)
    if not choices:
        raise _Malformed("no choices")
    answers = []
    for choice in choices:
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None)
        if not isinstance(content, str):
            raise _Malformed("a choice has no message text")
        answers.append((content, getattr(choice, "finish_reason", None) == "length"))
    return answers


@dataclass
class _Request:
    """``count`` answers to one question about one class."""

    classname: str
    slot: int
    messages: list[dict[str, str]]
    count: int


class _Runner:
    """Sends requests with retries and backoff; shared by the worker threads."""

    def __init__(self, client: openai.OpenAI, config: GenerationConfig, stop: threading.Event):
        self.client = client
        self.config = config
        self.stop = stop

    def backoff(self, attempt: int) -> float:
        delay = self.config.backoff_base * 2**attempt
        return min(self.config.backoff_max, delay) * random.uniform(0.5, 1.0)

    def complete(self, messages: list[dict[str, str]], n: int) -> tuple[list, int]:
        """One chat completion, retried; returns (answers, retries used)."""
        config = self.config
        extra: dict[str, Any] = {"n": n} if n > 1 else {}
        attempt = 0
        while not self.stop.is_set():
            try:
                response = self.client.chat.completions.create(
                    model=config.model,
                    messages=messages,
                    temperature=config.temperature,
                    max_tokens=config.max_tokens,
                    timeout=config.timeout,
                    **extra,
                )
                return _answers(response), attempt
            except Exception as error:  # _classify re-raises the errors it does not know
                reason, retryable, fatal, delay = _classify(error, config.timeout)
            if not retryable or attempt == config.max_retries:
                tries = f" after {attempt + 1} attempts" if retryable else ""
                raise RequestFailed(reason + tries, attempt, fatal)
            if delay is None:
                delay = self.backoff(attempt)
            attempt += 1
            self.stop.wait(min(delay, config.max_retry_after))
        raise RequestFailed("run stopped", attempt)

    def run(self, request: _Request) -> tuple[list[tuple[str, bool]], int]:
        """All ``request.count`` answers: one request with ``n``, topped up if the server
        returns fewer choices, or ``count`` single requests in "repeat" mode."""
        answers: list[tuple[str, bool]] = []
        retries = 0
        while len(answers) < request.count:
            n = request.count - len(answers) if self.config.n_mode == "param" else 1
            try:
                got, used = self.complete(request.messages, n)
            except RequestFailed as error:
                error.retries += retries
                raise
            answers += got[:n]
            retries += used
        return answers, retries


@dataclass
class GenerationReport:
    """What a run did: the descriptions now on disk and the classes that failed, with why."""

    descriptions: dict[str, list[str]]
    generated: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def progress_path(out: str | Path) -> Path:
    """The JSONL progress file kept next to ``out`` while a run is incomplete."""
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def _read_done(out: Path, classes: set[str]) -> dict[str, list[str]]:
    """Classes already generated (with at least one description): those in ``out`` and in its
    progress file."""
    done: dict[str, list[str]] = {}
    if out.exists():
        done.update(load_descriptions(out))
    partial = progress_path(out)
    if partial.exists():
        for line in partial.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                done[record["class"]] = list(record["descriptions"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short when a run was killed
    done = {name: texts for name, texts in done.items() if any(t.strip() for t in texts)}
    unknown = sorted(set(done) - classes)
    if unknown:
        raise ValueError(
            f"{out} (or its progress file) has classes that are not in the class list: "
            f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}; start over with overwrite or "
            "choose another output"
        )
    return done


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it over ``path``."""
    text = json.dumps(data, indent=4, ensure_ascii=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def generate_descriptions(
    classnames: Sequence[str],
    out: str | Path,
    config: GenerationConfig,
    *,
    client: openai.OpenAI | None = None,
    overwrite: bool = False,
    postprocess: Callable[[dict[str, list[str]]], dict[str, list[str]]] | None = None,
    progress: bool = True,
) -> GenerationReport:
    """Ask the LLM about every class not yet in ``out`` and write ``{class: [text, ...]}``.

    Repeated class names are asked about once. ``postprocess`` (e.g. near-duplicate removal)
    runs on the merged result before it is written. Interrupting (Ctrl-C) keeps every
    finished class on disk. Returns a report; ``report.failed`` maps classes to reasons.
    """
    out = Path(out)
    names = list(dict.fromkeys(classnames))
    if not names:
        raise ValueError("no class names to describe")
    partial = progress_path(out)
    if overwrite:
        out.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    done = _read_done(out, set(names))
    report = GenerationReport(descriptions={}, resumed=[c for c in names if c in done])
    todo = [c for c in names if c not in done]

    stop = threading.Event()
    runner = _Runner(client or make_client(config), config, stop)
    requests = {c: _plan(c, config) for c in todo}
    answers: dict[str, list] = {c: [None] * len(requests[c]) for c in todo}
    pending = {c: len(requests[c]) for c in todo}
    bar = tqdm(
        total=len(names), initial=len(done), unit="class", desc="describe", disable=not progress
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    executor = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="wca-llm")
    try:
        with partial.open("a", encoding="utf-8") as log:
            futures: dict[Future, _Request] = {
                executor.submit(runner.run, r): r for c in todo for r in requests[c]
            }
            waiting = set(futures)
            while waiting:
                finished, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                for future in finished:
                    request = futures[future]
                    name = request.classname
                    if name in report.failed or future.cancelled():
                        continue
                    try:
                        result, retries = future.result()
                    except RequestFailed as error:
                        report.retries[name] = report.retries.get(name, 0) + error.retries
                        report.failed[name] = error.reason
                        bar.update(1)
                        if error.fatal:
                            stop.set()
                            for other in todo:
                                if other not in done:
                                    report.failed.setdefault(other, f"not done: {error.reason}")
                        _cancel(futures, waiting, name if not error.fatal else None)
                        continue
                    report.retries[name] = report.retries.get(name, 0) + retries
                    answers[name][request.slot] = result
                    pending[name] -= 1
                    if pending[name]:
                        continue
                    texts = dedupe(
                        t for slot in answers[name] for a, cut in slot for t in config.parse(a, cut)
                    )
                    n_answers = sum(len(slot) for slot in answers[name])
                    if not texts:
                        report.failed[name] = f"no usable description in {n_answers} answers"
                    else:
                        done[name] = texts
                        report.generated.append(name)
                        record = {"class": name, "descriptions": texts}
                        log.write(json.dumps(record, ensure_ascii=False) + "\n")
                        log.flush()
                        os.fsync(log.fileno())
                    bar.update(1)
    finally:
        stop.set()
        executor.shutdown(wait=False, cancel_futures=True)
        bar.close()
        merged = {c: done[c] for c in names if c in done}
        if postprocess is not None:
            merged = postprocess(merged)
        write_json_atomic(out, merged)
        partial.unlink(missing_ok=True)
        report.descriptions = merged
    return report


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


def _cancel(futures: dict[Future, _Request], waiting: set[Future], classname: str | None) -> None:
    """Cancel the queued requests of one class (all classes when ``classname`` is None)."""
    for future in list(waiting):
        if classname is None or futures[future].classname == classname:
            future.cancel()
