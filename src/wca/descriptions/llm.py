"""The LLM client of `wca describe`: any OpenAI-compatible chat-completions endpoint (OpenAI,
vLLM, llama.cpp server, Ollama, LM Studio), probed once and then asked with retries.

A request is retried (by tenacity) with exponential backoff on timeouts, dropped connections,
429 (waiting as long as ``Retry-After`` says), 5xx and malformed responses. The openai client's
own retries are off: they cannot retry a malformed answer, count retries or be interrupted.
The API key is read from the environment and only handed to the client.
"""

from __future__ import annotations

import email.utils
import importlib
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from wca.extras import require

openai = require("openai", "generating descriptions with an LLM")
tenacity = require("tenacity", "generating descriptions with an LLM")


PLACEHOLDER_API_KEY = "not-needed"
_FATAL_STATUS = (401, 403, 404)
_RETRY_STATUS = (408, 409, 429)
# the HTTP library openai's client is built on: httpx, or its successor httpx2 (openai >= 3)
http = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.partition(".")[0])


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


class DeadlineTransport(http.HTTPTransport):
    """An HTTP transport on which a request's (read) timeout bounds the whole request: the
    HTTP library's timeouts bound each read, so a server that sends its headers and then a
    byte every few seconds would hold a request for ever. The body is cut off, as a read
    timeout, at the first chunk that arrives after the deadline."""

    def handle_request(self, request: http.Request) -> http.Response:
        seconds = request.extensions.get("timeout", {}).get("read")
        started = time.monotonic()
        response = super().handle_request(request)
        if seconds is not None:
            response.stream = _Deadline(response.stream, started + seconds, seconds, request)
        return response


class _Deadline(http.SyncByteStream):
    def __init__(self, stream, deadline: float, seconds: float, request: http.Request) -> None:
        self.stream, self.deadline, self.seconds, self.request = stream, deadline, seconds, request

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            if time.monotonic() > self.deadline:
                raise http.ReadTimeout(
                    f"no whole answer within {self.seconds:g} s", request=self.request
                )
            yield chunk

    def close(self) -> None:
        self.stream.close()


def make_client(base_url: str | None, api_key_env: str, timeout: float) -> openai.OpenAI:
    """An OpenAI client for the endpoint, with the library's own retries off. ``timeout``
    bounds each request whole, from its connect to the last byte of its answer
    (:class:`DeadlineTransport`): a server that accepts and never answers, or answers a byte at
    a time, costs ``timeout`` seconds (and at most one more read)."""
    return openai.OpenAI(
        base_url=base_url,
        api_key=resolve_api_key(api_key_env, base_url),
        max_retries=0,
        timeout=openai.Timeout(timeout),
        http_client=openai.DefaultHttpxClient(transport=DeadlineTransport()),
    )


def probe_endpoint(client: openai.OpenAI, model: str, timeout: float, api_key_env: str) -> None:
    """Send one real one-token request, waiting at most ``timeout`` seconds for the whole
    answer.

    ValueError (one line) for a failure no retry can fix: refused connection or unknown host,
    no answer in time, wrong key (401/403), unknown model (404). A 429, a 5xx, a dropped
    connection or a malformed answer passes: the run's own retries deal with those.
    """
    where = f"LLM endpoint {client.base_url}"
    try:
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Reply with OK."}],
            max_tokens=1,
            timeout=timeout,
        )
    except openai.APITimeoutError as error:
        raise ValueError(
            f"the {where} did not answer a one-token request within {timeout:g} s; is the "
            "server stuck or overloaded? (If it is still loading the model, raise "
            "probe_timeout.)"
        ) from error
    except openai.APIConnectionError as error:
        cause = error.__cause__
        # refused, unknown host, no route (the HTTP library's ConnectError, by name: openai
        # may bring its own copy of httpx)
        if any(kind.__name__ == "ConnectError" for kind in type(cause).__mro__):
            raise ValueError(
                f"cannot reach the {where} ({' '.join(str(cause).split())}); is the server "
                "running and its base URL right?"
            ) from error
    except openai.APIStatusError as error:
        status = error.status_code
        if status in _FATAL_STATUS:
            hint = (
                f"is the model name {model!r} right (and the URL)?"
                if status == 404
                else f"check the API key in ${api_key_env}"
            )
            raise ValueError(f"{where}: HTTP {status}: {error.message}; {hint}") from error
    except Exception:  # a malformed answer: the run's parser and retries judge it
        return


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


