"""Embedded mode: r3nb's engine inside the kernel, for when no server extension answers
(plain IPython, VS Code, Colab, a Jupyter server without r3nb).

The same ``Engine`` as the server runs on its own thread with its own asyncio loop (the
sweeper's tornado ``PeriodicCallback`` runs on it), and every call goes through
``r3nb.engine.api.dispatch`` — the route table the HTTP handler uses — so validation,
errors and replies are identical in both modes. DuckDB admits one process per file:
kernels share ``<jupyter data dir>/r3nb/embedded.duckdb`` while only one holds it; a
second kernel gets its own ``embedded-<pid>.duckdb`` and says so. ``R3NB_DB`` names the
file instead; ``R3NB_MODELS`` (JSON, the shape of ``c.R3nbApp.models``) and
``R3NB_DEFAULT_MODEL`` configure models (default: the offline ``demo``); every other
setting comes from the Jupyter server config files or ``R3NB_<NAME>`` (``settings.py``).
Which mode a kernel runs in is decided in ``connect.py``.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import dataclasses
import getpass
import json
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from r3nb.kernel.client import BaseClient, Event, R3nbClientError, StreamStalled, error_from
from r3nb.protocol import ENV_DB, ENV_DEFAULT_MODEL, ENV_MODELS


class EmbeddedClient(BaseClient):
    """The engine inside this kernel: its own thread, asyncio loop and DuckDB file."""

    mode = "embedded"

    def __init__(self, db_path: str | None = None) -> None:
        from r3nb.engine import provider, settings
        from r3nb.engine.core import Caller, Engine
        from r3nb.engine.models import ModelRegistry
        from r3nb.errors import StoreUnavailable

        provider.preload()  # litellm takes seconds to import: start now, in the background
        try:
            models = json.loads(os.environ.get(ENV_MODELS) or "{}")
            registry = ModelRegistry(models, os.environ.get(ENV_DEFAULT_MODEL) or None)
        except ValueError as e:  # bad JSON or a bad entry: say which variable to fix
            raise R3nbClientError(0, f"{ENV_MODELS} / {ENV_DEFAULT_MODEL}: {e}") from e
        try:  # the same settings a server would take, from its config files or R3NB_*
            chosen = settings.from_environment()
        except ValueError as e:
            raise R3nbClientError(0, str(e)) from e
        explicit = db_path or os.environ.get(ENV_DB)
        path = explicit or str(embedded_db_path())
        self.note = ""
        engine = Engine(dataclasses.replace(chosen, db_path=path), registry)
        try:
            engine.store.open()
        except StoreUnavailable as e:
            engine.store.close()
            if explicit:
                raise R3nbClientError(503, e.message) from e
            # DuckDB admits one process per file: another kernel holds the shared one.
            path = str(embedded_db_path(per_process=True))
            engine = Engine(dataclasses.replace(chosen, db_path=path), registry)
            try:
                engine.store.open()
            except StoreUnavailable as e2:
                engine.store.close()
                raise R3nbClientError(503, e2.message) from e2
            self.note = (
                f"r3nb: the shared embedded store is in use by another kernel; "
                f"this kernel keeps its conversations in {path}"
            )
        self.engine = engine
        self.db_path = path
        self.poll_interval = engine.settings.snapshot_interval
        self._caller = Caller(_user(), "embedded")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="r3nb-embedded-engine", daemon=True
        )
        self._thread.start()
        self._run(engine.start())  # recovery, then the sweeper's PeriodicCallback
        self._closed = False
        atexit.register(self.close)

    def _run(self, coro: Any, timeout: float | None = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close(self) -> None:
        """Finish in-flight streams (their partial text is kept), close DuckDB, stop."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._run(self.engine.stop(), timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _dispatch(self, method: str, path: str, body: Any, query: dict[str, str] | None) -> Any:
        from r3nb.engine.api import Call, dispatch

        call = Call(method=method, path=path, query=query or {}, body=body, caller=self._caller)
        return dispatch(self.engine, call)

    def call(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        from r3nb.engine.api import BytesReply, JsonReply, StreamReply, TextReply

        reply = self._reply(method, path, body, query)
        if isinstance(reply, tuple):
            return reply
        if isinstance(reply, TextReply):  # a CSV report: its text
            return 200, reply.text
        if isinstance(reply, BytesReply):  # an attached image: a data URL (JSON has no bytes)
            data = base64.b64encode(reply.data).decode("ascii")
            return 200, f"data:{reply.content_type};base64,{data}"
        if isinstance(reply, StreamReply):  # a stream asked for as JSON: drain it
            final: Any = None
            for name, data in self._iterate(reply):
                if name == "done":
                    final = data
            return 200, final
        assert isinstance(reply, JsonReply)
        return reply.status, reply.body

    def _reply(self, method: str, path: str, body: Any, query: dict[str, str] | None) -> Any:
        """The route's reply, or ``(status, ErrorBody)`` as the HTTP handler writes it."""
        from r3nb.errors import R3nbError

        try:
            return self._run(self._dispatch(method, path, body, query))
        except R3nbError as e:
            return e.status, {"error": e.message, **e.extra}

    def events(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> Iterator[Event]:
        from r3nb.engine.api import JsonReply

        reply = self._reply(method, path, body, query)
        if isinstance(reply, tuple):
            raise error_from(*reply)
        if isinstance(reply, JsonReply):
            raise R3nbClientError(400, f"{method} {path} is not an event stream")
        yield from self._iterate(reply)

    def _iterate(self, reply: Any) -> Iterator[Event]:
        """Pump an async event iterator on the engine loop into this (sync) thread."""
        from r3nb.errors import R3nbError

        inbox: queue.Queue[tuple[str, Any] | BaseException | None] = queue.Queue()

        async def pump() -> None:
            try:
                async for event in reply.events:
                    inbox.put(event)
                inbox.put(None)
            except R3nbError as e:
                inbox.put(("error", {"error": e.message}))
                inbox.put(None)
            except BaseException as e:
                inbox.put(e)
                raise
            finally:
                await reply.events.aclose()

        future = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        try:
            while True:
                try:
                    item = inbox.get(timeout=self.stall_seconds)
                except queue.Empty:
                    raise StreamStalled() from None
                if item is None:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, asyncio.CancelledError):
                        return
                    raise R3nbClientError(500, f"{type(item).__name__}: {item}")
                yield item
        finally:
            # Only this follower stops (an interrupted reader, a closed relay): the
            # stream itself goes on in the engine, as it does on the server.
            future.cancel()


def embedded_db_path(per_process: bool = False) -> Path:
    from jupyter_core.paths import jupyter_data_dir

    name = f"embedded-{os.getpid()}.duckdb" if per_process else "embedded.duckdb"
    return Path(jupyter_data_dir()) / "r3nb" / name


def _user() -> str:
    try:
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
    except Exception:
        return "me"
