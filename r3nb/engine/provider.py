"""The provider adapter: what the engine calls to stream a reply.

Everything else sees plain values: text deltas, a ``Usage``, and ``ProviderError`` with
a reason a person can act on. r3nb's two stream adapters live here (``adapters.py``
says what an adapter is and how a third party adds one): ``LEAN``, r3nb's lean
OpenAI-compatible reader (``openai_stream``, in this process), and ``LITELLM``
(``worker_litellm``, the only importer of litellm). In the Jupyter server litellm
runs in a worker process (``start_worker``): its import and its per-chunk CPU would
hold the GIL of the loop that serves every kernel websocket. Without a worker
(embedded mode) it runs here, imported in a background thread (``preload``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Future
from types import ModuleType
from typing import Any

from r3nb.errors import ProviderError
from r3nb.protocol import ENV_DEMO_DELAY

from . import adapters, openai_stream, prices, redact, worker_litellm, worker_protocol
from .adapters import REQUESTED, Item, Requested, Usage
from .models import ModelConfig
from .worker_client import WorkerClient
from .worker_litellm import describe_failure
from .worker_protocol import Ending

__all__ = [
    "LEAN", "LITELLM", "REQUESTED", "Requested", "Usage", "describe_failure", "stream_reply",
]  # fmt: skip

_lock = threading.Lock()
_worker: WorkerClient | None = None
#: Context windows litellm reported at the end of a stream (an Ollama model's
#: ``/api/show``), by litellm model name.
_learned_windows: dict[str, int] = {}


# --- where litellm runs ------------------------------------------------------------------


def start_worker(now: bool = True) -> bool:
    """Run litellm in a worker process from now on; with ``now``, start it at once
    (never waits for it), else with the first reply that needs litellm or when a
    model that needs it is configured (``need_litellm``). True when this call created
    the worker, whose owner then stops it (``stop_worker``); False when one was
    already there (another owner's: a test session runs many servers in one process,
    sharing one worker).

    Why not always at once: the worker's import of litellm costs ~7 s of CPU and
    ~200 MB (measured), which a server whose models all use the lean reader would pay
    for the built-in demo alone: on a hub, every single-user server at every start."""
    global _worker
    with _lock:
        created = _worker is None
        if _worker is None:
            _worker = WorkerClient(dict(os.environ))
        if now:
            _worker.start()
    _warm_up_in_background()
    return created


def need_litellm() -> None:
    """A model that needs litellm is configured: start the worker if it waits for its
    first reply (nothing without a worker, or when it runs). Called from the server's
    loop thread (see ``worker_client._Process`` on the thread that spawns it)."""
    worker = _worker
    if worker is not None:
        worker.start()


async def stop_worker() -> None:
    """Stop the worker (its streams end with an error) and run litellm here again."""
    global _worker
    with _lock:
        worker, _worker = _worker, None
    if worker is not None:
        await asyncio.to_thread(worker.stop)


def worker_pid() -> int | None:
    """The live worker's process id, if there is one."""
    return _worker.pid if _worker is not None else None


def preload() -> Future[ModuleType]:
    """Import litellm into this process in a daemon thread (idempotent); never blocks.
    For running litellm here (embedded mode); the server uses ``start_worker``."""
    _warm_up_in_background()
    return worker_litellm.preload()


#: What httpx imports lazily when its first client connects (h2 if installed): the hub
#: relay's client (the lean reader's aiohttp imports what it needs with itself).
_FIRST_REQUEST_MODULES = ("httpcore", "h11", "h2.connection", "anyio._backends._asyncio")


def _warm_up_in_background() -> None:
    """Off the loop, once, what the first reply would otherwise pay on it: litellm's
    price list (3.4 MB; it answers costs and context windows in a process without
    litellm), the lean reader's certificates (certifi's plus the OS store's) and the
    ~100 modules httpx imports on its first request (a 100-300 ms stall measured)."""

    def read() -> None:
        prices.entry("")
        openai_stream.tls_context()
        for name in _FIRST_REQUEST_MODULES:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)

    threading.Thread(target=read, name="r3nb-provider-warm-up", daemon=True).start()


def is_loaded() -> bool:
    """Whether the litellm path answers without waiting: the worker said it is ready,
    or (without a worker) litellm is imported here."""
    if _worker is not None:
        return _worker.ready
    return worker_litellm.loaded() is not None


def litellm_state() -> str:
    """The litellm path for ``GET health``: ``ready``; ``loading`` (its import runs);
    ``on first use`` (a worker not started, as no configured model needs it); or
    ``stopped``."""
    worker = _worker
    if worker is None:
        return "ready" if worker_litellm.loaded() is not None else "loading"
    if not worker.started:
        return "on first use"
    if worker.ready:
        return "ready"
    return "stopped" if worker.pid is None else "loading"


async def load() -> None:
    """Wait until the litellm path is ready (the worker, else the import here)."""
    if _worker is not None:
        await _worker.wait_ready()
    else:
        await asyncio.wrap_future(preload())


def context_window(model: ModelConfig) -> int | None:
    """The model's input window in tokens: the entry's ``max_context_tokens``, else what
    litellm reported for it, else litellm's price list (read without litellm), else
    None. Never waits and never needs litellm in this process."""
    if model.max_context_tokens:
        return model.max_context_tokens
    name = model.litellm_model
    return _learned_windows.get(name) or prices.context_window(name)


# --- streaming ---------------------------------------------------------------------------


