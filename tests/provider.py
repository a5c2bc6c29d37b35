"""A local, fast, OpenAI-compatible streaming chat provider for tests and benchmarks.

Why this exists: the server extension reaches providers only through litellm, and we want
the tests to exercise *that exact path* (``openai/<model>`` + ``api_base``) rather than a
mock of litellm. So this module speaks the OpenAI ``/v1/chat/completions`` wire format
(SSE ``chat.completion.chunk`` events, usage chunk, ``[DONE]``) from a tornado app that
runs in its own thread and asyncio loop, reachable from any event loop or process.

Behaviour is driven by a :class:`Scenario` (the default, mutable) that each request may
override with ``!key=value`` directives in its last user message, e.g.
``"hi !tokens=500 !delay=0.01 !fault=drop !after=5"``. ``!echo`` makes the reply the
request's ``messages`` serialized as JSON, so tests can see what context reached the
provider.

Speed matters because benchmarks use it as the upstream: chunk bytes are built from
pre-encoded templates (no ``json.dumps`` of a whole event per chunk), chunks that are due
at the same moment are written in one batch with a single flush, and pacing follows a
fixed schedule (chunk ``i`` at ``t0 + i*delay``) so slow wake-ups never accumulate drift.

Run standalone (for ``jupyter server`` subprocesses and benchmarks)::

    python -m tests.provider --port 8999 --tokens 200 --delay 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

__all__ = ["FakeProvider", "Scenario", "generated_text", "split_text"]

#: Largest number of chunks written between two flushes. Big enough that an undelayed
#: stream is limited by the socket, small enough that a slow reader sees steady progress.
MAX_BATCH = 256

#: Faults answered with an HTTP error before any chunk: status, headers, error body.
_STATUS_FAULTS: dict[str, tuple[int, dict[str, str], dict[str, Any]]] = {
    "500": (
        500,
        {},
        {"message": "fake upstream failure", "type": "server_error", "code": None},
    ),
    "401": (
        401,
        {},
        {
            "message": "Incorrect API key provided",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        },
    ),
    "429": (
        429,
        {"retry-after": "1"},
        {
            "message": "Rate limit reached (fake provider)",
            "type": "requests",
            "code": "rate_limit_exceeded",
        },
    ),
    "400": (
        400,
        {},
        {"message": "fake bad request", "type": "invalid_request_error", "code": None},
    ),
    # Anthropic's "overloaded" status, in the OpenAI error shape.
    "529": (529, {}, {"message": "Overloaded", "type": "overloaded_error", "code": None}),
    "503": (
        503,
        {},
        {"message": "The service is currently unavailable", "type": "server_error", "code": None},
    ),
}
#: Faults that happen after ``after`` chunks have been sent (``error``: the provider's
#: own error line in the stream, as Ollama and OpenAI-compatible servers send one).
_MID_FAULTS = frozenset({"drop", "stall", "malformed", "error"})
#: The words of ``fault=error`` unless the scenario's ``error_message`` says others.
MID_ERROR = "the model runner stopped unexpectedly"
#: ``fault=slow`` without an explicit ``first_delay`` waits this long before chunk 0.
SLOW_FIRST_DELAY = 2.0


@dataclass
class Scenario:
    """How the provider answers. The instance on the provider is the default for every
    request; directives in a request's last user message override fields for that request
    only (see :func:`parse_directives`)."""

    tokens: int = 20
    """Number of content chunks (ignored when ``text`` or ``echo`` fixes the reply)."""
    delay: float = 0.0
    """Seconds between chunks, on a schedule: chunk i at t0 + i*delay, finish at t0 + N*delay."""
    first_delay: float = 0.0
    """Extra wait before the first chunk (t0 = arrival + first_delay)."""
    fault: str | None = None
    """'500' | '503' | '401' | '429' | '400' | '529' | 'drop' | 'stall' | 'malformed' | 'error'
    | 'slow' | None."""
    after: int = 0
    """For mid-stream faults: how many chunks are sent before the fault."""
    gate: int | None = None
    """Pause after this many chunks until :meth:`FakeProvider.release` is called."""
    text: str | None = None
    """Exact reply text, streamed in word-ish chunks; otherwise text is generated."""
    echo: bool = False
    """Reply with the request's messages serialized as JSON (directive ``!echo``)."""
    finish: str = "stop"
    """The ``finish_reason`` of the last chunk (directive ``!finish=content_filter``)."""
    error_message: str | None = None
    """The provider's own words for a status fault (replaces the canned message)."""


