"""litellm in the process that runs it: the only module that imports litellm.

The Jupyter server never runs this: ``import litellm`` holds the GIL in long C calls
(measured: 870 ms unmarshalling one .pyc, 540 ms building pydantic models, 385 ms in
one ``json.dumps``) and its streaming costs 0.25-1 ms of CPU per chunk, both stalls of
the loop that serves every kernel websocket. The server's provider worker
(``worker.py``, a child process) runs it; embedded mode (a kernel with no server) runs
it in-process, in a background thread for the import. Both call ``stream`` here.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from types import ModuleType
from typing import Any, cast

import aiohttp

from r3nb.errors import ProviderError
from r3nb.protocol import ENV_DEMO_DELAY

from . import failures, openai_stream, raw_finish, redact
from .demo import demo_reply, word_chunks
from .models import DEMO_PROVIDER, ModelConfig
from .worker_protocol import Ending

log = logging.getLogger("r3nb.provider")
_lock = threading.Lock()
_loaded: Future[ModuleType] | None = None


class Calling:
    """Yielded once, right before the provider is called: deadlines start here, not
    while litellm is still being imported."""


CALLING = Calling()


def preload() -> Future[ModuleType]:
    """Start importing litellm in a daemon thread (idempotent); never blocks."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = Future()
            threading.Thread(
                target=_import_into, args=(_loaded,), name="r3nb-litellm-import", daemon=True
            ).start()
        return _loaded


def loaded() -> ModuleType | None:
    """litellm, if this process has imported and set it up; never waits."""
    if _loaded is not None and _loaded.done() and _loaded.exception() is None:
        return _loaded.result()
    return None


def _import_into(future: Future[ModuleType]) -> None:
    # Running futures cannot be cancelled: an awaiting stream that gets cancelled must
    # not cancel the one import every later stream waits for.
    future.set_running_or_notify_cancel()
    try:
        # litellm fetches its cost map from the internet at import unless told not to.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        # Per-chunk logging costs ~0.25 ms of CPU per token; we keep our own counters.
        litellm.disable_streaming_logging = True
        litellm.telemetry = False
        # litellm reads SSL_CERT_FILE itself, not REQUESTS_CA_BUNDLE: give it the
        # bundle the lean reader trusts (a path: it ignores an SSLContext set here).
        # Proxies need nothing: its clients and ours read HTTPS_PROXY and NO_PROXY.
        bundle = openai_stream.ca_bundle()
        if bundle and not os.environ.get("SSL_VERIFY"):
            litellm.ssl_verify = bundle
        _register_demo(litellm)
        raw_finish.watch()
        _warm_up(litellm)
        future.set_result(litellm)
    except BaseException as e:  # surfaced to every caller of load()
        future.set_exception(e)


def _warm_up(module: ModuleType) -> None:
    """One offline call (``mock_response``) on this thread's own loop: litellm's first
    ``acompletion`` imports and builds ~70 more modules and objects (1.7 s measured, on
    the caller's event loop: a stalled loop and a slow first reply). Done here, the
    first real reply costs what any other does (0.15 s vs 0.06 s in the same test)."""
    litellm = cast(Any, module)

    async def call() -> None:
        response = await litellm.acompletion(
            model="openai/r3nb-warm-up",
            api_base="http://127.0.0.1:9/v1",  # never contacted: the response is mocked
            api_key="r3nb-warm-up",
            messages=[{"role": "user", "content": "warm up"}],
            mock_response="ok",
            stream=True,
            max_retries=0,
            stream_options={"include_usage": True},
        )
        async for _ in response:
            pass

    try:
        asyncio.run(call())
        # Imported lazily by litellm's service logging on the first real call.
        import litellm._service_logger
    except Exception:  # a warm-up that fails costs only the time it saves
        log.debug("litellm warm-up failed", exc_info=True)


#: The demo model's pace for the stream this task runs (the worker gets it per request
#: from the server, whose environment tests change at run time); else the environment.
demo_delay: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "r3nb_demo_delay", default=None
)


