"""The models file: model entries an admin edits while the server runs (issue 14).

``c.R3nbApp.models_file`` names a JSON file ``{"models": {...}, "default_model": "..."}``
(entries exactly as in ``c.R3nbApp.models``). Its entries are added to those of the
``models`` trait, replacing a trait entry of the same name, and its ``default_model``
wins. The file is read at start-up, and again whenever it changes (a tornado
``PeriodicCallback`` compares its inode, size and mtime: no dependency, microseconds a
check) or when ``POST models/reload`` asks.

A change applies whole or not at all: a file that cannot be read, is not JSON, or holds
an entry the registry refuses leaves the models as they were, and the reason is logged,
kept for ``GET health`` (``models_file.error``) and answered to ``POST models/reload``.
The registry is swapped in one assignment on the event loop; a reply already streaming
holds the ``ModelConfig`` it started with, so only later sends see the change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from tornado.ioloop import PeriodicCallback

from r3nb.errors import R3nbError
from r3nb.protocol import ModelsFileState

from .models import ModelRegistry, ModelSource, WithheldEnvironment

log = logging.getLogger("r3nb.models")

#: The keys a models file may hold at its top level (anything else is a typo to report).
FILE_KEYS = ("models", "default_model")
#: Larger than any list of models; a file this big is a mistake (a log, a dump).
MAX_FILE_BYTES = 1024 * 1024

#: (device, inode, size, mtime in ns) of the file, or None while it does not exist. An
#: editor that saves by renaming a new file changes the inode; one that writes in place
#: changes the size or the mtime.
Signature = tuple[int, int, int, int] | None


class ModelsFileInvalid(R3nbError):
    """The models file cannot be used as it is; the models stay as they were."""

    status = 422


def _signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read(path: str) -> tuple[Signature, bytes | None, str | None]:
    """The file's signature and bytes, or why they cannot be read (in a worker thread:
    a home directory on NFS may take its time). A file that changes while it is read
    (an editor writing in place) is read again."""
    for _ in range(3):
        before = _signature(path)
        if before is None:
            return None, None, "the file does not exist"
        try:
            with open(path, "rb") as file:
                raw = file.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            return before, None, f"cannot read it ({e.strerror or e})"
        if len(raw) > MAX_FILE_BYTES:
            return before, None, f"it is larger than {MAX_FILE_BYTES // 1024} KiB"
        if _signature(path) == before:
            return before, raw, None
    # Still being written: not seen yet, so the next check reads it again.
    return None, None, "it kept changing while being read"


def parse_models_file(raw: bytes) -> tuple[Mapping[str, Any], str | None]:
    """The entries and default of a models file's bytes; ``ValueError`` saying what is
    wrong (never quoting the file: it may hold keys)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text") from None
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}"
        raise ValueError(f"it is not valid JSON: {e.msg} at {where}") from None
    if not isinstance(data, dict):
        raise ValueError('it must hold a JSON object: {"models": {...}, "default_model": "..."}')
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(map(repr, unknown))}; a models file holds "
            f"{' and '.join(map(repr, FILE_KEYS))}"
        )
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ValueError('\'models\' must be an object: {"name": {"model": ...}, ...}')
    default = data.get("default_model")
    if default is not None and not isinstance(default, str):
        raise ValueError("'default_model' must be the name of a model")
    return models, default or None


