"""The suite's provider, speaking the wire formats litellm talks to real providers.

One :class:`DialectProvider` (a :class:`~tests.provider.FakeProvider`) serves, on one port:

- OpenAI ``/v1/chat/completions`` (SSE chunks, usage, ``[DONE]``), as FakeProvider does;
- Anthropic Messages ``/anthropic/v1/messages`` (``message_start``, ``content_block_delta``,
  ``message_delta`` with ``stop_reason`` and usage, ``message_stop``; errors as
  ``{"type": "error", "error": {...}}``, 529 ``overloaded_error`` included);
- Gemini ``/v1beta/models/{model}:streamGenerateContent?alt=sse`` (``candidates`` with
  ``finishReason`` and ``usageMetadata``; errors as ``{"error": {"code", "message",
  "status"}}``);
- Ollama ``/api/chat`` and ``/api/generate`` (NDJSON ending in ``done: true`` with
  ``done_reason``, ``prompt_eval_count`` and ``eval_count``; errors as ``{"error": "…"}``)
  and ``/api/show`` (counted in ``shows``).

Every dialect takes the same :class:`~tests.provider.Scenario` and ``!directives`` in the
last user message (``!tokens=``, ``!fault=429``, ``!fault=drop !after=3``, ``!gate=2``,
``!finish=length``, ``!finish=none``…): the faults, pacing, gates and bookkeeping
(``requests``, ``paths``, ``sent``, ``outcomes``) are FakeProvider's own. ``requests``
holds each request body as the dialect sent it (``system``, ``systemInstruction``…).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import tornado.web

from tests.provider import FakeProvider, _CompletionsHandler, _Wire, message_text

__all__ = ["DialectProvider", "ForwardProxy", "self_signed_ca"]

#: Scenario finish reasons (OpenAI's words) in each dialect; ``none`` sends no finish.
_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}
_GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
_ANTHROPIC_ERROR = {
    400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error",
    500: "api_error", 503: "api_error", 529: "overloaded_error",
}  # fmt: skip
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL", 503: "UNAVAILABLE", 529: "UNAVAILABLE",
}  # fmt: skip


def _sse(event: str | None, data: dict[str, Any]) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(data, ensure_ascii=False) + "\n\n").encode()


# --------------------------------------------------------------------------- wires


class _AnthropicWire(_Wire):
    def __init__(self, index: int, model: str) -> None:
        super().__init__(index, model)
        self.model = model
        self.index = index
        self.prompt = 0  # set by the handler: message_start carries the input tokens

    def _opening(self) -> bytes:
        message = {
            "id": f"msg_fake{self.index}", "type": "message", "role": "assistant",
            "model": self.model, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.prompt, "output_tokens": 1},
        }  # fmt: skip
        return _sse("message_start", {"type": "message_start", "message": message}) + _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}},
        )  # fmt: skip

    def chunks(self, pieces: list[str], start: int, end: int) -> bytes:
        out = [self._opening()] if start == 0 else []
        for piece in pieces[start:end]:
            delta = {"type": "text_delta", "text": piece}
            out.append(
                _sse("content_block_delta",
                     {"type": "content_block_delta", "index": 0, "delta": delta})
            )  # fmt: skip
        return b"".join(out)

    def empty(self) -> bytes:
        return self._opening()

    def ending(
        self, prompt: int, completion: int, include_usage: bool, finish: str = "stop"
    ) -> bytes:
        out = _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        if finish == "none":
            return out  # the stream just ends: no message_delta, no message_stop
        delta = {"stop_reason": _ANTHROPIC_STOP.get(finish, finish), "stop_sequence": None}
        out += _sse(
            "message_delta",
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": completion}},
        )
        return out + _sse("message_stop", {"type": "message_stop"})


class _GeminiWire(_Wire):
    def __init__(self, index: int, model: str) -> None:
        super().__init__(index, model)
        self.model = model

    def _chunk(self, text: str, **extra: Any) -> bytes:
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0,
        }
        if "finishReason" in extra:
            candidate["finishReason"] = extra.pop("finishReason")
        return _sse(None, {"candidates": [candidate], "modelVersion": self.model, **extra})

    def chunks(self, pieces: list[str], start: int, end: int) -> bytes:
        return b"".join(self._chunk(piece) for piece in pieces[start:end])

    def empty(self) -> bytes:
        return b""

    def ending(
        self, prompt: int, completion: int, include_usage: bool, finish: str = "stop"
    ) -> bytes:
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": completion,
            "totalTokenCount": prompt + completion,
        }
        if finish == "none":  # usage, but never a finish reason
            return self._chunk("", usageMetadata=usage)
        reason = _GEMINI_FINISH.get(finish, finish.upper())
        return self._chunk("", finishReason=reason, usageMetadata=usage)


class _OllamaWire(_Wire):
    """NDJSON of ``/api/chat`` (``message.content``) or ``/api/generate`` (``response``)."""

    content_type = "application/x-ndjson"
    malformed = b"{not json\n"

    def __init__(self, index: int, model: str, *, chat: bool) -> None:
        super().__init__(index, model)
        self.model = model
        self.chat = chat

    def _line(self, text: str, **extra: Any) -> bytes:
        line: dict[str, Any] = {"model": self.model, "created_at": "2025-01-01T00:00:00Z"}
        if self.chat:
            line["message"] = {"role": "assistant", "content": text}
        else:
            line["response"] = text
        line.update(extra)
        return (json.dumps(line, ensure_ascii=False) + "\n").encode()

    def chunks(self, pieces: list[str], start: int, end: int) -> bytes:
        return b"".join(self._line(piece, done=False) for piece in pieces[start:end])

    def empty(self) -> bytes:
        return b""

    def error_line(self, message: str) -> bytes:
        return (json.dumps({"error": message}) + "\n").encode()  # what Ollama streams

    def ending(
        self, prompt: int, completion: int, include_usage: bool, finish: str = "stop"
    ) -> bytes:
        if finish == "none":
            return b""  # the stream ends without a ``done: true`` line
        return self._line(
            "", done=True, done_reason=finish, total_duration=1000, load_duration=10,
            prompt_eval_count=prompt, prompt_eval_duration=100, eval_count=completion,
            eval_duration=500,
        )  # fmt: skip


# --------------------------------------------------------------------------- handlers


class _AnthropicHandler(_CompletionsHandler):
    """``POST /anthropic/v1/messages``."""

    def chat_messages(self, body: dict[str, Any]) -> list[Any]:
        messages = body.get("messages")
        return messages if isinstance(messages, list) else []

    def wire(self, index: int, model: str) -> _Wire:
        wire = _AnthropicWire(index, model)
        wire.prompt = _words(self.chat_messages(json.loads(self.request.body)))
        return wire

    def _authorization(self) -> str:
        return self.request.headers.get("x-api-key", "")

    def _error(self, status: int, error: dict[str, Any]) -> None:
        kind = _ANTHROPIC_ERROR.get(status, "api_error")
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps({"type": "error", "error": {"type": kind, "message": error["message"]}})
        )


class _GeminiHandler(_CompletionsHandler):
    """``POST /v1beta/models/{model}:streamGenerateContent`` (and ``:generateContent``)."""

    method = ""

    async def post(self, model: str = "", method: str = "") -> None:  # type: ignore[override]
        self.method = method
        await super().post()

    def chat_messages(self, body: dict[str, Any]) -> list[Any]:
        out = []
        for content in body.get("contents") or ():
            role = "assistant" if content.get("role") == "model" else "user"
            out.append({"role": role, "content": content.get("parts") or []})
        return out

    def streaming(self, body: dict[str, Any]) -> bool:
        return self.method == "streamGenerateContent"

    def wire(self, index: int, model: str) -> _Wire:
        return _GeminiWire(index, self.path_args[0] if self.path_args else model)

    def _authorization(self) -> str:
        return self.request.headers.get("x-goog-api-key") or self.get_query_argument("key", "")

    def _error(self, status: int, error: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        body = {
            "code": status,
            "message": error["message"],
            "status": _GEMINI_STATUS.get(status, "UNKNOWN"),
        }
        self.finish(json.dumps({"error": body}))


class _OllamaHandler(_CompletionsHandler):
    """``POST /api/chat`` and ``POST /api/generate``."""

    chat = True

    def initialize(self, provider: FakeProvider, chat: bool = True) -> None:  # type: ignore[override]
        super().initialize(provider)
        self.chat = chat

    def chat_messages(self, body: dict[str, Any]) -> list[Any]:
        if not self.chat:
            return [{"role": "user", "content": str(body.get("prompt") or "")}]
        messages = body.get("messages")
        return messages if isinstance(messages, list) else []

    def streaming(self, body: dict[str, Any]) -> bool:
        return body.get("stream", True) is not False

    def wire(self, index: int, model: str) -> _Wire:
        return _OllamaWire(index, model, chat=self.chat)

    def _error(self, status: int, error: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": error["message"]}))


class _OllamaShowHandler(tornado.web.RequestHandler):
    """``POST /api/show``: the model's details, counted (litellm asks for its context)."""

    def initialize(self, provider: DialectProvider) -> None:
        self.provider = provider

    async def post(self) -> None:
        self.provider._shown()
        if self.provider.show_delay:  # a slow or far-away Ollama
            await asyncio.sleep(self.provider.show_delay)
        self.finish(
            {
                "modelfile": "FROM llama3.2",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B"},
                "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
                "capabilities": ["completion"],
            }
        )


