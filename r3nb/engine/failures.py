"""What went wrong with a provider, in words a person can act on.

One table for both stream paths: the lean reader knows an HTTP status and a body,
litellm raises exception classes that carry the status (and, for errors it wraps as
``MidStreamFallbackError``, the original error). Either way the reason names who failed
("Gemini", "Anthropic", or "the provider" for a self-hosted endpoint), the status, and
the provider's own words ("Gemini is rate limiting requests (429): Rate limit
exceeded."). No litellm import: litellm's classes are recognised by name.
"""

from __future__ import annotations

import json
import re
import ssl
from typing import Any

#: A stream that ends without saying why cannot be told from a cut one: it is an error.
ENDED_EARLY = "the stream ended early: the provider sent no finish reason (the reply may be cut)"
#: How litellm words the same thing (an ``APIConnectionError``).
_LITELLM_ENDED_EARLY = "ended before a finish_reason"

#: litellm provider prefixes → how a person calls them.
_NAMES = {
    "openai": "OpenAI", "anthropic": "Anthropic", "gemini": "Gemini", "vertex_ai": "Vertex AI",
    "ollama": "Ollama", "ollama_chat": "Ollama", "azure": "Azure OpenAI", "mistral": "Mistral",
    "groq": "Groq", "cohere": "Cohere", "deepseek": "DeepSeek", "xai": "xAI",
    "openrouter": "OpenRouter", "bedrock": "Bedrock", "together_ai": "Together AI",
}  # fmt: skip

_BY_STATUS = {
    400: "{who} refused the request (400): {detail}",
    401: "{who} rejected the API key (401); check the key configured for model {name!r}",
    403: "{who} refused access (403): {detail}",
    404: "{who} does not know model {model!r} (404): {detail}",
    408: "{who} did not answer in time (408); retry",
    413: "the request is too large for {who} (413); start a new conversation",
    429: "{who} is rate limiting requests (429): {detail}",
    503: "{who} is unavailable (503): {detail}; retry later",
    529: "{who} is overloaded (529): {detail}; retry later",
}
_SERVER_ERROR = "{who} failed ({status}): {detail}; retry later"
_CLIENT_ERROR = "{who} refused the request ({status}): {detail}"

#: Failures no HTTP status describes well; checked before the status (by class name).
_BY_CLASS = {
    "ContextWindowExceededError": "the conversation is too long for model {name!r}; "
    "start a new conversation",
    "ContentPolicyViolationError": "{who} refused the prompt (content policy): {detail}",
    "Timeout": "{who} did not answer in time; retry, or check that it is up",
    "APIConnectionError": "cannot reach {who}{where}: {detail}",
}


def who(litellm_model: str, api_base: str | None) -> str:
    """The vendor's name, except for an OpenAI-compatible endpoint of one's own."""
    prefix = litellm_model.split("/", 1)[0]
    if prefix == "openai" and api_base:
        return "the provider"
    return _NAMES.get(prefix, "the provider")


def api_base_of(params: dict[str, Any]) -> str | None:
    """The base URL a model entry's call parameters name, if any."""
    base = params.get("api_base") or params.get("base_url")
    return str(base) if base else None


def for_status(status: int, detail: str, *, who: str, name: str, model: str) -> str:
    template = _BY_STATUS.get(status)
    if template is None:
        template = _SERVER_ERROR if status >= 500 else _CLIENT_ERROR
    return template.format(who=who, status=status, detail=detail, name=name, model=model)


_UNTRUSTED = (
    "cannot reach {who}{where}: certificate not trusted ({detail}); set SSL_CERT_FILE "
    "for the Jupyter server to your gateway's CA bundle"
)
_VERIFY_FAILED = re.compile(r"certificate verify failed:?\s*([^()\]\[']*)", re.IGNORECASE)


def untrusted_certificate(error: BaseException, *, who: str, where: str) -> str | None:
    """The reason for a TLS certificate the server does not trust, wherever in the
    error's chain it hides (litellm's OpenAI path says only "Connection error.")."""
    seen: set[int] = set()
    pending: list[Any] = [error]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        found = _VERIFY_FAILED.search(str(current))
        if isinstance(current, ssl.SSLCertVerificationError) or found:
            detail = (found.group(1).strip(" .:") if found else "") or "verify failed"
            return _UNTRUSTED.format(who=who, where=where, detail=detail)
        pending += [current.__cause__, current.__context__]
        pending.append(getattr(current, "original_exception", None))
    return None


def for_exception(error: BaseException, *, who: str, name: str, model: str, where: str) -> str:
    """The reason for a litellm exception (recognised by class name and status)."""
    untrusted = untrusted_certificate(error, who=who, where=where)
    if untrusted:
        return untrusted
    cause = _unwrap(error)
    detail = provider_words(str(getattr(cause, "message", "") or cause))
    names = {cls.__name__ for cls in type(cause).__mro__}
    if _LITELLM_ENDED_EARLY in detail:
        return ENDED_EARLY
    for class_name, template in _BY_CLASS.items():
        if class_name in names:
            return template.format(who=who, detail=detail, name=name, where=where)
    if "MidStreamFallbackError" in names:
        return f"{who}'s stream broke off mid-reply: {detail}"
    status = _status(cause)
    if status == 500 and "overloaded_error" in str(cause):
        status = 529  # litellm reports Anthropic's 529 as a 500; its body says which
    if status is not None and status >= 400:
        return for_status(status, detail, who=who, name=name, model=model)
    return f"{type(cause).__name__}: {detail}"


def _unwrap(error: BaseException) -> BaseException:
    """litellm wraps errors as ``MidStreamFallbackError`` (status 503 unless the
    original had one). Before the first chunk, the original, when it carries a status,
    is what happened (a 429, a 500, a Gemini 503 "UNAVAILABLE": the wrapper's own 503
    is on the wrapper, never on the original); after it, the stream broke off."""
    original = getattr(error, "original_exception", None)
    if (
        isinstance(original, BaseException)
        and getattr(error, "is_pre_first_chunk", False)
        and _status(original) is not None
    ):
        return original
    return error


def _status(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    try:
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


_PREFIX = re.compile(r"^(litellm\.)?\w*(Error|Exception|Timeout)\s*[:\-]\s*")


def provider_words(text: str) -> str:
    """The provider's own message out of litellm's wrapping ("litellm.RateLimitError:
    RateLimitError: GeminiException - {"error": {"message": "…"}}") or a JSON body."""
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    while (shorter := _PREFIX.sub("", line, count=1)) != line:
        line = shorter
    start = text.find("{")
    if start >= 0:
        found = _message_in(text[start:])
        if found:
            return found
    return line  # cut by the caller, after redaction


def _message_in(text: str) -> str | None:
    """The message of the JSON value ``text`` starts with (trailing text ignored)."""
    try:
        body: Any = json.JSONDecoder().raw_decode(text)[0]
    except (ValueError, RecursionError):
        return None
    if isinstance(body, list) and body:
        body = body[0]  # Gemini sends a list of one error
    return message_of(body)


def message_of(body: Any) -> str | None:
    """``{"error": {"message": …}}`` (OpenAI, Gemini, Anthropic's ``{"type": "error",
    "error": {…}}``) or ``{"error": "…"}`` (Ollama) or ``{"message": …}``."""
    if not isinstance(body, dict):
        return None
    error = body.get("error", body)
    if isinstance(error, dict):
        found = error.get("message") or error.get("type")
        return str(found) if found else None
    return str(error) if error else None
