"""The DuckDB backend's operations, as they run on its DB thread: each statement
(``duckdb_sql``), then revision numbering, the in-memory mirror (``recent.py``) and the
branch trees (``trees.py``) kept in step, in the order that keeps polls consistent.

Writes happen one at a time on that thread, so revisions are handed out in commit order:
the mirror's promise (everything at or below ``visible`` is reflected) rests on it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

import r3nb.engine.store.duckdb_sql as sql
import r3nb.engine.store.rows as rows
from r3nb.engine.branches import Tree
from r3nb.engine.recent import RecentWrites
from r3nb.protocol import ConversationDict, MessageDict

from .duckdb_thread import transaction
from .trees import TreeCache, decorated
from .values import DEFAULT_TITLE, HEAD, Context, Final, NewMessage, Parent, SnapshotParts, new_id

log = logging.getLogger("r3nb.store")


@dataclass
class Exchange:
    """An insert prepared on the DB thread: rows with revisions, the header after it."""

    tree: Tree
    values: list[list[Any]]
    header: ConversationDict


#: How many per-message write counts to remember (for health and tests); bounded.
WRITE_COUNT_MEMORY = 10_000


class DuckDBOperations:
    """State the DB thread owns (the revision counter, write counts) and shares with the
    loop through locks (``recent``, ``trees``). Every method runs on the DB thread;
    ``con`` is the connection of the latest open (``load``)."""

    def __init__(self) -> None:
        self._con: duckdb.DuckDBPyConnection | None = None
        self.revision = 0
        self.recent = RecentWrites(0)
        self.trees = TreeCache()
        self.writes = 0
        self.write_counts: OrderedDict[str, int] = OrderedDict()
        #: The text stored so far of each streaming message this process writes: a
        #: flush appends only what follows it (a reference to the hub's own string).
        self._written: dict[str, str] = {}

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        assert self._con is not None, "the store was never opened"
        return self._con

    def load(self, con: duckdb.DuckDBPyConnection) -> None:
        """After each open: the revision, and every header mirrored from the file."""
        self._con = con
        self.revision = sql.max_revision(con)
        self.recent = RecentWrites(self.revision)
        self.trees.clear()
        self._written.clear()
        for conversation in sql.all_conversations(con):
            self.recent.put_conversation(conversation)

    def _next_revision(self) -> int:
        self.revision += 1
        return self.revision

    def _count_write(self, message_ids: Iterable[str]) -> None:
        for mid in message_ids:
            self.writes += 1
            self.write_counts[mid] = self.write_counts.pop(mid, 0) + 1
        while len(self.write_counts) > WRITE_COUNT_MEMORY:
            self.write_counts.popitem(last=False)

    # --- conversations ---------------------------------------------------------------

    def create_conversation(self, title: str, author: str | None) -> ConversationDict:
        now = time.time()
        conversation = rows.new_conversation(
            id=new_id(), title=title, author=author, created_at=now, updated_at=now,
            revision=self._next_revision(),
        )  # fmt: skip
        sql.insert_conversation(self.con, conversation)
        with self.trees.lock:
            self.trees.remember(conversation["id"], Tree((), None))
        self.recent.put_conversation(conversation)
        return conversation

    def conversations_mentioning(self, query: str) -> list[str]:
        return sql.conversations_mentioning(self.con, query)

    def update_conversation(
        self, cid: str, title: str | None, model: str | None, system_prompt: str | None
    ) -> ConversationDict | None:
        conversation = self.recent.conversations.get(cid)
        if conversation is None:
            return None
        # A new revision (observers see the change) but not a new activity time: a
        # rename does not move the conversation to the top of everyone's list.
        header: ConversationDict = {
            **conversation,
            "title": title or conversation["title"],
            "model": model or conversation["model"],
            "system_prompt": conversation["system_prompt"]
            if system_prompt is None
            else (system_prompt or None),
            "revision": self._next_revision(),
        }
        sql.update_header(self.con, header)
        self.recent.put_conversation(header)
        return header

    def delete_conversation(self, cid: str) -> bool:
        deleted = sql.delete_conversation(self.con, cid)
        self.trees.forget(cid)
        self.recent.drop_conversation(cid, self._next_revision())
        return deleted

    def touch_conversation(self, header: ConversationDict) -> None:
        """Persist a conversation's header (activity time, revision, first-prompt title).
        Derived data: after an exchange it is written right after the acknowledgement."""
        sql.update_header(self.con, header)

    # --- messages --------------------------------------------------------------------

    def add_messages(
        self,
        cid: str,
        messages: Sequence[NewMessage],
        title_hint: str | None,
        touch_now: bool = True,
        parent: Parent = HEAD,
    ) -> list[MessageDict]:
        exchange = self.prepare(cid, messages, title_hint, parent)
        sql.insert_messages(self.con, exchange.values)
        if touch_now:
            self.touch_conversation(exchange.header)
        return self.apply(exchange)

    def prepare(
        self, cid: str, messages: Sequence[NewMessage], title_hint: str | None, parent: Parent
    ) -> Exchange:
        """The rows and header of an insert, revisions assigned; nothing written yet.
        ``LookupError`` for an unknown conversation or parent."""
        now = time.time()
        tree = self.tree(cid)
        conversation = self.recent.conversations.get(cid)
        if conversation is None or tree is None:
            raise LookupError(cid)
        with self.trees.lock:
            above = tree.head if parent is HEAD else parent
            if above is not None and above not in tree.parent:
                raise LookupError(above)
        # seq runs 1..n per conversation, so the mirrored count is the last seq: no
        # max(seq) scan over every message on each insert.
        seq = conversation["message_count"]
        values = []
        for m in messages:
            seq += 1
            mid = m.id or new_id()
            values.append(rows.new_message_row(
                m, id=mid, conversation_id=cid, seq=seq, created_at=now, updated_at=now,
                revision=self._next_revision(), parent_id=above,
            ))  # fmt: skip
            above = mid
        title = title_hint if title_hint and conversation["title"] == DEFAULT_TITLE else None
        header: ConversationDict = {
            **conversation,
            "updated_at": now,
            "revision": self._next_revision(),
            "message_count": seq,
            "title": title or conversation["title"],
            "model": next((m.model for m in messages if m.model), conversation["model"]),
            "head_id": above,
        }
        return Exchange(tree, values, header)

    def apply(self, exchange: Exchange) -> list[MessageDict]:
        """After the commit: the rows into the tree and the mirror, in that order."""
        tree, header = exchange.tree, exchange.header
        created = [rows.message_from_row(v) for v in exchange.values]
        self._count_write(m["id"] for m in created)
        for message in created:
            if message["status"] == "streaming":
                self._written[message["id"]] = message["content"]
        # The tree first: a poll between these steps then sees a new message on the
        # branch only once the message itself is there (never the reverse).
        with self.trees.lock:
            for message in created:
                tree.add(message["id"], message["parent_id"])
            tree.set_head(header["head_id"])
        self.recent.put_many(created)
        self.recent.put_conversation(header)
        with self.trees.lock:
            return [decorated(tree, m) for m in created]

    def get_message(self, mid: str) -> MessageDict | None:
        """As clients are given it (with ``siblings``)."""
        message = sql.select_message(self.con, mid)
        return self._decorate(message) if message is not None else None

    def messages_since(self, cid: str, since: int) -> list[MessageDict]:
        return sql.messages_since(self.con, cid, since)

    def context_for(self, cid: str, upto: Parent) -> Context:
        tree = self.tree(cid)
        if tree is None:
            return []
        with self.trees.lock:
            path = tree.path_to(tree.head if upto is HEAD else upto)
        return sql.completed_turns(self.con, cid, path)

    def snapshot(self, cid: str, since: int) -> SnapshotParts | None:
        with self.recent.lock:
            conversation = self.recent.conversations.get(cid)
        tree = self.tree(cid)
        if conversation is None or tree is None:
            return None
        messages = sql.messages_since(self.con, cid, since)
        found = (conversation, messages, self.revision, self.recent.streaming_in(cid))
        return self.trees.branch_view(tree, found)

    def flush_partials(self, partials: Sequence[tuple[str, str]]) -> None:
        """Append-only: a message's new text is what follows the text last written for
        it (kept here, per streaming message); text that does not extend it (not what a
        stream sends, but the interface allows it) replaces the content whole."""
        now = time.time()
        appends: list[tuple[str, int, str]] = []
        rewrites: list[tuple[str, str]] = []
        for mid, text in partials:
            written = self._written_text(mid)
            if written is None:
                continue  # unknown or no longer streaming: left alone
            if text.startswith(written):
                if len(text) > len(written):
                    appends.append((mid, len(written), text[len(written) :]))
            else:
                rewrites.append((mid, text))
        revisions = [(mid, self._next_revision()) for mid, _ in partials]
        live = set(sql.flush_partials(self.con, now, appends, rewrites, revisions))
        self._count_write(mid for mid, _ in partials)
        updated: list[MessageDict] = []
        for (mid, text), (_, rev) in zip(partials, revisions, strict=True):
            if mid not in live:
                self._written.pop(mid, None)
                continue
            self._written[mid] = text
            cached = self.recent.get(mid)
            if cached is None:
                cached = sql.select_message(self.con, mid)
            if cached is not None:
                updated.append({**cached, "content": text, "updated_at": now, "revision": rev})
        self.recent.put_many(updated)

    def _written_text(self, mid: str) -> str | None:
        """The text stored for streaming message ``mid`` (content and chunks); None if
        it is unknown or no longer streams. From memory, else (after a reopen) the file."""
        written = self._written.get(mid)
        if written is None:
            message = sql.select_message(self.con, mid)
            if message is not None and message["status"] == "streaming":
                written = self._written[mid] = message["content"]
        return written

    def finalize(self, mid: str, final: Final) -> MessageDict | None:
        return self.finalize_many([(mid, final)])[0]

    def finalize_many(self, ends: Sequence[tuple[str, Final]]) -> list[MessageDict | None]:
        """``finalize`` of each (id, final) of ``ends``, in one transaction."""
        numbered = [(mid, final, self._next_revision()) for mid, final in ends]
        found = sql.finalize_many(self.con, numbered, time.time())
        out: list[MessageDict | None] = []
        for (mid, _), message in zip(ends, found, strict=True):
            self._written.pop(mid, None)
            self._count_write([mid])
            if message is None:
                out.append(self.get_message(mid))
            else:
                self.recent.put(message)
                out.append(self._decorate(message))
        return out

    def fail_streaming(
        self, reason: str, older_than: float | None, exclude: list[str]
    ) -> list[str]:
        cutoff = older_than if older_than is not None else float("inf")
        failed = sql.fail_streaming(
            self.con, reason, time.time(), self.revision + 1, cutoff, exclude
        )
        if not failed:
            return []
        self._next_revision()
        for m in failed:
            self._written.pop(m["id"], None)
        self._count_write(m["id"] for m in failed)
        self.recent.put_many(failed)
        return [m["id"] for m in failed]

    # --- branches --------------------------------------------------------------------

    def tree(self, cid: str) -> Tree | None:
        """The conversation's tree, read once from the file when not in memory; None for
        an unknown conversation."""
        with self.trees.lock:
            tree = self.trees.cached(cid)
        if tree is not None:
            return tree
        header = self.recent.conversations.get(cid)
        if header is None:
            return None
        found = sql.tree_rows(self.con, cid)
        marks = {mid: mark for mid, _, mark in found if mark is not None}
        tree = Tree(((mid, parent) for mid, parent, _ in found), header["head_id"], marks)
        with self.trees.lock:
            self.trees.remember(cid, tree)
        return tree

    def _decorate(self, message: MessageDict) -> MessageDict:
        tree = self.tree(message["conversation_id"])
        return message if tree is None else self.trees.decorate(tree, message)

    def move_head(self, cid: str, mid: str | None, newest: bool) -> ConversationDict:
        tree = self.tree(cid)
        header = self.recent.conversations.get(cid)
        if tree is None or header is None:
            raise LookupError(cid)
        with self.trees.lock:
            if mid is not None and mid not in tree.parent:
                raise LookupError(mid)
            head = tree.newest_leaf(mid) if mid is not None and newest else mid
        # A new revision, so observers' next poll carries the new branch.
        moved: ConversationDict = {**header, "head_id": head, "revision": self._next_revision()}
        sql.update_header(self.con, moved)
        with self.trees.lock:
            tree.set_head(head)
        self.recent.put_conversation(moved)
        return moved

    def delete_turn(self, cid: str, mid: str) -> tuple[ConversationDict, list[str]]:
        tree = self.tree(cid)
        header = self.recent.conversations.get(cid)
        if tree is None or header is None:
            raise LookupError(cid)
        with self.trees.lock:
            if mid not in tree.parent:
                raise LookupError(mid)
            above = tree.parent[mid]
            deleted = [mid, *tree.children().get(mid, [])]
            moved = [m for d in deleted[1:] for m in tree.children().get(d, [])]
        revision = self._next_revision()
        with transaction(self.con):
            changed = sql.delete_turn(self.con, cid, deleted, moved, above, revision)
            with self.trees.lock:
                head = above if tree.head in deleted else tree.head
            shrunk: ConversationDict = {
                **header,
                "head_id": head,
                "message_count": header["message_count"] - len(deleted),
                "revision": self._next_revision(),
            }
            sql.update_header(self.con, shrunk)
        self._count_write(m["id"] for m in changed)
        with self.trees.lock:
            tree.remove_turn(mid)
        self.recent.drop_messages(cid, deleted)
        self.recent.put_many(changed)  # the last version of each wins
        self.recent.put_conversation(shrunk)
        return shrunk, deleted

    def set_context(self, cid: str, mid: str, mark: str | None) -> MessageDict:
        tree = self.tree(cid)
        if tree is None:
            raise LookupError(cid)
        with self.trees.lock:
            if mid not in tree.parent:
                raise LookupError(mid)
        message = sql.set_context(self.con, cid, mid, mark, self._next_revision())
        if message is None:
            raise LookupError(mid)
        self._count_write([mid])
        # The mark first: a poll that sees the new revision then sees the mark too.
        with self.trees.lock:
            tree.set_mark(mid, mark)
            shown = decorated(tree, message)
        self.recent.put(message)
        return shown

    # --- accounting ------------------------------------------------------------------

    def usage(self, since: float, author: str | None) -> dict[str, dict[str, Any]]:
        return sql.usage(self.con, since, author)

    def stats(self) -> dict[str, int]:
        return sql.stats(self.con)