def _words(messages: list[Any]) -> int:
    return sum(len(message_text(m.get("content")).split()) for m in messages if isinstance(m, dict))


# --------------------------------------------------------------------------- provider


class DialectProvider(FakeProvider):
    """FakeProvider plus Anthropic, Gemini and Ollama routes (see the module doc).

    Base URLs for litellm: ``url`` (``openai/``), ``anthropic_base`` (``anthropic/``),
    ``gemini_base`` (``gemini/``), ``root`` (``ollama/``, ``ollama_chat/``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shows: list[float] = []
        """Monotonic times of the ``/api/show`` calls received."""
        self.show_delay = 0.0
        """Seconds ``/api/show`` takes to answer."""
        self._show_lock = threading.Lock()

    @property
    def anthropic_base(self) -> str:
        return f"{self.root}/anthropic"

    @property
    def gemini_base(self) -> str:
        return f"{self.root}/v1beta"

    def routes(self) -> list[Any]:
        me = {"provider": self}
        return [
            *super().routes(),
            (r"/anthropic/v1/messages/?", _AnthropicHandler, me),
            (r"/v1beta/models/([^/:]+):(\w+)", _GeminiHandler, me),
            (r"/api/chat/?", _OllamaHandler, {**me, "chat": True}),
            (r"/api/generate/?", _OllamaHandler, {**me, "chat": False}),
            (r"/api/show/?", _OllamaShowHandler, me),
        ]

    def _shown(self) -> None:
        with self._show_lock:
            self.shows.append(time.monotonic())


# --------------------------------------------------------------------------- gateways


class ForwardProxy:
    """A tiny HTTP forward proxy on 127.0.0.1 that counts what passes through it:
    absolute-URI requests (``http://``) are forwarded with ``Connection: close``,
    ``CONNECT`` (``https://``) is tunnelled. ``requests`` lists the request lines."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forward-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        self.requests.append(f"{method} {target}")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = urllib.parse.urlsplit(target)
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
            path = url.path + (f"?{url.query}" if url.query else "")
            kept = [
                line for line in lines[1:] if line and not line.lower().startswith(
                    ("connection:", "proxy-connection:", "keep-alive:")
                )
            ]  # fmt: skip
            out = [f"{method} {path} {version}", *kept, "Connection: close", "", ""]
            up_writer.write("\r\n".join(out).encode("latin-1"))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        sink.close()


def self_signed_ca(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA certificate (written to ``folder/ca.pem``) and a server SSL context for
    127.0.0.1 signed by it, generated now (nothing is committed to the repository)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "r3nb test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_path = folder / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return ca_path, context