async def stream_reply(model: ModelConfig, messages: list[dict[str, Any]]) -> AsyncIterator[Item]:
    """Yield ``REQUESTED``, then text deltas as the provider sends them, then one ``Usage``,
    from the adapter the model's ``stream_path`` names.

    Faults become ``ProviderError`` with a short reason; text already yielded stays
    with the caller (a failed stream keeps its partial text).
    """
    try:
        params = model.call_params()  # the key is read once per call
        adapter = adapters.get(model.adapter_name)
    except ValueError as e:
        raise ProviderError(str(e)) from e
    async for item in adapter.stream(model, params, messages):
        yield item


def not_ready(model: ModelConfig) -> str | None:
    """Why a reply from ``model`` would have to wait or fail now, else None."""
    try:
        return adapters.get(model.adapter_name).not_ready()
    except adapters.UnknownAdapter as e:
        return str(e)


def readiness() -> dict[str, str | None]:
    """r3nb's adapters and any other imported so far → None (ready) or why not."""
    names = dict.fromkeys(adapters.BUILTIN)
    found = {name: adapters.get(name) for name in names}
    found |= {name: a for name, a in adapters.loaded_by_name().items() if name not in found}
    return {name: adapter.not_ready() for name, adapter in found.items()}


async def aclose() -> None:
    """Close every adapter used so far (server shutdown)."""
    for adapter in adapters.loaded():
        await adapter.aclose()


class _Litellm:
    """litellm, in the worker process when there is one (the server), else here."""

    async def stream(
        self, model: ModelConfig, params: dict[str, Any], messages: list[dict[str, Any]]
    ) -> AsyncIterator[Item]:
        worker = _worker
        if worker is not None:
            source = _via_worker(worker, model, params, messages)
        else:
            await load()
            source = worker_litellm.stream(model, params, messages)
        async for piece in source:
            if isinstance(piece, str):
                yield piece
            elif isinstance(piece, worker_litellm.Calling):
                yield REQUESTED
            else:
                if piece["context_window"]:
                    _learned_windows[model.litellm_model] = piece["context_window"]
                yield Usage(
                    piece["prompt_tokens"], piece["completion_tokens"], piece["cost"],
                    piece["finish_reason"],
                )  # fmt: skip

    def not_ready(self) -> str | None:
        state = litellm_state()
        if state == "ready":
            return None
        if state == "on first use":
            return (
                "litellm starts with the first reply that needs it (no configured model "
                "does): that reply waits a few seconds"
            )
        return "litellm is still loading (a few seconds after the server starts)"

    async def aclose(self) -> None:
        """The worker has its own owner (``stop_worker``): nothing to close here."""


class _Lean:
    """r3nb's OpenAI-compatible reader: no litellm on the path (openai_stream.py says
    what it saves)."""

    def stream(
        self, model: ModelConfig, params: dict[str, Any], messages: list[dict[str, Any]]
    ) -> AsyncIterator[Item]:
        return _lean(model, params, messages)

    def not_ready(self) -> str | None:
        return None

    async def aclose(self) -> None:
        await openai_stream.aclose()


LEAN: adapters.Adapter = _Lean()
LITELLM: adapters.Adapter = _Litellm()


async def _lean(
    model: ModelConfig, params: dict[str, Any], messages: list[dict[str, Any]]
) -> AsyncIterator[Item]:
    raw: Any = None
    finish: str | None = None
    yield REQUESTED
    try:
        async for item in openai_stream.stream_chat(params, messages, name=model.name):
            if isinstance(item, str):
                yield item
            elif "usage" in item:
                raw = item["usage"]
            else:
                finish = item["finish_reason"]
    except ProviderError as e:
        raise ProviderError(redact.cut(e.reason)) from e
    yield await _usage(model, raw.get("prompt_tokens") if isinstance(raw, dict) else None,
                       raw.get("completion_tokens") if isinstance(raw, dict) else None,
                       finish)  # fmt: skip


async def _via_worker(
    worker: WorkerClient, model: ModelConfig, params: dict[str, Any], messages: list[dict[str, Any]]
) -> AsyncIterator[str | worker_litellm.Calling | Ending]:
    """``worker_litellm.stream`` as the worker runs it: the same items, over its pipe."""
    spec = worker_protocol.spec(model, params)
    async for message in worker.stream(spec, messages, os.environ.get(ENV_DEMO_DELAY)):
        if "text" in message:
            yield message["text"]
        elif "requested" in message:
            yield worker_litellm.CALLING
        elif "end" in message:
            yield message["end"]
        elif "error" in message:
            raise ProviderError(str(message["error"]))


async def _usage(
    model: ModelConfig, prompt: int | None, completion: int | None, finish: str | None = None
) -> Usage:
    """A lean-path reply's usage and cost: litellm's own pricing when it is loaded in
    this process (embedded mode), else its price list read without it (``prices``)."""
    if prompt is None and completion is None:
        return Usage(None, None, None, finish)
    litellm = worker_litellm.loaded()
    if model.cost_per_token is None and litellm is None:
        # Never wait for litellm (nor import it here) to say what a reply cost; read
        # the price list in a thread unless the send's context window already did.
        args = (model.litellm_model, prompt or 0, completion or 0)
        known = prices.known(model.litellm_model)
        cost = prices.cost(*args) if known else await asyncio.to_thread(prices.cost, *args)
        return Usage(prompt, completion, cost, finish)
    ending = worker_litellm.ending(litellm, model, prompt, completion, finish)
    return Usage(prompt, completion, ending["cost"], finish)
