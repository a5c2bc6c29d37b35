"""A lean streaming client for OpenAI-compatible chat completions.

Why not litellm for these: measured here, litellm's stream wrapper costs 0.25–1 ms of CPU
per chunk (pydantic models, logging) and keeps *every* chunk object until the stream ends
(``CustomStreamWrapper.chunks``): a 100,000-token reply held ~270 MB in the server. Every
``openai/…`` model (OpenAI itself, vLLM, Ollama's /v1, LM Studio, llama.cpp…) speaks this
wire format, so the server uses this path for them by default (``"stream_path": "litellm"``
in a model entry switches back). litellm stays the path for every other provider.

Why aiohttp, not httpx: a classroom's burst of fifty sends is fifty streams read at once
on the server's one loop, and reading them was most of the loop's time. Measured here,
fifty 20-token streams cost 3.4 ms of CPU each through httpx (httpcore, anyio and h11
layers per read, and a pool walk squared in the number of connections) and 1.0 ms
through aiohttp (one C parser, bytes handed straight to a stream reader). aiohttp is
litellm's own HTTP client, so it adds no dependency to the install.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import ssl
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp.helpers import strip_auth_from_url
from yarl import URL

from r3nb.errors import ProviderError

from . import failures
from .models import OPENAI_BODY_KEYS

DEFAULT_API_BASE = "https://api.openai.com/v1"
_ERROR_BODY_LIMIT = 16 * 1024

#: One pooled session per event loop (a session is bound to the loop that opened its
#: connections: the server has one loop; embedded kernels and test runs may have several).
_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)

#: Connect within 15 s; a reply may think for minutes between chunks, so no read timeout.
TIMEOUT = aiohttp.ClientTimeout(total=None, connect=15.0, sock_read=None)


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
    else certifi's roots plus the OS store. (httpx alone read ``SSL_CERT_FILE`` only:
    an organisation's CA set as ``REQUESTS_CA_BUNDLE``, what pip and requests use, was
    not trusted.) The provider adapter gives litellm the same bundle."""
    import certifi

    bundle = ca_bundle()
    if bundle:
        return ssl.create_default_context(cafile=bundle)
    context = ssl.create_default_context(cafile=certifi.where())
    context.load_default_certs()
    return context


def session() -> aiohttp.ClientSession:
    """This loop's pooled session, certificates from ``tls_context``. Connections are
    kept 30 s between turns (a new TLS connection costs round trips and ~ms of CPU on
    the loop), with no cap on how many: a class pressing Send together opens one stream
    each. Not aiohttp's ``trust_env``: it reads ``~/.netrc`` and the proxy variables in
    a thread for every request (two thread hops per send, a third of a burst's loop
    time in thread hand-offs, profiled); ``proxy_for`` reads the variables instead."""
    loop = asyncio.get_running_loop()
    found = _sessions.get(loop)
    if found is None or found.closed:
        # The system's resolver (getaddrinfo, in a thread, cached 10 s per host), as
        # httpx and requests use: aiohttp would otherwise pick c-ares when aiodns is
        # installed, which reads only resolv.conf and /etc/hosts (no NSS modules).
        connector = aiohttp.TCPConnector(
            limit=0,
            ssl=tls_context(),
            keepalive_timeout=30.0,
            resolver=aiohttp.ThreadedResolver(),
        )
        found = _sessions[loop] = aiohttp.ClientSession(
            connector=connector, timeout=TIMEOUT, cookie_jar=aiohttp.DummyCookieJar()
        )
    return found


#: ``NO_PROXY`` as urllib reads it (not in typeshed; ``proxy_bypass`` would also ask
#: macOS's and Windows' system settings, which curl, requests and httpx do not).
_bypass: Callable[[str], bool] = getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009


#: The variables ``proxy_for`` reads (both cases, as urllib does).
_PROXY_VARIABLES = tuple(
    name
    for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    for name in (base, base.upper())
)