class ModelsFile:
    """One models file: what was last read from it, and whether it has changed since.

    ``base`` is the ``models`` trait (re-read with the file each time, so the two always
    combine the same way); ``environ`` is where keys are found, withheld ones included.
    """

    def __init__(self, path: str, base: ModelSource, environ: WithheldEnvironment) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.base = base
        self.environ = environ
        #: When the file's content was last applied (None: never).
        self.loaded_at: float | None = None
        #: Why the file as it is now is not applied (None: it is).
        self.error: str | None = None
        self._seen: Signature | bool = False  # False: never looked
        self._lock = asyncio.Lock()
        self._callback: PeriodicCallback | None = None
        self._running: asyncio.Future[Any] | None = None

    def state(self) -> ModelsFileState:
        return {"path": self.path, "loaded_at": self.loaded_at, "error": self.error}

    def fallback(self) -> ModelRegistry:
        """The ``models`` trait alone, for a start-up whose file cannot be used. Its
        default may name a model of the file: then the usual default applies."""
        default = self.base.default
        known = default is None or default == "demo" or default in self.base.models
        return ModelRegistry(self.base.models, default if known else None, environ=self.environ)

    def load_blocking(self) -> ModelRegistry:
        """At start-up, before the loop serves anything: the registry of the trait and
        the file, or of the trait alone (the reason kept in ``error``) when the file
        cannot be used. An invalid ``models`` trait still raises, as without a file."""
        signature, raw, problem = _read(self.path)
        try:
            return self._build(signature, raw, problem)
        except ModelsFileInvalid:
            return self.fallback()

    async def reload(self) -> ModelRegistry:
        """The registry the file gives now; ``ModelsFileInvalid`` when it cannot be used."""
        async with self._lock:  # a slow read must not apply after a newer one
            return await self._reload()

    async def reload_if_changed(self) -> ModelRegistry | None:
        """As ``reload``, or ``None`` when the file is as it was when last read."""
        async with self._lock:
            if await asyncio.to_thread(_signature, self.path) == self._seen:
                return None
            return await self._reload()

    async def _reload(self) -> ModelRegistry:
        signature, raw, problem = await asyncio.to_thread(_read, self.path)
        return self._build(signature, raw, problem)

    def _build(self, signature: Signature, raw: bytes | None, problem: str | None) -> ModelRegistry:
        self._seen = signature
        try:
            if problem is not None or raw is None:
                raise ValueError(problem or "it cannot be read")
            models, default = parse_models_file(raw)
            layer = ModelSource(
                models, default, f"{self.path}: models", f"{self.path}: default_model"
            )
            registry = ModelRegistry(
                self.base.models, self.base.default, environ=self.environ, layers=[layer]
            )
        except ValueError as e:
            self._refuse(str(e) if str(e).startswith(self.path) else f"{self.path}: {e}")
        except Exception as e:  # a file must never take the server down: say so, go on
            log.exception("r3nb: unexpected failure reading the models file %s", self.path)
            self._refuse(f"{self.path}: cannot be used ({type(e).__name__}; see the server log)")
        self.error = None
        self.loaded_at = time.time()
        removed = self.environ.withhold(registry.secret_env_names())
        if removed:
            log.info("r3nb: kernels and terminals started from now on will not inherit %s",
                     ", ".join(removed))  # fmt: skip
        return registry

    def _refuse(self, reason: str) -> NoReturn:
        if reason != self.error:  # once per change of the file, not at every check
            log.error("r3nb: models file not applied, the models stay as they were: %s", reason)
        self.error = reason
        raise ModelsFileInvalid(reason)

    # --- watching ------------------------------------------------------------------------

    def watch(self, apply: Callable[[ModelRegistry], object], interval: float) -> None:
        """Check the file every ``interval`` seconds; ``apply`` a registry that changed."""
        if self._callback is not None or interval <= 0:
            return

        async def check() -> None:
            try:
                registry = await self.reload_if_changed()
            except ModelsFileInvalid:
                return  # logged, and kept for health, by ``_build``
            if registry is not None:
                apply(registry)

        def on_timer() -> None:
            if self._running is None or self._running.done():  # never two checks at once
                self._running = asyncio.ensure_future(check())
                self._running.add_done_callback(_log_failure)

        self._callback = PeriodicCallback(on_timer, interval * 1000)
        self._callback.start()

    def stop(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        if self._running is not None and not self._running.done():
            self._running.cancel()


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("r3nb: checking the models file failed: %r", future.exception())
