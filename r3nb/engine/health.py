"""``GET health``: one report of the engine's state for admins, probes and benches.

Kept apart from the engine because it reads every part of it (store, hub, sweeper,
watches, models) and owns none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import TYPE_CHECKING, Any

from r3nb import __version__
from r3nb.errors import StoreUnavailable

from . import provider

if TYPE_CHECKING:
    from .core import Engine

#: The stream hub's counters health shows (absent ones as 0).
_COUNTERS = (
    "streams_started",
    "streams_complete",
    "streams_error",
    "streams_cancelled",
    "streams_timed_out",
    "flushes",
    "flush_batches",
    "rate_limited",
)


async def report(engine: Engine) -> dict[str, Any]:
    """The health report; the store's statistics only when the store can give them."""
    store = engine.store
    stats: dict[str, int] = {}
    if store.error is None:
        with contextlib.suppress(StoreUnavailable):
            stats = await store.stats()
    models = engine.model_access
    return {
        "version": __version__,
        "ok": store.error is None,
        "db_path": store.path,
        "store_error": store.error,
        "store_exposed": store.exposed,
        "provider_loaded": provider.is_loaded(),
        # ``on first use`` when no configured model needs litellm (provider.start_worker).
        "litellm": provider.litellm_state(),
        # Each stream adapter used so far (and r3nb's two): None when a reply would
        # start at once, else why it would wait (litellm importing in its worker).
        "adapters": provider.readiness(),
        "active_streams": len(engine.hub.live),
        "loop_lag": engine.loop_lag.report(),
        "tasks": len(asyncio.all_tasks()),  # a leak shows here first
        "snapshot_interval": engine.settings.snapshot_interval,
        "revision": store.revision,
        "uptime": round(time.time() - engine.started_at, 1),
        "counters": {key: engine.counters.get(key, 0) for key in _COUNTERS}
        | {"db_writes": store.writes, "swept": engine.sweeper.swept},
        "store": stats,
        "watch": engine.watches.report(),
        # Objects start-up left out of full collections (``freeze_gc_at_start``), and
        # the full collections so far: each pauses the loop for what it scans.
        "gc": {"frozen_objects": gc.get_freeze_count(), "full_collections": _full_collections()},
        "models_revision": models.revision,
        "models_file": models.models_file.state() if models.models_file else None,
    }


def _full_collections() -> int:
    return int(gc.get_stats()[2]["collections"])