def proxy_for(url: str) -> dict[str, Any]:
    """``session().post`` arguments for the proxy ``HTTPS_PROXY``/``HTTP_PROXY`` name
    for ``url`` (``user:password@`` in it is the proxy's login), none where ``NO_PROXY``
    excludes its host: as curl, requests and httpx read them. Looked up once per
    scheme, host and value of those variables (urllib walks the whole environment)."""
    target = URL(url)
    env = tuple(os.environ.get(name) for name in _PROXY_VARIABLES)
    return _proxy(target.scheme, target.host or "", env)


@functools.lru_cache(maxsize=256)
def _proxy(scheme: str, host: str, env: tuple[str | None, ...]) -> dict[str, Any]:
    found = urllib.request.getproxies_environment().get(scheme)
    if not found or (host and _bypass(host)):
        return {}
    proxy, auth = strip_auth_from_url(URL(found))
    return {"proxy": proxy, "proxy_auth": auth}


async def aclose() -> None:
    """Close this loop's session (the engine calls it on stop)."""
    found = _sessions.pop(asyncio.get_running_loop(), None)
    if found is not None:
        await found.close()


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
    try:
        post = session().post(url, headers=headers, json=body, **proxy_for(url))
        async with post as response:
            if response.status >= 400:
                raise ProviderError(await _http_failure(response, params, who, name))
            lines = _lines(response.content.iter_any())
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
    except aiohttp.ClientConnectorError as e:
        where = url.rsplit("/", 2)[0]
        untrusted = failures.untrusted_certificate(e, who=who, where=f" at {where}")
        reason = untrusted or f"cannot reach {who} at {where}: {_connect_detail(e)}"
        raise ProviderError(reason) from e
    except TimeoutError as e:  # aiohttp's connect timeout is a TimeoutError too
        raise ProviderError(f"{who} did not answer in time; retry") from e
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as e:
        raise ProviderError(f"{broke}: the connection closed early") from e
    except aiohttp.ClientError as e:  # a reset, a proxy refusing, a malformed response
        detail = str(e) or type(e).__name__
        raise ProviderError(f"{broke}: {detail}" if shown else f"{who} failed: {detail}") from e
    if not finished:  # no finish reason and no [DONE]: as litellm's path words it
        raise ProviderError(failures.ENDED_EARLY)


def _connect_detail(error: aiohttp.ClientConnectorError) -> str:
    """Why a connection failed, in the words a person acts on ("connection refused",
    the resolver's "Name or service not known"), not aiohttp's "Connect call failed"."""
    cause = error.os_error
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    return (cause.strerror if cause is not None else None) or str(cause or error)


async def _read_to_end(lines: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (the body's end, at once): a response left unread
    is closed, not given back to the pool, and the next reply then opened a new
    connection, a TLS handshake each (measured here: every send of a burst connected
    anew). Bounded: a provider that keeps the stream open after ``[DONE]`` costs one
    closed connection, as before, not a hung reply."""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(1.0):
            async for _ in lines:
                pass


async def _lines(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The body's lines as bytes (SSE: ``\n``, ``\r\n`` or ``\r``; blank lines may be
    extra where a ``\r\n`` is split across reads, and SSE ignores those).

    ``pieces`` is what each network read brought (aiohttp has already undone any
    ``Content-Encoding``). Not aiohttp's line reader: it decodes nothing but waits for a
    ``\n`` only, and ``json.loads`` takes the bytes as they are."""
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
    response: aiohttp.ClientResponse, params: dict[str, Any], who: str, name: str | None
) -> str:
    raw = b""
    async for piece in response.content.iter_any():
        raw += piece
        if len(raw) > _ERROR_BODY_LIMIT:
            break
    try:
        detail = failures.message_of(json.loads(raw)) or ""
    except (ValueError, RecursionError):
        detail = ""
    detail = detail or raw.decode(errors="replace").strip() or (response.reason or "")
    model = str(params.get("model"))
    # Not cut here: the caller redacts keys first, then cuts (a key straddling a cut
    # would otherwise survive in part).
    return failures.for_status(response.status, detail, who=who, name=name or model, model=model)
