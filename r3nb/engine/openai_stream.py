"""A lean streaming client for OpenAI-compatible chat completions.

Why not litellm for these: measured here, litellm's stream wrapper costs 0.25–1 ms of CPU
per chunk (pydantic models, logging) and keeps *every* chunk object until the stream ends
(``CustomStreamWrapper.chunks``): a 100,000-token reply held ~270 MB in the server. Reading
the same SSE with httpx costs a few microseconds per chunk and keeps only the text. Every
``openai/…`` model (OpenAI itself, vLLM, Ollama's /v1, LM Studio, llama.cpp…) speaks this
wire format, so the server uses this path for them by default (``"stream_path": "litellm"``
in a model entry switches back). litellm stays the path for every other provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import ssl
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx

from r3nb.errors import ProviderError

from . import failures
from .models import OPENAI_BODY_KEYS

DEFAULT_API_BASE = "https://api.openai.com/v1"
_ERROR_BODY_LIMIT = 16 * 1024

#: Pooled clients per event loop (an httpx client is bound to the loop that opened its
#: connections: the server has one loop; embedded kernels and test runs may have several).
#: Several, not one: httpcore (1.0.x) walks every connection of a pool, squared, each time
#: a request starts or ends (``_assign_requests_to_connections``), so one pool holding a
#: burst's fifty streams spent ~1 s of the loop's CPU per burst in that walk alone
#: (522,060 ``is_idle`` calls for 50 sends, profiled). A request takes the client with
#: the fewest requests in flight: a lone reply always finds the same warm connection,
#: and fifty at once spread over ``POOLS`` pools of ~6 (1/64 of that walk).
POOLS = 8
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)
_in_flight: dict[int, int] = {}  # id(client) → requests it is serving now


#: Variables naming a CA bundle to trust, in the order they are looked at
#: (``SSL_CERT_FILE`` is OpenSSL's, ``REQUESTS_CA_BUNDLE`` what pip and requests read).
CA_BUNDLE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def ca_bundle() -> str | None:
    """The CA bundle the first of ``CA_BUNDLE_VARIABLES`` names, if that file exists."""
    for name in CA_BUNDLE_VARIABLES:
        path = os.environ.get(name)
        if path and os.path.isfile(path):
            return path
    return None


@functools.cache
def tls_context() -> ssl.SSLContext:
    """What the lean reader trusts: the CA bundle an environment variable names (a
    gateway, or a proxy that re-signs traffic), exactly as requests and OpenSSL do;
    else certifi's roots plus the OS store. (httpx alone reads ``SSL_CERT_FILE`` only:
    an organisation's CA set as ``REQUESTS_CA_BUNDLE``, what pip and requests use, was
    not trusted.) The provider adapter gives litellm the same bundle."""
    import certifi

    bundle = ca_bundle()
    if bundle:
        return ssl.create_default_context(cafile=bundle)
    context = ssl.create_default_context(cafile=certifi.where())
    context.load_default_certs()
    return context


def _new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=15.0, read=None, write=30.0, pool=30.0),
        # A class pressing Send together opens one stream each: keep them for the next
        # burst (a new TLS connection costs round trips and ~ms of CPU on the loop),
        # and for a while (30 s, not httpx's 5 s) between turns.
        limits=httpx.Limits(
            max_connections=None, max_keepalive_connections=32, keepalive_expiry=30.0
        ),
        verify=tls_context(),
        trust_env=True,
    )


def shared_client() -> httpx.AsyncClient:
    """This loop's least busy pooled client: proxies from ``HTTPS_PROXY``/``HTTP_PROXY``/
    ``NO_PROXY`` (``trust_env``), certificates from ``tls_context``."""
    loop = asyncio.get_running_loop()
    clients = _clients.get(loop)
    if clients is None or clients[0].is_closed:
        clients = _clients[loop] = [_new_client() for _ in range(POOLS)]
    return min(clients, key=lambda c: _in_flight.get(id(c), 0))


async def aclose() -> None:
    """Close this loop's clients (the engine calls it on stop)."""
    for client in _clients.pop(asyncio.get_running_loop(), None) or ():
        _in_flight.pop(id(client), None)
        await client.aclose()


