"""The DuckDB backend of the store interface (``interface.Store``: the contract of each
method is written there, once).

Three parts: ``DuckDBThread`` owns the file's one connection and the one thread that
uses it; ``DuckDBOperations`` is what runs on that thread; this class is the async face
the engine calls. Reads that memory can answer exactly — conversation headers (all
mirrored at open), polls whose ``since`` is recent, a model's context when its turns are
mirrored — never hop to the thread: 200 panels polling during 50 streams once filled it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import r3nb.engine.store.paging as paging
from r3nb.engine.recent import RecentWrites
from r3nb.protocol import ConversationDict, MessageDict

from .duckdb_acl import DuckDBAccess
from .duckdb_admit import Admissions
from .duckdb_attachments import DuckDBAttachments
from .duckdb_ops import DuckDBOperations
from .duckdb_report import DuckDBReports
from .duckdb_thread import DuckDBThread
from .rows import plain_attachment
from .values import HEAD, Context, Final, NewMessage, Parent, SnapshotParts


def default_db_path() -> Path:
    """``<jupyter data dir>/r3nb/r3nb.duckdb``: per user, beside Jupyter's other state."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "r3nb" / "r3nb.duckdb"


class DuckDBStore(DuckDBAccess, DuckDBReports, DuckDBAttachments):
    """Conversations and messages in one DuckDB file (or ``":memory:"``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._ops = DuckDBOperations()
        self._thread = DuckDBThread(self.path, self._ops.load)
        self._admissions = Admissions(self._thread, self._ops)

    # --- lifecycle and health --------------------------------------------------------

    def open(self) -> None:
        self._thread.open()

    async def try_reopen(self) -> bool:
        return await self._thread.try_reopen()

    def close(self) -> None:
        self._thread.close()

    def applied_migrations(self) -> list[str]:
        """The names of the migrations the file has recorded, in order."""
        return self._thread.run_blocking(self._thread.applied_migrations)

    @property
    def error(self) -> str | None:
        return self._thread.error

    @property
    def exposed(self) -> list[str]:
        return self._thread.exposed

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

    @property
    def admission_commits(self) -> int:
        """Transactions that admitted exchanges since open (fewer than the sends when
        sends arrive together: ``duckdb_admit``)."""
        return self._admissions.commits

    # --- conversations ---------------------------------------------------------------

    async def create_conversation(self, title: str, author: str | None) -> ConversationDict:
        return await self._thread.run(self._ops.create_conversation, title, author)

    async def list_conversations(
        self, limit: int, cursor: str | None = None, query: str | None = None
    ) -> tuple[list[ConversationDict], str | None]:
        # Headers from memory; a query also matches message text, which only the file holds.
        self._thread.require_open()
        with self.recent.lock:
            everything = list(self.recent.conversations.values())
        if query:
            needle = query.casefold()
            in_text = set(await self._thread.run(self._ops.conversations_mentioning, query))
            everything = [
                c for c in everything if needle in c["title"].casefold() or c["id"] in in_text
            ]
        return paging.page(everything, limit, cursor)

    async def get_conversation(self, cid: str) -> ConversationDict | None:
        self._thread.require_open()
        with self.recent.lock:
            return self.recent.conversations.get(cid)

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
        return await self._thread.run(
            self._ops.add_messages, cid, messages, title_hint, True, parent
        )

    async def begin_exchange(
        self, cid: str, messages: Sequence[NewMessage], title_hint: str, parent: Parent = HEAD
    ) -> list[MessageDict] | None:
        # Group commit: sends arriving together share one transaction (duckdb_admit).
        found = await self._admissions.admit((cid, messages, title_hint, parent))
        return None if found is None else found[0]

    async def get_message(self, mid: str) -> MessageDict | None:
        return await self._thread.run(self._ops.get_message, mid)

    async def messages_since(self, cid: str, since: int) -> list[MessageDict]:
        return await self._thread.run(self._ops.messages_since, cid, since)

    async def snapshot(self, cid: str, since: int) -> SnapshotParts | None:
        # From memory when ``since`` is recent (every poll but a panel's first).
        self._thread.require_open()
        with self.recent.lock:
            if cid not in self.recent.conversations:
                return None
        trees = self._ops.trees
        with trees.lock:
            tree = trees.cached(cid)
        found = self.recent.snapshot(cid, since) if tree is not None else None
        if tree is not None and found is not None:
            return trees.branch_view(tree, found)
        return await self._thread.run(self._ops.snapshot, cid, since)

    async def flush_partials(self, partials: Sequence[tuple[str, str]]) -> None:
        if partials:
            await self._thread.run(self._ops.flush_partials, partials)

    async def finalize(self, mid: str, final: Final) -> MessageDict | None:
        # Ends arriving together share one transaction, after waiting admissions.
        return await self._admissions.finalize(mid, final)

    async def fail_streaming(
        self, reason: str, *, older_than: float | None = None, exclude: Iterable[str] = ()
    ) -> list[str]:
        return await self._thread.run(self._ops.fail_streaming, reason, older_than, list(exclude))

    def fail_streaming_blocking(self, reason: str) -> list[str]:
        return self._thread.run_blocking(self._ops.fail_streaming, reason, None, [])

    # --- the model's context and branches --------------------------------------------

    def cached_context(self, cid: str, upto: Parent = HEAD) -> Context | None:
        trees = self._ops.trees
        with trees.lock:
            tree = trees.cached(cid)
            if tree is None:
                return None
            path = tree.path_to(tree.head if upto is HEAD else upto)
            marks = {mid: tree.marks[mid] for mid in path if mid in tree.marks}
        messages = [self.recent.get(mid) for mid in path]
        if any(m is None for m in messages):
            return None
        return [
            (
                m["role"],
                m["content"],
                [plain_attachment(a) for a in m["attachments"]],
                marks.get(m["id"]),
            )
            for m in messages
            if m is not None and m["status"] == "complete"
        ]

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
