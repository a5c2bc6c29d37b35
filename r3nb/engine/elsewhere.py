"""Stop across processes that share one store (hub service processes on PostgreSQL).

A Stop handled by a process that does not stream the reply ends the row there; the
process streaming it hears of the change (the store's ``on_change``) and stops calling
the provider. Stores one process owns (DuckDB) have no ``on_change``: all of this is
then idle.
"""

from __future__ import annotations

import asyncio
import contextlib

from tornado.ioloop import IOLoop

from r3nb.errors import StoreUnavailable
from r3nb.protocol import MessageDict

from . import lifecycle
from .store import Final, StoreInterface
from .streams import LiveStream, StreamHub


class Elsewhere:
    """What this process does about replies other processes stream or stop."""

    def __init__(self, store: StoreInterface, hub: StreamHub) -> None:
        self.store = store
        self.hub = hub
        #: A store several processes share (PostgreSQL) says what the others wrote.
        self.shared = hasattr(store, "on_change")
        self._checks: set[asyncio.Future[None]] = set()

    def listen(self) -> None:
        """Hear what other processes write to a shared store (``on_change``, from its
        listener thread): a reply this process streams may have been stopped there."""
        hooks = getattr(self.store, "on_change", None)
        if hooks is None:
            return
        loop = IOLoop.current()  # the loop the timers run on (add_callback: any thread)

        def changed(cids: frozenset[str] | None) -> None:
            loop.add_callback(self.changed, cids)

        hooks.append(changed)

    def changed(self, cids: frozenset[str] | None) -> None:
        """Another process wrote to ``cids`` (None: maybe any): check the replies this
        process streams there."""
        streams = [s for s in self.hub.live.values() if cids is None or s.conversation_id in cids]
        for stream in streams:
            task = asyncio.ensure_future(self._stop_if_ended(stream))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    async def end_stored(self, message: MessageDict, by: str) -> MessageDict | None:
        """End the row of a reply streaming in another process on the same database,
        with the text that process last flushed; None when this store is not shared
        (the row then streams nowhere, or has already ended)."""
        if message["status"] != lifecycle.STREAMING or not self.shared:
            return None
        status, note = lifecycle.interrupted(None, by)
        ended = await self.store.finalize(message["id"], Final(message["content"], status, note))
        return ended or message

    async def _stop_if_ended(self, stream: LiveStream) -> None:
        """Stop calling the provider for a reply whose row another process ended (a
        Stop there): its end is already stored, so this one's is a no-op (first wins)."""
        with contextlib.suppress(StoreUnavailable):
            stored = await self.store.get_message(stream.message_id)
            if stored is not None and stored["status"] != lifecycle.STREAMING:
                await self.hub.cancel(stream.message_id, by="another r3nb process")
