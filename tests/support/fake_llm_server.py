"""A local OpenAI-compatible chat-completions server for offline tests of description generation.

The server listens on 127.0.0.1 (port chosen by the OS) in a background thread. It finds the
class a request is about (the longest known class name in the last user message), counts
requests per class, and plays a per-class script of behaviours before answering normally:

    "ok"         200 with ``n`` choices (the request's ``n``, default 1, at most
                 ``max_choices`` when set, like servers that ignore ``n``), after ``delay`` s;
                 ``answer(class, prompt, k)`` writes the k-th answer to that prompt, so a
                 repeated request gets new answers, as from a sampling LLM
    "slow"       sleeps ``slow_seconds``, then answers like "ok" (for client timeouts)
    "429"        429 with ``Retry-After: <retry_after>``
    "500"        500 with a JSON error body
    "401"        401 (a wrong API key)
    "404"        404 (a model the server does not have)
    "malformed"  200 with a body that is not valid JSON
    "nochoices"  200 with valid JSON but an empty ``choices`` list
    "drop"       closes the connection without sending a response
    "silent"     reads the request and never answers (until the server stops); each such
                 request sets the event ``heard_silent``
    "trickle"    sends the headers of a long answer, then a byte every ``trickle_seconds``
                 for ``trickle_for`` seconds (or until the server stops), then closes

Usage::

    with FakeLLMServer(classnames) as server:
        server.script("owl", "429", "500")      # first two requests for "owl" fail
        server.always["crow"] = "500"            # every request for "crow" fails
        ... generate with base_url=server.url ...
        server.counts["owl"]                     # -> 3
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BEHAVIOURS = (
    "ok", "slow", "429", "500", "401", "404", "malformed", "nochoices", "drop", "silent", "trickle"
)  # fmt: skip


def default_answer(classname: str, prompt: str, index: int) -> str:
    """A deterministic answer: a bulleted list for CLIP-D-style prompts, a sentence otherwise."""
    if "distinguishing" in prompt:
        return "\n".join(f"- feature {k} of the {classname}" for k in range(1, 4 + index))
    return f"The {classname} answers '{prompt}' with variant {index}."


class FakeLLMServer:
    """Scriptable chat-completions endpoint; see the module docstring."""

    def __init__(
        self,
        classnames: list[str],
        answer: Callable[[str, str, int], str] = default_answer,
        slow_seconds: float = 1.0,
        retry_after: str = "0",
        max_choices: int | None = None,
        delay: float = 0.0,
        trickle_seconds: float = 0.05,
        trickle_for: float = 5.0,
    ) -> None:
        self.classnames = sorted(classnames, key=len, reverse=True)
        self.answer = answer
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.max_choices = max_choices
        self.delay = delay
        self.trickle_seconds, self.trickle_for = trickle_seconds, trickle_for
        self.always: dict[str, str] = {}
        self.counts: Counter[str] = Counter()
        self.probes = 0  # requests about no class (the endpoint probe)
        self._served: Counter[tuple[str, str]] = Counter()  # answers per (class, prompt)
        self.log: list[dict[str, Any]] = []
        self._scripts: dict[str, deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.heard_silent = threading.Event()
        self._stopping = threading.Event()  # releases the "silent" requests
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL for an OpenAI client (``.../v1``)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, classname: str, *behaviours: str) -> None:
        """Queue behaviours for the next requests about ``classname`` (then "ok")."""
        unknown = [b for b in behaviours if b not in BEHAVIOURS]
        if unknown:
            raise ValueError(f"unknown behaviours {unknown}; known: {BEHAVIOURS}")
        with self._lock:
            self._scripts[classname].extend(behaviours)

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.log.clear()

    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _classify(self, body: dict[str, Any]) -> tuple[str, str]:
        messages = body.get("messages") or [{}]
        prompt = str(messages[-1].get("content", ""))
        for name in self.classnames:
            if name in prompt:
                return name, prompt
        return "", prompt

    def _next_behaviour(self, classname: str, record: dict[str, Any]) -> str:
        with self._lock:
            if classname:
                self.counts[classname] += 1
            else:
                self.probes += 1
            queue = self._scripts.get(classname)
            behaviour = queue.popleft() if queue else self.always.get(classname, "ok")
            record["behaviour"] = behaviour
            self.log.append(record)
        return behaviour

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def _send_json(self, status: int, payload: Any, headers: dict[str, str]) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                classname, prompt = server._classify(body)
                record = {
                    "class": classname,
                    "time": time.monotonic(),
                    "path": self.path,
                    "body": body,
                    "authorization": self.headers.get("Authorization"),
                }
                behaviour = server._next_behaviour(classname, record)
                try:
                    self._act(behaviour, body, classname, prompt)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (timeout)

            def _act(self, behaviour: str, body: dict[str, Any], classname: str, prompt: str):
                if behaviour == "drop":
                    self.close_connection = True
                    return
                if behaviour == "silent":
                    server.heard_silent.set()
                    server._stopping.wait()
                    self.close_connection = True
                    return
                if behaviour == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(10**6))
                    self.end_headers()
                    until = time.monotonic() + server.trickle_for
                    while time.monotonic() < until and not server._stopping.wait(
                        server.trickle_seconds
                    ):
                        self.wfile.write(b" ")
                    self.close_connection = True
                    return
                if behaviour == "429":
                    error = {"error": {"message": "rate limited", "type": "rate_limit"}}
                    self._send_json(429, error, {"Retry-After": server.retry_after})
                    return
                if behaviour == "500":
                    self._send_json(500, {"error": {"message": "boom", "type": "server"}}, {})
                    return
                if behaviour == "401":
                    self._send_json(401, {"error": {"message": "bad key", "type": "auth"}}, {})
                    return
                if behaviour == "404":
                    error = {"error": {"message": "model not found", "type": "not_found"}}
                    self._send_json(404, error, {})
                    return
                if behaviour == "malformed":
                    self._send_json(200, b'{"id": "x", "choices": [{"mess', {})
                    return
                time.sleep(server.slow_seconds if behaviour == "slow" else server.delay)
                n = 0 if behaviour == "nochoices" else int(body.get("n") or 1)
                n = min(n, server.max_choices or n)
                with server._lock:
                    first = server._served[classname, prompt]
                    server._served[classname, prompt] += n
                choices = [
                    {
                        "index": i,
                        "message": {
                            "role": "assistant",
                            "content": server.answer(classname, prompt, first + i),
                        },
                        "finish_reason": "stop",
                    }
                    for i in range(n)
                ]
                completion = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": choices,
                }
                self._send_json(200, completion, {})

        return Handler