# --------------------------------------------------------------------------- text

_WORDS = (
    "Hello", "café", "stream", "✓", "token", "quick", "brown", "fox", "jumps", "over",
    "lazy", "dog", "naïve", "résumé", "alpha", "beta", "gamma", "delta", "panel",
    "notebook", "kernel", "cell", "output", "done",
)  # fmt: skip


def generated_word(i: int) -> str:
    """Chunk ``i`` of a generated reply: a word plus its separator.

    Deterministic in ``i`` only (never in the request index), with multi-byte characters
    in the first chunks and a newline closing every 12th chunk, so that every test
    exercises unicode and newline handling without asking for it."""
    return _WORDS[i % len(_WORDS)] + ("\n" if i % 12 == 11 else " ")


def generated_text(tokens: int) -> str:
    """The full text of a generated reply of ``tokens`` chunks."""
    return "".join(generated_word(i) for i in range(tokens))


_SPLIT = re.compile(r"\s+|\S+\s*")


def split_text(text: str) -> list[str]:
    """Split into word-ish chunks, each word keeping its trailing whitespace (leading
    whitespace becomes its own chunk), so ``"".join(split_text(t)) == t`` exactly."""
    return _SPLIT.findall(text)


def message_text(content: Any) -> str:
    """Text of an OpenAI message ``content``: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return ""


_DIRECTIVE = re.compile(
    r"(?<!\S)!(tokens|delay|first_delay|fault|after|gate|slow|echo|finish)(?:=(\S*))?"
)


def parse_directives(text: str, base: Scenario) -> Scenario:
    """Return ``base`` overridden by the ``!key=value`` directives found in ``text``.

    Only known keys are recognised, so ordinary exclamation marks are left alone.
    ``!gate=none`` / ``!fault=none`` clear a default; ``!slow=X`` is ``!first_delay=X``."""
    changes: dict[str, Any] = {}
    for key, raw in _DIRECTIVE.findall(text):
        value: str = raw or ""
        if key == "echo":
            changes["echo"] = value.lower() not in ("0", "false", "no")
        elif key in ("tokens", "after"):
            changes[key] = int(value)
        elif key in ("delay", "first_delay"):
            changes[key] = float(value)
        elif key == "slow":
            changes["first_delay"] = float(value) if value else SLOW_FIRST_DELAY
        elif key == "gate":
            changes["gate"] = None if value.lower() in ("", "none") else int(value)
        elif key == "fault":
            changes["fault"] = None if value.lower() in ("", "none") else value
        elif key == "finish":
            changes["finish"] = value
    return dataclasses.replace(base, **changes) if changes else base


def last_user_text(messages: list[Any]) -> str:
    """Text of the last ``user`` message (where directives live)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def prompt_tokens(messages: list[Any]) -> int:
    """A rough prompt token count (whitespace words) for the usage chunk."""
    return sum(len(message_text(m.get("content")).split()) for m in messages if isinstance(m, dict))


# --------------------------------------------------------------------------- wire

_ENCODED_CACHE: dict[str, bytes] = {}


def _encode_content(piece: str) -> bytes:
    """JSON-encoded content string; generated words repeat, so they are cached."""
    cached = _ENCODED_CACHE.get(piece)
    if cached is None:
        cached = json.dumps(piece, ensure_ascii=False).encode()
        if len(_ENCODED_CACHE) < 4096:
            _ENCODED_CACHE[piece] = cached
    return cached


