"""Settles ``streaming`` rows that no task will ever finish.

At start-up every ``streaming`` row was left by an earlier process (a crash, kill -9,
a hub stopping the server with SIGINT, which runs no shutdown hook). While running, a
tornado ``PeriodicCallback`` marks rows that went quiet for ``stale_after`` seconds and
that no live task owns.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tornado.ioloop import PeriodicCallback

from .store import StoreInterface
from .streams import StreamHub

log = logging.getLogger("r3nb.sweeper")

RESTART_REASON = "interrupted: the server restarted before the reply finished"
STALE_REASON = "stale stream: no progress for too long and no task owns it"


class Sweeper:
    def __init__(
        self, store: StoreInterface, hub: StreamHub, *, stale_after: float, interval: float
    ):
        self.store = store
        self.hub = hub
        self.stale_after = stale_after
        self.interval = interval
        self.swept = 0
        self._callback: PeriodicCallback | None = None
        self._running: asyncio.Task[list[str]] | None = None

    async def recover(self) -> list[str]:
        """Start-up (or reopen) recovery: end the replies no live task will finish. The
        replies this process is streaming are excluded: after a reopen (PostgreSQL back
        from a restart) they are still running, and their ends, kept while the store was
        away, are about to be written."""
        return self._report(
            await self.store.fail_streaming(RESTART_REASON, exclude=list(self.hub.live))
        )

    def recover_blocking(self) -> list[str]:
        return self._report(self.store.fail_streaming_blocking(RESTART_REASON))

    @staticmethod
    def _report(ids: list[str]) -> list[str]:
        if ids:
            log.warning("r3nb: %d reply(ies) interrupted by a restart marked as error", len(ids))
        return ids

    async def sweep(self) -> list[str]:
        ids = await self.store.fail_streaming(
            STALE_REASON,
            older_than=time.time() - self.stale_after,
            exclude=list(self.hub.live),
        )
        self.swept += len(ids)
        if ids:
            log.warning("r3nb: marked %d stale streaming message(s) as error", len(ids))
        return ids

    async def tick(self) -> list[str]:
        """One timer tick: reopen a store that failed (the file's lock holder may have
        gone), then sweep."""
        if self.store.error is not None:
            if not await self.store.try_reopen():
                return []
            log.warning("r3nb: store %s is usable again", self.store.path)
            await self.recover()
        return await self.sweep()

    def _on_timer(self) -> None:
        if self._running is None or self._running.done():  # never overlap two sweeps
            self._running = asyncio.ensure_future(self.tick())
            self._running.add_done_callback(_log_failure)

    def start(self) -> None:
        if self._callback is None and self.interval > 0:
            self._callback = PeriodicCallback(self._on_timer, self.interval * 1000)
            self._callback.start()

    def stop(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None


def _log_failure(task: asyncio.Task[list[str]]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("r3nb: sweep failed: %s", task.exception())