def _classify(error: BaseException, timeout: float) -> tuple[str, bool, bool] | None:
    """(reason, retryable, fatal) for a failed request; None for an error that is not the
    endpoint's (a bug here: raised as it is)."""
    if isinstance(error, openai.APITimeoutError):
        return f"timed out after {timeout:g} s", True, False
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error
        return f"connection error ({type(cause).__name__}: {cause})", True, False
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        reason = f"HTTP {status}: {error.message}"
        if status in _RETRY_STATUS or status >= 500:
            return reason, True, False
        return reason, False, status in _FATAL_STATUS
    if isinstance(error, (json.JSONDecodeError, openai.APIResponseValidationError, _Malformed)):
        return f"malformed response ({error})", True, False
    return None


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


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``max_retries`` retries per request, waiting ``backoff_base * 2**k`` seconds
    (jittered, at most ``backoff_max``) or what ``Retry-After`` asks (at most
    ``max_retry_after``)."""

    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 300.0

    def backoff(self, attempt: int) -> float:
        delay = self.backoff_base * 2**attempt
        return min(self.backoff_max, delay) * random.uniform(0.5, 1.0)


class ChatRunner:
    """Sends chat completions, retried by tenacity under a :class:`RetryPolicy`; shared by the
    worker threads. Setting ``stop`` ends the waits between retries and the retries."""

    def __init__(
        self,
        client: openai.OpenAI,
        request: dict[str, Any],
        timeout: float,
        policy: RetryPolicy,
        stop: threading.Event,
    ) -> None:
        self.client = client
        self.request = request  # model, temperature, max_tokens
        self.timeout = timeout
        self.policy = policy
        self.stop = stop

    def complete(self, messages: list[dict[str, str]], n: int) -> tuple[list, int]:
        """One chat completion, retried; returns (answers, retries used)."""
        if self.stop.is_set():
            raise RequestFailed("run stopped", 0)
        extra: dict[str, Any] = {"n": n} if n > 1 else {}
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(self._retryable),
            stop=tenacity.stop_after_attempt(self.policy.max_retries + 1)
            | tenacity.stop_when_event_set(self.stop),
            wait=self._wait,
            sleep=self.stop.wait,
            reraise=True,
        )
        try:
            answers = retrying(self._ask, messages, extra)
        except Exception as error:
            failure = _classify(error, self.timeout)
            if failure is None:
                raise
            retries = retrying.statistics.get("attempt_number", 1) - 1
            if self.stop.is_set():
                raise RequestFailed("run stopped", retries) from error
            reason, retryable, fatal = failure
            tries = f" after {retries + 1} attempts" if retryable and retries else ""
            raise RequestFailed(reason + tries, retries, fatal) from error
        return answers, retrying.statistics["attempt_number"] - 1

    def _ask(self, messages: list[dict[str, str]], extra: dict[str, Any]) -> list:
        response = self.client.chat.completions.create(
            messages=messages, timeout=self.timeout, **self.request, **extra
        )
        return _answers(response)

    def _retryable(self, error: BaseException) -> bool:
        failure = _classify(error, self.timeout)
        return failure is not None and failure[1]

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """What ``Retry-After`` asks, else the policy's backoff; at most ``max_retry_after``."""
        error = state.outcome.exception() if state.outcome else None
        delay = _retry_after(error) if isinstance(error, openai.APIStatusError) else None
        if delay is None:
            delay = self.policy.backoff(state.attempt_number - 1)
        return min(delay, self.policy.max_retry_after)