class _Wire:
    """Pre-encoded SSE templates for one response: a chunk is ``prefix + content + suffix``."""

    content_type = "text/event-stream"
    #: What ``fault=malformed`` sends after the good chunks.
    malformed = b"data: {not json\n\n"

    def __init__(self, request_index: int, model: str) -> None:
        head = json.dumps(
            {"id": f"chatcmpl-fake{request_index}", "object": "chat.completion.chunk",
             "created": int(time.time()), "model": model},
            ensure_ascii=False, separators=(",", ":"),
        )[:-1]  # fmt: skip
        self.head = head
        self.first_prefix = (
            "data: " + head + ',"choices":[{"index":0,"delta":{"role":"assistant","content":'
        ).encode()
        self.prefix = ("data: " + head + ',"choices":[{"index":0,"delta":{"content":').encode()
        self.suffix = b'},"finish_reason":null}]}\n\n'

    def chunks(self, pieces: list[str], start: int, end: int) -> bytes:
        """Encoded events for ``pieces[start:end]``; the very first carries the role."""
        prefix, suffix = self.prefix, self.suffix
        parts: list[bytes] = []
        for i in range(start, end):
            parts.append(self.first_prefix if i == 0 else prefix)
            parts.append(_encode_content(pieces[i]))
            parts.append(suffix)
        return b"".join(parts)

    def empty(self) -> bytes:
        """The opening of a reply with no content chunk at all."""
        return self.first_prefix + b'""' + self.suffix

    def error_line(self, message: str) -> bytes:
        """The provider's error event in the middle of a stream."""
        error = {"error": {"message": message, "type": "server_error", "code": None}}
        return f"data: {json.dumps(error)}\n\n".encode()

    def ending(
        self, prompt: int, completion: int, include_usage: bool, finish: str = "stop"
    ) -> bytes:
        """The finish chunk, the usage chunk (if asked) and ``[DONE]``."""
        # !finish=none: a stream that never says why it ended.
        out = (
            ""
            if finish == "none"
            else (
                f'data: {self.head},"choices":[{{"index":0,"delta":{{}},"finish_reason":'
                f"{json.dumps(finish)}}}]}}\n\n"
            )
        )
        if include_usage:
            usage = (
                f'{{"prompt_tokens":{prompt},"completion_tokens":{completion},'
                f'"total_tokens":{prompt + completion}}}'
            )
            out += "data: " + self.head + ',"choices":[],"usage":' + usage + "}\n\n"
        return (out + "data: [DONE]\n\n").encode()


# --------------------------------------------------------------------------- handler


