"""The PostgreSQL backend of the store interface (``interface.Store``: the contract of
each method is written there, once), for the hub service, where several processes may
share one database.

Four parts: ``PgThread`` owns the writing connection and its thread (reconnecting after
an outage); ``PostgresOperations`` is what runs on it; ``Listener`` hears, on one LISTEN
connection, what other processes wrote; this class is the async face the engine calls.

Unlike DuckDB's backend, reads are not answered from memory: another process may have
written since, and a header, tree or snapshot served from a cache invalidated by
notifications would be stale in the window between a commit and its delivery. Each read
is one indexed query set on one snapshot. What memory does hold is listed in ``pg_ops``.

**Changes made elsewhere.** ``on_change`` is a list of callbacks ``f(cids)``, called on
the listener's thread whenever another process (another service process on the same
database) committed a write: ``cids`` is the frozenset of conversation ids it touched,
or None when it may have touched any (a write to very many conversations, or
notifications missed while the LISTEN connection was down). A callback must be quick
and thread-safe, e.g. ``loop.call_soon_threadsafe(...)`` to wake the conversation's
watchers; an exception in one is logged and ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import r3nb.engine.store.paging as paging
import r3nb.engine.store.pg_sql as pg_sql
from r3nb.engine.recent import RecentWrites
from r3nb.protocol import ConversationDict, MessageDict

from .interface import Store
from .pg_access import PostgresAccess
from .pg_attachments import PostgresAttachments
from .pg_connection import Connection, ConnectionLost, PgThread
from .pg_notify import Listener
from .pg_ops import PostgresOperations
from .pg_report import PostgresReports
from .values import HEAD, Context, Final, NewMessage, Parent, SnapshotParts

log = logging.getLogger("r3nb.store")

#: What ``on_change`` callbacks are given: conversation ids, or None for "maybe any".
ChangeListener = Callable[[frozenset[str] | None], None]

#: How long the end of a reply waits for PostgreSQL to come back (a restart, a failover)
#: before it is given up (logged; the row is then ended by the next start-up's sweep).
FINAL_PATIENCE = 600.0
#: Between two attempts to store a reply's end while PostgreSQL is away (seconds).
FINAL_RETRY = (0.1, 1.0)


class PostgresStore(PostgresAccess, PostgresReports, PostgresAttachments):
    """Conversations and messages in one PostgreSQL database, given as a libpq URL
    (``postgresql://user:password@host:port/dbname?...``)."""

    def __init__(self, url: str) -> None:
        self._ops = PostgresOperations()
        self._thread = PgThread(url, self._on_open)
        self._ops.writer = self._thread.writer
        #: The URL without its password: for logs and ``GET health``.
        self.path = self._thread.path
        #: Called with what other processes changed (see the module's docstring).
        self.on_change: list[ChangeListener] = []
        self._listener: Listener | None = None
        self._url = url

    # --- lifecycle and health --------------------------------------------------------

    def _on_open(self, con: Connection) -> None:
        self._ops.load(con)
        if self._listener is None:  # one per store, for its whole life
            self._listener = Listener(self._url, self.path, self._is_own, self._changed)
            self._listener.start()

    def _is_own(self, pid: int) -> bool:
        return pid == self._thread.backend_pid

    def _changed(self, revision: int, cids: frozenset[str] | None) -> None:
        self._ops.saw(revision)
        self._ops.forget(cids)
        for callback in list(self.on_change):
            try:
                callback(cids)
            except Exception:
                log.exception("r3nb store %s: an on_change callback failed", self.path)

    def open(self) -> None:
        self._thread.open()

    async def try_reopen(self) -> bool:
        return await self._thread.try_reopen()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.request_stop()
            # Its wait ends at the next notification: send one rather than wait it out.
            self._thread.while_connected(pg_sql.wake_listeners)
        self._thread.close()
        if self._listener is not None:
            self._listener.stop()

    def applied_migrations(self) -> list[str]:
        """The names of the migrations the database has recorded, in order."""
        return self._thread.run_blocking(self._thread.applied_migrations)

    @property
    def error(self) -> str | None:
        return self._thread.error

    @property
    def exposed(self) -> list[str]:
        return []  # nothing on this machine's disk; PostgreSQL's own access rules apply

    @property
    def revision(self) -> int:
        return self._ops.revision

    @property
    def recent(self) -> RecentWrites:
        return self._ops.recent

    @property
    def writes(self) -> int:
        return self._ops.writes

    @property
    def write_counts(self) -> OrderedDict[str, int]:
        return self._ops.write_counts

    # --- conversations ---------------------------------------------------------------

    async def create_conversation(self, title: str, author: str | None) -> ConversationDict:
        return await self._thread.run(self._ops.create_conversation, title, author)

    async def list_conversations(
        self, limit: int, cursor: str | None = None, query: str | None = None
    ) -> tuple[list[ConversationDict], str | None]:
        self._thread.require_open()
        after = paging.decode_cursor(cursor) if cursor is not None else None
        found = await self._thread.run(self._ops.list_conversations, limit + 1, after, query)
        chosen = found[:limit]
        more = len(found) > limit
        return chosen, (paging.encode_cursor(chosen[-1]) if more and chosen else None)

    async def get_conversation(self, cid: str) -> ConversationDict | None:
        return await self._thread.run(self._ops.get_conversation, cid)

    async def update_conversation(
        self, cid: str, title: str | None, model: str | None, system_prompt: str | None
    ) -> ConversationDict | None:
        return await self._thread.run(
            self._ops.update_conversation, cid, title, model, system_prompt
        )

    async def delete_conversation(self, cid: str) -> bool:
        return await self._thread.run(self._ops.delete_conversation, cid)

    # --- messages --------------------------------------------------------------------

    async def add_messages(
        self,
        cid: str,
        messages: Sequence[NewMessage],
        title_hint: str | None = None,
        parent: Parent = HEAD,
    ) -> list[MessageDict]:
        return await self._thread.run(self._ops.add_messages, cid, messages, title_hint, parent)

    async def begin_exchange(
        self, cid: str, messages: Sequence[NewMessage], title_hint: str, parent: Parent = HEAD
    ) -> list[MessageDict] | None:
        # Rows and header in one transaction: PostgreSQL commits both in one round trip.
        try:
            return await self.add_messages(cid, messages, title_hint, parent)
        except LookupError:
            return None

    async def get_message(self, mid: str) -> MessageDict | None:
        return await self._thread.run(self._ops.get_message, mid)

    async def messages_since(self, cid: str, since: int) -> list[MessageDict]:
        return await self._thread.run(self._ops.messages_since, cid, since)

    async def snapshot(self, cid: str, since: int) -> SnapshotParts | None:
        return await self._thread.run(self._ops.snapshot, cid, since)

    async def flush_partials(self, partials: Sequence[tuple[str, str]]) -> None:
        if partials:
            await self._thread.run(self._ops.flush_partials, partials)

    async def finalize(self, mid: str, final: Final) -> MessageDict | None:
        """The end of a reply is its one durable copy of the whole text: while PostgreSQL
        is out of reach (a restart) it is kept and tried again until the server is back
        (``FINAL_PATIENCE`` at most, or until the store closes), so a reply that ended
        during an outage is stored whole rather than left ``streaming``; its followers
        get ``done`` once it is."""
        deadline = time.monotonic() + FINAL_PATIENCE
        pause = FINAL_RETRY[0]
        while True:
            try:
                return await self._thread.run(self._ops.finalize, mid, final)
            except ConnectionLost:
                if self._thread.closed or time.monotonic() > deadline:
                    raise
            if pause == FINAL_RETRY[0]:
                log.warning("r3nb store %s: keeping the end of %s until it is back", self.path, mid)
            await asyncio.sleep(pause)  # a retry cadence: nothing signals PostgreSQL's return
            pause = min(pause * 2, FINAL_RETRY[1])

    async def fail_streaming(
        self, reason: str, *, older_than: float | None = None, exclude: Iterable[str] = ()
    ) -> list[str]:
        return await self._thread.run(self._ops.fail_streaming, reason, older_than, list(exclude))

    def fail_streaming_blocking(self, reason: str) -> list[str]:
        return self._thread.run_blocking(self._ops.fail_streaming, reason, None, [])

    # --- the model's context and branches --------------------------------------------

    def cached_context(self, cid: str, upto: Parent = HEAD) -> Context | None:
        """Always None: the branch may have changed in another process since anything
        this one could remember (``context_for`` is one indexed read)."""
        return None

    async def context_for(self, cid: str, upto: Parent = HEAD) -> Context:
        return await self._thread.run(self._ops.context_for, cid, upto)

    async def move_head(self, cid: str, mid: str | None, *, newest: bool) -> ConversationDict:
        return await self._thread.run(self._ops.move_head, cid, mid, newest)

    async def delete_turn(self, cid: str, mid: str) -> tuple[ConversationDict, list[str]]:
        return await self._thread.run(self._ops.delete_turn, cid, mid)

    async def set_context(self, cid: str, mid: str, mark: str | None) -> MessageDict:
        return await self._thread.run(self._ops.set_context, cid, mid, mark)

    # --- accounting ------------------------------------------------------------------

    async def usage(self, since: float, author: str | None = None) -> dict[str, dict[str, Any]]:
        return await self._thread.run(self._ops.usage, since, author)

    async def stats(self) -> dict[str, int]:
        return await self._thread.run(self._ops.stats)


if TYPE_CHECKING:  # mypy proves the backend implements the whole interface
    _conforms: type[Store] = PostgresStore
