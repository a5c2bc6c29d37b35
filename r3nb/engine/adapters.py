"""Stream adapters: how a reply is fetched from a provider, one per ``stream_path``.

A model entry's ``stream_path`` names an adapter (``auto`` picks ``lean`` for
``openai/…`` models and ``litellm`` for the rest). r3nb's two are declared exactly as a
third party declares one, as an entry point in the group ``r3nb.adapters``::

    # a plugin's pyproject.toml
    [project.entry-points."r3nb.adapters"]
    echo = "my_package.adapter:ADAPTER"

The name is known from the package's metadata alone (a models file naming it is
checked without importing anything); the object is imported at its first use, so a
single-user server never imports an adapter no model uses. Nothing in the engine
branches on an adapter's name: adding a provider dialect is a new adapter, not an edit
of the core.

An adapter streams ``REQUESTED`` once, right before it calls the provider (deadlines
start there, not while a library is imported), then text deltas, then one ``Usage``;
faults are ``ProviderError`` with a reason a person can act on, and text already
yielded stays with the reply (a failed stream keeps its partial text).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .models import ModelConfig

log = logging.getLogger("r3nb")

#: The entry-point group third-party adapters register in.
GROUP = "r3nb.adapters"
#: r3nb's own adapters, as ``module:attribute`` like any entry point's value.
BUILTIN = {
    "lean": "r3nb.engine.provider:LEAN",
    "litellm": "r3nb.engine.provider:LITELLM",
}
#: Not an adapter: "choose by the model name" (``ModelConfig.adapter_name``).
AUTO = "auto"


@dataclass(frozen=True)
class Usage:
    """How a reply ended: its token counts, cost, and the provider's finish reason."""

    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    finish_reason: str | None = None


class Requested:
    """Yielded once, right before the provider is called: deadlines start here, not
    while a provider library is still being imported."""


REQUESTED = Requested()

Item = str | Usage | Requested


@runtime_checkable
class Adapter(Protocol):
    """What the engine asks of an adapter (one object per name, shared by every reply)."""

    def stream(
        self, model: ModelConfig, params: dict[str, Any], messages: list[dict[str, Any]]
    ) -> AsyncIterator[Item]:
        """``REQUESTED``, then text deltas, then one ``Usage``. ``params`` are the
        entry's call parameters with the key already read (``ModelConfig.call_params``);
        ``messages`` are OpenAI-style ``{"role", "content"}`` dicts."""

    def not_ready(self) -> str | None:
        """Why a reply would have to wait now (shown by the model picker), else None.
        Must not block."""

    async def aclose(self) -> None:
        """Release connections and workers at server shutdown (idempotent)."""


class UnknownAdapter(ValueError):
    """A ``stream_path`` no installed adapter answers to, or one that failed to load."""


_loaded: dict[str, Adapter] = {}


def declared() -> dict[str, str]:
    """Every adapter name → where it lives, r3nb's first (a plugin cannot replace
    them). Read from installed packages' metadata at each call: nothing is imported."""
    found = dict(BUILTIN)
    for point in metadata.entry_points(group=GROUP):
        if point.name in found or point.name == AUTO:
            log.warning("r3nb: ignoring adapter %r from %s: the name is taken", point.name,
                        point.value)  # fmt: skip
            continue
        found[point.name] = point.value
    return found


def names() -> list[str]:
    """What ``stream_path`` may say: ``auto`` and every declared adapter."""
    return [AUTO, *declared()]


def get(name: str) -> Adapter:
    """The adapter called ``name``, imported at its first use. ``UnknownAdapter``
    naming what is installed, or why the plugin could not be loaded."""
    adapter = _loaded.get(name)
    if adapter is not None:
        return adapter
    # r3nb's own need no scan of every installed package's entry points (24 ms on the
    # loop, measured: the first ``GET health`` of a starting server, which asks every
    # built-in adapter whether it is ready).
    where = BUILTIN.get(name) or declared().get(name)
    if where is None:
        raise UnknownAdapter(
            f"no stream adapter is called {name!r}; installed: {', '.join(names())}"
        )
    module_name, _, attribute = where.partition(":")
    try:
        adapter = getattr(importlib.import_module(module_name), attribute)
    except Exception as e:  # a broken plugin must not take the server down
        raise UnknownAdapter(
            f"stream adapter {name!r} ({where}) could not be loaded: {type(e).__name__}: {e}"
        ) from e
    if not isinstance(adapter, Adapter):
        raise UnknownAdapter(f"stream adapter {name!r} ({where}) lacks stream/not_ready/aclose")
    _loaded[name] = adapter
    return adapter


def loaded() -> list[Adapter]:
    """The adapters imported so far (those a shutdown must close)."""
    return list(_loaded.values())


def loaded_by_name() -> dict[str, Adapter]:
    """The adapters imported so far, by name (health reports each)."""
    return dict(_loaded)