class _CompletionsHandler(tornado.web.RequestHandler):
    """``POST /v1/chat/completions``: one request, one (possibly faulty) reply."""

    provider: FakeProvider

    def initialize(self, provider: FakeProvider) -> None:
        self.provider = provider
        self._closed = False
        self._stopped = False
        self._waiter: asyncio.Future[bool] | None = None

    # -- waiting: a single future that a deadline, release(), a disconnect or stop() resolves

    def on_connection_close(self) -> None:
        """Client went away: wake whatever the stream is waiting on so its loop ends."""
        self._closed = True
        self._wake(False)

    def _wake(self, value: bool) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(value)

    def _abort(self) -> None:
        """Called by stop(): end the stream now, whatever it is doing."""
        self._stopped = True
        self._closed = True
        self._wake(False)
        conn = self.request.connection
        stream = getattr(conn, "stream", None)
        if stream is not None and not stream.closed():
            stream.close()

    def _gone(self) -> str:
        """Outcome of a stream that ended early: stopped by stop(), or client gone."""
        return "stopped" if self._stopped else "disconnected"

    async def _wait(self, deadline: float | None = None, *, gated: bool = False) -> bool:
        """Wait until ``deadline`` (loop time; ``None`` = forever) or, if ``gated``, until
        release(). Returns False if the client disconnected or the provider is stopping."""
        if self._closed:
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        handle = None
        if deadline is not None:
            handle = loop.call_at(deadline, self._wake, True)
        if gated:
            self.provider._gated.add(self._wake)
        try:
            return await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()
            self.provider._gated.discard(self._wake)

    async def _flush(self) -> bool:
        """Flush; False if the client has gone."""
        if self._closed:
            return False
        try:
            await self.flush()
        except tornado.iostream.StreamClosedError:
            self._closed = True
            return False
        return not self._closed

    def _hang_up(self) -> None:
        """Close the TCP connection without ending the HTTP response (no final chunk)."""
        self._closed = True
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None:
            stream.close()

    # -- the request

    async def post(self) -> None:
        provider = self.provider
        try:
            body = json.loads(self.request.body or b"{}")
            if not isinstance(body, dict):
                raise TypeError("body is not an object")
        except (ValueError, TypeError) as exc:
            self._error(
                400,
                {
                    "message": f"invalid JSON body: {exc}",
                    "type": "invalid_request_error",
                },
            )
            return
        messages = self.chat_messages(body)
        scenario = parse_directives(last_user_text(messages), provider.scenario)
        fault = str(scenario.fault) if scenario.fault is not None else None
        if fault == "slow":
            fault = None
            if scenario.first_delay <= 0:
                scenario = dataclasses.replace(scenario, first_delay=SLOW_FIRST_DELAY)

        if fault in _STATUS_FAULTS:
            index = provider._record(
                body, "", self._authorization(), self.request.uri or "", self._peer()
            )
            status, headers, error = _STATUS_FAULTS[fault]
            if scenario.error_message is not None:
                error = {**error, "message": scenario.error_message}
            provider._finish(index, f"error:{status}")
            for name, value in headers.items():
                self.set_header(name, value)
            self._error(status, error)
            return

        if scenario.echo:
            pieces = split_text(json.dumps(messages, ensure_ascii=False))
        elif scenario.text is not None:
            pieces = split_text(scenario.text)
        else:
            pieces = [generated_word(i) for i in range(max(0, scenario.tokens))]
        index = provider._record(
            body, "".join(pieces), self._authorization(), self.request.uri or "", self._peer()
        )
        model = str(body.get("model") or "fake")
        wire = self.wire(index, model)
        options = body.get("stream_options")
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))

        provider._active_add(self)
        outcome = "error"
        try:
            if self.streaming(body):
                outcome = await self._stream(
                    index,
                    pieces,
                    scenario,
                    fault,
                    wire,
                    include_usage,
                    prompt_tokens(messages),
                )
            else:
                outcome = await self._complete(
                    index, pieces, scenario, fault, model, prompt_tokens(messages)
                )
        finally:
            provider._active_discard(self)
            provider._finish(index, outcome)

    # -- the dialect: what a subclass speaking another wire format overrides

    def chat_messages(self, body: dict[str, Any]) -> list[Any]:
        """The request's conversation as OpenAI-style ``{"role", "content"}`` messages."""
        messages = body.get("messages")
        return messages if isinstance(messages, list) else []

    def streaming(self, body: dict[str, Any]) -> bool:
        return bool(body.get("stream"))

    def wire(self, index: int, model: str) -> _Wire:
        return _Wire(index, model)

    def _authorization(self) -> str:
        return self.request.headers.get("Authorization", "")

    def _peer(self) -> Any:
        return getattr(self.request.connection, "context", None) and getattr(
            self.request.connection.context, "address", None
        )

    def _error(self, status: int, error: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": error}))

    async def _stream(
        self,
        index: int,
        pieces: list[str],
        sc: Scenario,
        fault: str | None,
        wire: _Wire,
        include_usage: bool,
        prompt: int,
    ) -> str:
        """Send the chunks on schedule; return the outcome for ``provider.outcomes``."""
        provider = self.provider
        loop = asyncio.get_running_loop()
        self.set_header("Content-Type", wire.content_type)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        release_gen = provider._release_gen
        n = len(pieces)
        stop_at = min(sc.after, n) if fault in _MID_FAULTS else n
        delay = max(0.0, sc.delay)
        t0 = loop.time() + max(0.0, sc.first_delay)
        gate = sc.gate
        # Headers go out at once when the first chunk is delayed (a real provider also
        # accepts the request before it starts generating).
        if sc.first_delay > 0 and (not await self._flush() or not await self._wait(t0)):
            return self._gone()
        i = 0
        while True:
            if gate is not None and i == gate:  # gate == n pauses before the finish
                gate = None
                # Stop only if release() was not called since this request arrived.
                if provider._release_gen == release_gen and (
                    not await self._flush() or not await self._wait(gated=True)
                ):
                    return self._gone()
                t0 = loop.time() - i * delay  # resume from now, no burst
            if i >= stop_at:
                break
            if delay > 0:
                due = t0 + i * delay
                now = loop.time()
                if due > now:
                    if not await self._wait(due):
                        return self._gone()
                    now = loop.time()
                end = min(stop_at, int((now - t0) / delay) + 1, i + MAX_BATCH)
            else:
                end = min(stop_at, i + MAX_BATCH)
            end = max(end, i + 1)
            if gate is not None and i < gate < end:
                end = gate
            self.write(wire.chunks(pieces, i, end))
            if not await self._flush():
                return self._gone()
            provider._sent_add(index, pieces, i, end)
            i = end

        if fault == "drop":
            # Headers go out first even at after=0, so a drop is always mid-stream.
            if i == 0 and not await self._flush():
                return self._gone()
            self._hang_up()
            return "drop"
        if fault == "stall":
            if not await self._flush():
                return self._gone()
            await self._wait(None)  # until the client goes away or stop()
            return self._gone()
        if fault in ("malformed", "error"):
            # End the HTTP response cleanly so the bad event is the only error the client sees.
            self.write(
                wire.malformed
                if fault == "malformed"
                else wire.error_line(sc.error_message or MID_ERROR)
            )
            try:
                await self.finish()
            except tornado.iostream.StreamClosedError:
                return self._gone()
            return fault

        if delay > 0 and n > 0 and not await self._wait(t0 + n * delay):
            return self._gone()
        if n == 0:  # still announce the role, as OpenAI does
            self.write(wire.empty())
        self.write(wire.ending(prompt, n, include_usage, sc.finish))
        try:
            await self.finish()
        except tornado.iostream.StreamClosedError:
            return self._gone()
        return "done"

    async def _complete(
        self,
        index: int,
        pieces: list[str],
        sc: Scenario,
        fault: str | None,
        model: str,
        prompt: int,
    ) -> str:
        """Non-streaming reply: wait out the whole schedule, then one chat.completion."""
        loop = asyncio.get_running_loop()
        n = len(pieces)
        stop_at = min(sc.after, n) if fault in _MID_FAULTS else n
        deadline = loop.time() + max(0.0, sc.first_delay) + max(0.0, sc.delay) * stop_at
        if not await self._wait(deadline):
            return self._gone()
        if fault == "drop":
            self._hang_up()
            return "drop"
        if fault == "stall":
            await self._wait(None)  # until the client goes away or stop()
            return self._gone()
        if fault == "malformed":
            self.set_header("Content-Type", "application/json")
            self.finish(b"{not json")
            return "malformed"
        self.provider._sent_add(index, pieces, 0, n)
        text = "".join(pieces)
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "id": f"chatcmpl-fake{index}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": n,
                        "total_tokens": prompt + n,
                    },
                },
                ensure_ascii=False,
            )
        )
        return "done"

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """A client that disconnects mid-write is normal here, not an error worth a traceback."""
        if isinstance(value, tornado.iostream.StreamClosedError):
            return
        super().log_exception(typ, value, tb)


