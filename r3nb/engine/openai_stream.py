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

# One pooled client per event loop: an httpx client is bound to the loop that opened its
# connections (the server has one loop; embedded kernels and test runs may have several).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


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


def shared_client() -> httpx.AsyncClient:
    """This loop's pooled client: proxies from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``
    (``trust_env``), certificates from ``tls_context``."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = _clients[loop] = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=15.0, read=None, write=30.0, pool=30.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            verify=tls_context(),
            trust_env=True,
        )
    return client


async def aclose() -> None:
    """Close this loop's client (the engine calls it on stop)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
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
    params: dict[str, Any], messages: list[dict[str, Any]]
) -> AsyncIterator[str | dict[str, Any]]:
    """Yield text deltas, ``{"usage": {...}}`` when the provider sends usage and
    ``{"finish_reason": "..."}`` when a choice ends.

    Raises ``ProviderError`` with a short reason; text already yielded stays with the
    caller."""
    url, headers, body = _request(params, messages)
    finished = False
    try:
        async with shared_client().stream("POST", url, headers=headers, json=body) as response:
            if response.status_code >= 400:
                raise ProviderError(await _http_failure(response, params))
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, ": keep-alive" comments, "event:" lines
                payload = line[5:].strip()
                if payload == "[DONE]":
                    if not finished:  # [DONE] with no finish_reason before it
                        raise ProviderError(failures.ENDED_EARLY)
                    break
                try:
                    chunk = json.loads(payload)
                except (ValueError, RecursionError) as e:
                    raise ProviderError(
                        "the provider's stream broke off mid-reply: a malformed chunk"
                    ) from e
                if not isinstance(chunk, dict):
                    raise ProviderError("the provider's stream broke off mid-reply: bad chunk")
                if "error" in chunk:
                    words = failures.message_of(chunk) or str(chunk["error"])
                    raise ProviderError(f"the provider reported an error: {words}")
                if chunk.get("usage"):
                    yield {"usage": chunk["usage"]}
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
                    if choice.get("finish_reason"):
                        finished = True
                        yield {"finish_reason": str(choice["finish_reason"])}
    except httpx.ConnectError as e:
        where = url.rsplit("/", 2)[0]
        untrusted = failures.untrusted_certificate(e, who="the provider", where=f" at {where}")
        raise ProviderError(untrusted or f"cannot reach the provider at {where}: {e}") from e
    except httpx.TimeoutException as e:
        raise ProviderError("the provider did not answer in time; retry") from e
    except (httpx.RemoteProtocolError, httpx.ReadError) as e:
        raise ProviderError(
            "the provider's stream broke off mid-reply: the connection closed early"
        ) from e
    if not finished:
        raise ProviderError("the provider's stream broke off mid-reply: it ended without [DONE]")


async def _http_failure(response: httpx.Response, params: dict[str, Any]) -> str:
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
        response.status_code,
        detail,
        who=failures.who(model, params.get("api_base") or params.get("base_url")),
        name=model,
        model=model,
    )