def _register_demo(module: ModuleType) -> None:
    from litellm.llms.custom_llm import CustomLLM

    litellm = cast(Any, module)

    class DemoLLM(CustomLLM):
        """Streams ``demo_reply`` word by word with a small, configurable delay."""

        async def astreaming(  # type: ignore[override]
            self, *args: Any, **kwargs: Any
        ) -> AsyncIterator[Any]:
            messages = kwargs.get("messages") or (args[1] if len(args) > 1 else [])
            delay = float(demo_delay.get() or os.environ.get(ENV_DEMO_DELAY, "0.02"))
            text = demo_reply(messages)
            pieces = list(word_chunks(text))
            start = time.monotonic()
            for i, piece in enumerate(pieces):
                # Paced on a schedule (no drift), like the benchmarks' provider.
                wait = start + i * delay - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                yield {"text": piece, "is_finished": False, "finish_reason": "", "usage": None}
            prompt_words = sum(len(str(m.get("content", "")).split()) for m in messages)
            yield {
                "text": "",
                "is_finished": True,
                "finish_reason": "stop",
                "usage": {
                    "prompt_tokens": prompt_words,
                    "completion_tokens": len(pieces),
                    "total_tokens": prompt_words + len(pieces),
                },
            }

    handler = DemoLLM()
    entries = [e for e in litellm.custom_provider_map if e.get("provider") != DEMO_PROVIDER]
    entries.append({"provider": DEMO_PROVIDER, "custom_handler": handler})
    litellm.custom_provider_map = entries
    # litellm reads the map into its routing tables on this call.
    litellm.utils.custom_llm_setup()


async def stream(
    model: ModelConfig, params: dict[str, Any], messages: list[dict[str, Any]]
) -> AsyncIterator[str | Calling | Ending]:
    """Yield ``CALLING``, then text deltas as litellm sends them, then one ``Ending``.

    litellm must be loaded (``preload``). ``params`` are the model's resolved call
    parameters. Faults become ``ProviderError`` with a short reason, decided here where
    the exception object exists; text already yielded stays with the caller."""
    litellm = cast(Any, loaded())
    if litellm is None:
        raise RuntimeError("litellm is not loaded in this process")
    if model.litellm_model.split("/", 1)[0] in OLLAMA_PREFIXES:
        await _describe_ollama(litellm, model, params)
    if "user" in params and model.litellm_model.startswith("openai/"):
        # litellm drops ``user`` for models not in OpenAI's own catalogue; a gateway
        # (LiteLLM Proxy) behind ``openai/`` is exactly where it is wanted.
        params = {**params, "extra_body": {**(params.get("extra_body") or {}),
                                           "user": params["user"]}}  # fmt: skip
    said = raw_finish.expect(model.litellm_model)  # what the provider itself says
    raw: Any = None
    finish: str | None = None
    shown = False
    yield CALLING
    try:
        response = await litellm.acompletion(
            messages=messages,
            stream=True,
            # A retry after tokens were shown would duplicate text; r3nb's Retry button
            # is the retry.
            max_retries=0,
            stream_options={"include_usage": True},
            **params,
        )
        async for chunk in response:
            if getattr(chunk, "usage", None):
                raw = chunk.usage
            choices = chunk.choices
            if choices:
                text = choices[0].delta.content
                if text:
                    shown = True
                    yield text
                finish = getattr(choices[0], "finish_reason", None) or finish
    except asyncio.CancelledError:
        raise
    except Exception as e:
        raise ProviderError(_said_failure(said, model, shown) or describe_failure(e, model)) from e
    said_failure = _said_failure(said, model, shown)
    if said_failure:
        raise ProviderError(said_failure)
    if said is not None:
        finish = said.judge(finish)
    if finish is None:
        raise ProviderError(failures.ENDED_EARLY)
    yield ending(litellm, model, getattr(raw, "prompt_tokens", None),
                 getattr(raw, "completion_tokens", None), finish)  # fmt: skip


def ending(
    litellm: Any, model: ModelConfig, prompt: int | None, completion: int | None, finish: str | None
) -> Ending:
    """Token counts with their cost from litellm's own price list (it knows tiered
    prices and aliases), or the entry's ``*_cost_per_token``; None when unknown."""
    cost: float | None = None
    if prompt is None and completion is None:
        pass
    elif model.cost_per_token is not None:
        cost = (prompt or 0) * model.cost_per_token[0] + (completion or 0) * model.cost_per_token[1]
    else:
        try:
            prompt_cost, completion_cost = litellm.cost_per_token(
                model=model.litellm_model,
                prompt_tokens=prompt or 0,
                completion_tokens=completion or 0,
            )
            cost = float(prompt_cost + completion_cost)
        except Exception:
            cost = None  # the model is not in litellm's price list: unknown, not zero
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost": cost,
        "finish_reason": finish,
        "context_window": context_window(litellm, model.litellm_model),
    }