class _ModelsHandler(tornado.web.RequestHandler):
    """``GET /v1/models``: a cheap readiness probe for subprocess users."""

    def get(self) -> None:
        self.finish(
            {
                "object": "list",
                "data": [{"id": "fake", "object": "model", "owned_by": "tests"}],
            }
        )


def _quiet_log(handler: tornado.web.RequestHandler) -> None:
    """Fault replies (4xx/5xx) are intentional; don't let tornado log them as errors."""


# --------------------------------------------------------------------------- provider


class FakeProvider:
    """The provider: a tornado app on 127.0.0.1 in a daemon thread with its own loop.

    Every attribute below is safe to read from the test's thread or loop; list entries are
    appended (under a lock) by the provider thread as requests arrive and chunks go out.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        ssl_options: Any = None,
    ) -> None:
        self.scenario: Scenario = scenario if scenario is not None else Scenario()
        #: An ``ssl.SSLContext`` to serve HTTPS (``url`` then says ``https``).
        self.ssl_options = ssl_options
        self.requests: list[dict[str, Any]] = []
        """Every request body received (parsed JSON), in order."""
        self.paths: list[str] = []
        """The path (with query) of each recorded request."""
        self.authorizations: list[str] = []
        #: Each request's client address (host, port): distinct ones are connections.
        self.peers: list[Any] = []
        """The ``Authorization`` header of each recorded request ("" when absent)."""
        self.replies: list[str] = []
        """The full text each request was meant to produce ("" for HTTP-error faults)."""
        self.sent: list[str] = []
        """Text actually sent (flushed) per request so far; grows live."""
        self.sent_chunks: list[int] = []
        """Number of content chunks flushed per request so far."""
        self.outcomes: list[str | None] = []
        """Per request: None while running, then 'done' | 'disconnected' | 'drop'
        | 'malformed' | 'stopped' | 'error:<status>' (how the provider's loop ended; a
        stalled stream ends as 'disconnected' or 'stopped')."""
        self.host = host
        self.port = port
        self._lock = threading.Condition()
        self._async_waiters: list[
            tuple[Callable[[], bool], asyncio.AbstractEventLoop, asyncio.Future[None]]
        ] = []
        self._active: set[_CompletionsHandler] = set()
        self._gated: set[Callable[[bool], None]] = set()
        self._release_gen = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # -- lifecycle

    @property
    def url(self) -> str:
        """The ``api_base`` for litellm: ``http://127.0.0.1:PORT/v1``."""
        return f"{self.root}/v1"

    @property
    def root(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` when serving with ``ssl_options``)."""
        scheme = "https" if self.ssl_options is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def active(self) -> int:
        """How many requests are currently inside their streaming loop."""
        with self._lock:
            return len(self._active)

    def start(self) -> None:
        """Start serving; returns once the socket is listening (``port`` is then real)."""
        if self._thread is not None:
            raise RuntimeError("FakeProvider already started")
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="fake-provider", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("fake provider failed to start") from self._startup_error

    def stop(self) -> None:
        """Stop: abort live streams (stalls and gates included), close every socket, join."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:
            self._startup_error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = tornado.web.Application(self.routes(), log_function=_quiet_log)
        server = tornado.httpserver.HTTPServer(
            app, idle_connection_timeout=60, ssl_options=self.ssl_options
        )
        sockets = tornado.netutil.bind_sockets(
            self.port, self.host, family=socket.AF_INET, backlog=1024
        )
        server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.stop()
            for handler in list(self._active):
                handler._abort()
            await server.close_all_connections()
            await asyncio.sleep(0)  # let aborted handlers unwind before the loop closes

    def routes(self) -> list[Any]:
        """The tornado route table (a provider speaking more dialects extends it)."""
        return [
            (r"/(?:v1/)?chat/completions/?", _CompletionsHandler, {"provider": self}),
            (r"/(?:v1/)?models/?", _ModelsHandler),
        ]

    # -- control

    def release(self) -> None:
        """Open the gates: every stream waiting at its gate resumes, and a stream that has
        not reached its gate yet will not stop at it (no lost-wakeup race in tests)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._do_release)

    def _do_release(self) -> None:
        self._release_gen += 1
        for wake in list(self._gated):
            wake(True)
        self._gated.clear()

    # -- bookkeeping (provider thread) and waiting (any thread / loop)

    def _record(
        self,
        body: dict[str, Any],
        reply: str,
        authorization: str = "",
        path: str = "",
        peer: Any = None,
    ) -> int:
        with self._lock:
            self.requests.append(body)
            self.peers.append(peer)
            self.paths.append(path)
            self.authorizations.append(authorization)
            self.replies.append(reply)
            self.sent.append("")
            self.sent_chunks.append(0)
            self.outcomes.append(None)
            index = len(self.requests) - 1
            self._notify()
        return index

    def _sent_add(self, index: int, pieces: list[str], start: int, end: int) -> None:
        with self._lock:
            self.sent[index] += "".join(pieces[start:end])
            self.sent_chunks[index] += end - start
            self._notify()

    def _finish(self, index: int, outcome: str) -> None:
        with self._lock:
            self.outcomes[index] = outcome
            self._notify()

    def _active_add(self, handler: _CompletionsHandler) -> None:
        with self._lock:
            self._active.add(handler)

    def _active_discard(self, handler: _CompletionsHandler) -> None:
        with self._lock:
            self._active.discard(handler)
            self._notify()

    def _notify(self) -> None:
        """Wake blocking waiters, and async waiters (on their own loops) whose condition
        now holds. Called with the lock held."""
        self._lock.notify_all()
        if not self._async_waiters:
            return
        remaining = []
        for predicate, loop, fut in self._async_waiters:
            if predicate():
                loop.call_soon_threadsafe(_resolve, fut)
            else:
                remaining.append((predicate, loop, fut))
        self._async_waiters = remaining

    def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10,
        what: str = "condition",
    ) -> None:
        """Block (threading) until ``predicate()`` holds; it is evaluated under the lock."""
        with self._lock:
            if not self._lock.wait_for(predicate, timeout):
                raise TimeoutError(f"fake provider: timed out after {timeout}s waiting for {what}")

    async def await_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10,
        what: str = "condition",
    ) -> None:
        """Await, from any event loop, until ``predicate()`` holds."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (predicate, loop, fut)
        with self._lock:
            if predicate():
                return
            self._async_waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"fake provider: timed out after {timeout}s waiting for {what}"
            ) from None
        finally:
            with self._lock:
                if entry in self._async_waiters:
                    self._async_waiters.remove(entry)

    async def wait_requests(self, n: int, timeout: float = 10) -> None:
        """Resolve once ``n`` requests have been received (awaitable from any loop)."""
        await self.await_for(lambda: len(self.requests) >= n, timeout, f"{n} requests")

    def _sent_at_least(self, request_index: int, chunks: int) -> Callable[[], bool]:
        return lambda: (
            len(self.sent_chunks) > request_index and self.sent_chunks[request_index] >= chunks
        )

    def wait_sent(self, request_index: int, chunks: int, timeout: float = 10) -> None:
        """Block until request ``request_index`` has flushed at least ``chunks`` chunks."""
        self.wait_for(
            self._sent_at_least(request_index, chunks),
            timeout,
            f"request {request_index} to send {chunks} chunks",
        )

    async def await_sent(self, request_index: int, chunks: int, timeout: float = 10) -> None:
        """Async variant of :meth:`wait_sent`."""
        await self.await_for(
            self._sent_at_least(request_index, chunks),
            timeout,
            f"request {request_index} to send {chunks} chunks",
        )

    async def await_outcome(self, request_index: int, timeout: float = 10) -> str:
        """Await until request ``request_index`` has left its loop; return its outcome."""

        def ended() -> bool:
            return len(self.outcomes) > request_index and self.outcomes[request_index] is not None

        await self.await_for(ended, timeout, f"request {request_index} to end")
        outcome = self.outcomes[request_index]
        assert outcome is not None
        return outcome

    def wait_outcome(self, request_index: int, timeout: float = 10) -> str:
        """Blocking variant of :meth:`await_outcome`."""
        self.wait_for(
            lambda: len(self.outcomes) > request_index and self.outcomes[request_index] is not None,
            timeout,
            f"request {request_index} to end",
        )
        outcome = self.outcomes[request_index]
        assert outcome is not None
        return outcome


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Run in the foreground, print the URL, exit cleanly on SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible streaming provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=Scenario.tokens)
    parser.add_argument("--delay", type=float, default=Scenario.delay)
    parser.add_argument("--first-delay", type=float, default=Scenario.first_delay)
    parser.add_argument("--fault", default=None)
    parser.add_argument("--after", type=int, default=Scenario.after)
    parser.add_argument("--text", default=None)
    parser.add_argument("--text-file", default=None, help="the reply, read from a file")
    args = parser.parse_args(argv)
    text = Path(args.text_file).read_text() if args.text_file else args.text
    scenario = Scenario(
        tokens=args.tokens, delay=args.delay, first_delay=args.first_delay,
        fault=args.fault, after=args.after, text=text,
    )  # fmt: skip
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    provider = FakeProvider(scenario, port=args.port, host=args.host)
    provider.start()
    print(provider.url, flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        provider.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def small_context_config(provider: FakeProvider) -> dict[str, Any]:
    """R3nbApp traits with one model, ``small``, whose 600-token window a few turns fill
    (the context-budget and pin/exclude tests)."""
    return {
        "models": {
            "small": {
                "model": "openai/fake",
                "api_base": provider.url,
                "api_key": "sk-test-small-123456",
                "max_context_tokens": 600,
                "max_tokens": 200,
            },
        },
        "default_model": "small",
    }