def _request(
    params: dict[str, Any], messages: list[dict[str, Any]]
) -> tuple[str, dict[str, str], dict[str, Any]]:
    model = str(params["model"]).removeprefix("openai/")
    base = str(params.get("api_base") or params.get("base_url") or DEFAULT_API_BASE)
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if params.get("api_key"):
        headers["Authorization"] = f"Bearer {params['api_key']}"
    if params.get("organization"):
        headers["OpenAI-Organization"] = str(params["organization"])
    for extra in ("headers", "extra_headers"):
        headers.update(params.get(extra) or {})
    # Only what the OpenAI API defines (the registry refused anything else at start-up),
    # plus the entry's explicit ``extra_body``.
    body = {k: v for k, v in params.items() if k in OPENAI_BODY_KEYS}
    body.update(params.get("extra_body") or {})
    body.update(
        model=model,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    return base.rstrip("/") + "/chat/completions", headers, body


async def stream_chat(
    params: dict[str, Any], messages: list[dict[str, Any]], *, name: str | None = None
) -> AsyncIterator[str | dict[str, Any]]:
    """Yield text deltas, ``{"usage": {...}}`` when the provider sends usage and
    ``{"finish_reason": "..."}`` when a choice ends.

    Raises ``ProviderError`` with a short reason naming who failed ("OpenAI", or "the
    provider" for an endpoint of one's own) and the entry ``name`` a person configured;
    text already yielded stays with the caller."""
    url, headers, body = _request(params, messages)
    who = failures.who(str(params.get("model")), failures.api_base_of(params))
    broke = f"{who}'s stream broke off mid-reply"
    finished = shown = False
    client = shared_client()
    _in_flight[id(client)] = _in_flight.get(id(client), 0) + 1
    try:
        async with client.stream("POST", url, headers=headers, json=body) as response:
            if response.status_code >= 400:
                raise ProviderError(await _http_failure(response, params, who, name))
            lines = _lines(response)
            async for line in lines:
                if not line.startswith(b"data:"):
                    continue  # blank separators, ": keep-alive" comments, "event:" lines
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    if not finished:  # [DONE] with no finish_reason before it
                        raise ProviderError(failures.ENDED_EARLY)
                    await _read_to_end(lines)
                    break
                try:
                    chunk = json.loads(payload)
                except (ValueError, RecursionError) as e:
                    raise ProviderError(f"{broke}: a malformed chunk") from e
                if not isinstance(chunk, dict):
                    raise ProviderError(f"{broke}: bad chunk")
                if "error" in chunk:
                    words = failures.message_of(chunk) or str(chunk["error"])
                    when = " mid-reply" if shown else ""
                    raise ProviderError(f"{who} reported an error{when}: {words}")
                if chunk.get("usage"):
                    yield {"usage": chunk["usage"]}
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        shown = True
                        yield text
                    if choice.get("finish_reason"):
                        finished = True
                        yield {"finish_reason": str(choice["finish_reason"])}
    except httpx.ConnectError as e:
        where = url.rsplit("/", 2)[0]
        untrusted = failures.untrusted_certificate(e, who=who, where=f" at {where}")
        raise ProviderError(untrusted or f"cannot reach {who} at {where}: {e}") from e
    except httpx.TimeoutException as e:
        raise ProviderError(f"{who} did not answer in time; retry") from e
    except (httpx.RemoteProtocolError, httpx.ReadError) as e:
        raise ProviderError(f"{broke}: the connection closed early") from e
    finally:
        _in_flight[id(client)] -= 1
    if not finished:  # no finish reason and no [DONE]: as litellm's path words it
        raise ProviderError(failures.ENDED_EARLY)


async def _read_to_end(lines: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (the body's end, at once): a response left unread
    is closed, not given back to the pool, and the next reply then opened a new
    connection, a TLS handshake each (measured here: every send of a burst connected
    anew). Bounded: a provider that keeps the stream open after ``[DONE]`` costs one
    closed connection, as before, not a hung reply."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(1.0):
            async for _ in lines:
                pass


async def _lines(response: httpx.Response) -> AsyncIterator[bytes]:
    """The response's lines as bytes (SSE: ``\n``, ``\r\n`` or ``\r``; blank lines may
    be extra where a ``\r\n`` is split across reads, and SSE ignores those).

    Not ``aiter_lines``: it decodes text and splits lines through three more generator
    layers per network read, a third of the reader's CPU per token in a burst of fifty
    streams. ``json.loads`` takes the bytes as they are. A compressed body (rare for
    SSE) still goes through httpx's decoders (``aiter_bytes``)."""
    encoded = response.headers.get("content-encoding", "identity") not in ("", "identity")
    pieces = response.aiter_bytes() if encoded else response.aiter_raw()
    rest = b""
    async for piece in pieces:
        if b"\r" in piece:
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = (rest + piece).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line
    if rest:
        yield rest


async def _http_failure(
    response: httpx.Response, params: dict[str, Any], who: str, name: str | None
) -> str:
    raw = b""
    async for piece in response.aiter_bytes():
        raw += piece
        if len(raw) > _ERROR_BODY_LIMIT:
            break
    try:
        detail = failures.message_of(json.loads(raw)) or ""
    except (ValueError, RecursionError):
        detail = ""
    detail = detail or raw.decode(errors="replace").strip() or response.reason_phrase
    model = str(params.get("model"))
    # Not cut here: the caller redacts keys first, then cuts (a key straddling a cut
    # would otherwise survive in part).
    return failures.for_status(
        response.status_code, detail, who=who, name=name or model, model=model
    )