def context_window(litellm: Any, name: str) -> int | None:
    """The input window litellm knows for ``name`` (Ollama's: as registered here)."""
    costs: dict[str, Any] = getattr(litellm, "model_cost", {})
    info = costs.get(name) or costs.get(name.split("/", 1)[-1]) or {}
    window = info.get("max_input_tokens") or info.get("max_tokens")
    return int(window) if isinstance(window, int | float) and window > 0 else None


#: litellm prefixes of Ollama models.
OLLAMA_PREFIXES = ("ollama", "ollama_chat")
_described: set[str] = set()


async def _describe_ollama(litellm: Any, model: ModelConfig, params: dict[str, Any]) -> None:
    """Tell litellm about an Ollama model once, before its first call.

    For a model not in its price list, litellm asks ``/api/show`` several times per
    reply (cost, logging, a bridge check), at ``OLLAMA_API_BASE`` or localhost:11434,
    never at the entry's ``api_base``: ~2 requests to the wrong host per reply, some
    on the event loop. A registered model is never asked about. Its context window
    is the entry's ``max_context_tokens``, else one ``/api/show`` at the entry's own
    base, here, off the loop."""
    name = model.litellm_model
    if name in _described:
        return
    window = model.max_context_tokens or await _ollama_context(name, params)
    _described.add(name)
    info: dict[str, Any] = {
        "litellm_provider": name.split("/", 1)[0], "mode": "chat",
        "input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
    }  # fmt: skip
    if window:
        info.update(max_tokens=window, max_input_tokens=window, max_output_tokens=window)
    # register_model first looks the name up (one more /api/show at the wrong host,
    # on this loop) unless the price list already has it: seed the entry, then let
    # register_model file it everywhere else litellm looks.
    litellm.model_cost.setdefault(name, dict(info))
    litellm.register_model({name: info})


async def _ollama_context(name: str, params: dict[str, Any]) -> int | None:
    """The context length ``/api/show`` reports at the entry's base; None if it cannot."""
    base = str(
        params.get("api_base")
        or params.get("base_url")
        or os.environ.get("OLLAMA_API_BASE")
        or "http://localhost:11434"
    ).rstrip("/")
    base = base.removesuffix("/api/chat").removesuffix("/api/generate")
    headers = {"Authorization": f"Bearer {params['api_key']}"} if params.get("api_key") else {}
    try:
        url = f"{base}/api/show"
        async with openai_stream.session().post(
            url,
            json={"model": name.split("/", 1)[1]},
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=5.0),
            **openai_stream.proxy_for(url),
        ) as response:
            info = (await response.json(content_type=None)).get("model_info") or {}
        for key, value in info.items():
            if key.endswith("context_length") and isinstance(value, int) and value > 0:
                return value
    except Exception:  # unknown is fine: litellm then has no window either
        log.debug("no context length from %s/api/show", base, exc_info=True)
    return None


def _said_failure(said: raw_finish.RawFinish | None, model: ModelConfig, shown: bool) -> str | None:
    """The failure the provider reported inside its stream (Ollama's ``error`` lines),
    redacted and cut like every reason; None when it reported none."""
    if said is None:
        return None
    who = failures.who(model.litellm_model, failures.api_base_of(model.params))
    reason = said.failure(who, mid_reply=shown)
    return redact.cut(reason) if reason else None


def describe_failure(error: BaseException, model: ModelConfig) -> str:
    """A one-line, actionable reason; never the provider's multi-kilobyte message,
    never a key (redacted before the cut to length, so no part of one survives)."""
    api_base = failures.api_base_of(model.params)
    reason = failures.for_exception(
        error,
        who=failures.who(model.litellm_model, api_base),
        name=model.name,
        model=model.litellm_model,
        where=f" at {api_base}" if api_base else "",
    )
    return redact.cut(reason)
