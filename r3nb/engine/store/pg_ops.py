"""The PostgreSQL backend's operations, as they run on its DB thread: each writing
transaction (``pg_sql.writing``: revisions, statements, one NOTIFY), then this process's
memory kept in step.

What this process keeps in memory, and why none of it can go stale:

- ``revision``: the highest revision seen (written here, read in a snapshot, or named
  by another process's notification); only a lower bound, never served as data.
- ``recent``: what this process wrote lately, for the engine's quick look-ups of a
  message's role and conversation; a conversation another process changes is dropped
  from it (``forget``), and everything after a lost LISTEN connection.
- ``written``: per streaming message, how much of its text this process has stored,
  so a flush appends only the rest. Dropped when a flush fails (the commit may or may
  not have happened) and on every reconnection; a message not held is measured in the
  flush's own transaction.

Headers, trees, snapshots and the model's context are read from PostgreSQL each time
(indexed reads, one snapshot each): another process may have written them.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import r3nb.engine.store.pg_sql as sql
import r3nb.engine.store.rows as rows
from r3nb.engine.branches import Tree
from r3nb.engine.recent import RecentWrites
from r3nb.protocol import ConversationDict, MessageDict

from .pg_connection import Connection
from .trees import decorated
from .values import DEFAULT_TITLE, HEAD, Context, Final, NewMessage, Parent, SnapshotParts, new_id

#: How many per-message write counts, and written lengths, to remember; bounded.
MEMORY = 10_000


class PostgresOperations:
    """Every method runs on the DB thread; ``con`` is the connection of the latest
    (re)connection (``load``)."""

    def __init__(self) -> None:
        self._con: Connection | None = None
        self._revision_lock = threading.Lock()
        self.revision = 0
        self.recent = RecentWrites(0)
        self.writes = 0
        #: This process's writer id (``PgThread.writer``), recorded with each reply it
        #: streams.
        self.writer = ""
        self.write_counts: OrderedDict[str, int] = OrderedDict()
        self._written: OrderedDict[str, int] = OrderedDict()

    @property
    def con(self) -> Connection:
        assert self._con is not None, "the store was never opened"
        return self._con

    def load(self, con: Connection) -> None:
        """After each (re)connection: the counter; what was assumed is forgotten."""
        self._con = con
        self.saw(sql.revision(con))
        self.recent = RecentWrites(self.revision)
        self._written.clear()

    def saw(self, revision: int) -> None:
        """Raise ``revision`` to at least ``revision`` (the DB thread and the listener's
        both call this: the lock keeps it from ever going back)."""
        with self._revision_lock:
            self.revision = max(self.revision, revision)

    def forget(self, cids: frozenset[str] | None) -> None:
        """Another process changed ``cids`` (None: maybe any): drop what we hold."""
        if cids is None:
            self.recent = RecentWrites(self.revision)
            return
        for cid in cids:
            self.recent.drop_conversation(cid, self.revision)

    def _count_write(self, message_ids: Iterable[str]) -> None:
        for mid in message_ids:
            self.writes += 1
            self.write_counts[mid] = self.write_counts.pop(mid, 0) + 1
        while len(self.write_counts) > MEMORY:
            self.write_counts.popitem(last=False)

    def _remember_written(self, mid: str, length: int) -> None:
        self._written[mid] = length
        self._written.move_to_end(mid)
        while len(self._written) > MEMORY:
            self._written.popitem(last=False)

    def _decorate(self, message: MessageDict, tree: Tree | None = None) -> MessageDict:
        if tree is None:
            header = sql.select_conversation(self.con, message["conversation_id"])
            if header is None:
                return message
            tree = sql.tree(self.con, header["id"], header["head_id"])
        return decorated(tree, message)

    # --- conversations ---------------------------------------------------------------

    def create_conversation(self, title: str, author: str | None) -> ConversationDict:
        now = time.time()
        with sql.writing(self.con, 1) as write:
            conversation = rows.new_conversation(
                id=new_id(), title=title, author=author, created_at=now, updated_at=now,
                revision=write.first,
            )  # fmt: skip
            sql.insert_conversation(self.con, conversation)
            write.changed.add(conversation["id"])
        self.saw(write.last)
        return conversation

    def get_conversation(self, cid: str) -> ConversationDict | None:
        return sql.select_conversation(self.con, cid)

    def list_conversations(
        self, limit: int, after: tuple[float, str] | None, query: str | None
    ) -> list[ConversationDict]:
        return sql.list_conversations(self.con, limit, after, query)

    def update_conversation(
        self, cid: str, title: str | None, model: str | None, system_prompt: str | None
    ) -> ConversationDict | None:
        with sql.writing(self.con, 1) as write:
            header = sql.update_conversation(
                self.con, cid, title, model, system_prompt, write.first
            )
            if header is not None:
                write.changed.add(cid)
        self.saw(write.last)
        return header

    def delete_conversation(self, cid: str) -> bool:
        with sql.writing(self.con, 1) as write:
            deleted = sql.delete_conversation(self.con, cid)
            if deleted:
                write.changed.add(cid)
        self.saw(write.last)
        self.recent.drop_conversation(cid, write.last)
        return deleted

    # --- messages --------------------------------------------------------------------

    def add_messages(
        self, cid: str, messages: Sequence[NewMessage], title_hint: str | None, parent: Parent
    ) -> list[MessageDict]:
        now = time.time()
        with sql.writing(self.con, len(messages) + 1) as write:
            header = sql.select_conversation(self.con, cid, lock=True)
            if header is None:
                raise LookupError(cid)
            tree = sql.tree(self.con, cid, header["head_id"])
            above = tree.head if parent is HEAD else parent
            if above is not None and above not in tree.parent:
                raise LookupError(above)
            seq = len(tree.parent)  # seq runs 1..n per conversation
            values = []
            for i, m in enumerate(messages):
                seq += 1
                mid = m.id or new_id()
                values.append(rows.new_message_row(
                    m, id=mid, conversation_id=cid, seq=seq, created_at=now, updated_at=now,
                    revision=write.first + i, parent_id=above,
                ))  # fmt: skip
                above = mid
            sql.insert_messages(self.con, values, self.writer)
            title = title_hint if title_hint and header["title"] == DEFAULT_TITLE else None
            sql.update_header(
                self.con, cid, write.last, updated_at=now, title=title or header["title"],
                model=next((m.model for m in messages if m.model), header["model"]),
                head_id=above,
            )  # fmt: skip
            write.changed.add(cid)
        self.saw(write.last)
        created = [rows.message_from_row(v) for v in values]
        self._count_write(m["id"] for m in created)
        for message in created:
            tree.add(message["id"], message["parent_id"])
            if message["status"] == "streaming":
                self._remember_written(message["id"], len(message["content"]))
        tree.set_head(above)
        self.recent.put_many(created)
        return [decorated(tree, m) for m in created]

    def get_message(self, mid: str) -> MessageDict | None:
        with sql.reading(self.con):
            message = sql.select_message(self.con, mid)
            return self._decorate(message) if message is not None else None

    def messages_since(self, cid: str, since: int) -> list[MessageDict]:
        return sql.messages_since(self.con, cid, since)

    def snapshot(self, cid: str, since: int) -> SnapshotParts | None:
        with sql.reading(self.con):
            header = sql.select_conversation(self.con, cid)
            if header is None:
                return None
            revision = sql.revision(self.con)
            messages = sql.messages_since(self.con, cid, since)
            streaming = sql.any_streaming(self.con, cid)
            tree = sql.tree(self.con, cid, header["head_id"])
        self.saw(revision)
        kept = [decorated(tree, m) for m in messages if tree.on_branch(m["id"])]
        return header, kept, revision, streaming, list(tree.branch())

    def flush_partials(self, partials: Sequence[tuple[str, str]]) -> None:
        """Only the text after what this process stored goes in (a chunk), in ONE
        transaction; the rows themselves get their revision and time."""
        now = time.time()
        mids = [mid for mid, _ in partials]
        try:
            with sql.writing(self.con, len(partials)) as write:
                revisions = [write.first + i for i in range(len(partials))]
                streaming = sql.touch_streaming(self.con, now, mids, revisions)
                unknown = [m for m in streaming if m not in self._written]
                written = dict(self._written) | sql.stored_lengths(self.con, unknown)
                chunks: list[tuple[str, str]] = []
                for mid, text in partials:
                    if mid not in streaming:
                        continue
                    done = written.get(mid, 0)
                    if len(text) < done:
                        sql.rewrite_text(self.con, mid, text)
                    elif len(text) > done:
                        chunks.append((mid, text[done:]))
                    written[mid] = len(text)
                if chunks:
                    sql.append_chunks(self.con, chunks)
                write.changed.update(streaming.values())
        except BaseException:
            for mid in mids:  # stored or not: the next flush measures again
                self._written.pop(mid, None)
            raise
        self.saw(write.last)
        for mid in streaming:
            self._remember_written(mid, written[mid])
        self._count_write(streaming)
        updated: list[MessageDict] = []
        for (mid, text), rev in zip(partials, revisions, strict=True):
            cached = self.recent.get(mid)
            if mid in streaming and cached is not None:
                updated.append({**cached, "content": text, "updated_at": now, "revision": rev})
        self.recent.put_many(updated)

    def finalize(self, mid: str, final: Final) -> MessageDict | None:
        with sql.writing(self.con, 1) as write:
            message = sql.finalize(self.con, mid, final, time.time(), write.first)
            if message is not None:
                write.changed.add(message["conversation_id"])
        self.saw(write.last)
        self._written.pop(mid, None)
        self._count_write([mid])
        if message is None:
            return self.get_message(mid)
        self.recent.put(message)
        return self._decorate(message)

    def fail_streaming(
        self, reason: str, older_than: float | None, exclude: list[str]
    ) -> list[str]:
        cutoff = older_than if older_than is not None else float("inf")
        with sql.writing(self.con, 1) as write:
            # Start-up recovery (no cut-off): several processes may share this database,
            # so only the rows whose writer process is gone (sql.orphans), never a reply
            # another live process is streaming.
            only = sql.orphans(self.con, self.writer) if older_than is None else None
            failed = sql.fail_streaming(
                self.con, reason, time.time(), write.first, cutoff, exclude, only
            )
            write.changed.update(m["conversation_id"] for m in failed)
        self.saw(write.last)
        for message in failed:
            self._written.pop(message["id"], None)
        self._count_write(m["id"] for m in failed)
        self.recent.put_many(failed)
        return [m["id"] for m in failed]

    # --- the model's context and branches --------------------------------------------

    def context_for(self, cid: str, upto: Parent) -> Context:
        with sql.reading(self.con):
            header = sql.select_conversation(self.con, cid)
            if header is None:
                return []
            tree = sql.tree(self.con, cid, header["head_id"])
            path = tree.path_to(tree.head if upto is HEAD else upto)
            return sql.completed_turns(self.con, cid, path)

    def move_head(self, cid: str, mid: str | None, newest: bool) -> ConversationDict:
        with sql.writing(self.con, 1) as write:
            header = sql.select_conversation(self.con, cid, lock=True)
            if header is None:
                raise LookupError(cid)
            tree = sql.tree(self.con, cid, header["head_id"])
            if mid is not None and mid not in tree.parent:
                raise LookupError(mid)
            head = tree.newest_leaf(mid) if mid is not None and newest else mid
            moved = sql.update_header(self.con, cid, write.first, head_id=head)
            write.changed.add(cid)
        self.saw(write.last)
        return moved

    def delete_turn(self, cid: str, mid: str) -> tuple[ConversationDict, list[str]]:
        with sql.writing(self.con, 2) as write:
            header = sql.select_conversation(self.con, cid, lock=True)
            if header is None:
                raise LookupError(cid)
            tree = sql.tree(self.con, cid, header["head_id"])
            if mid not in tree.parent:
                raise LookupError(mid)
            above = tree.parent[mid]
            children = tree.children()
            deleted = [mid, *children.get(mid, [])]
            moved = [m for d in deleted[1:] for m in children.get(d, [])]
            changed = sql.delete_turn(self.con, cid, deleted, moved, above, write.first)
            head = above if tree.head in deleted else tree.head
            shrunk = sql.update_header(self.con, cid, write.last, head_id=head)
            write.changed.add(cid)
        self.saw(write.last)
        self._count_write(m["id"] for m in changed)
        self.recent.drop_messages(cid, deleted)
        self.recent.put_many(changed)
        return shrunk, deleted

    def set_context(self, cid: str, mid: str, mark: str | None) -> MessageDict:
        with sql.writing(self.con, 1) as write:
            message = sql.set_context(self.con, cid, mid, mark, write.first)
            if message is None:
                raise LookupError(mid)
            write.changed.add(cid)
            shown = self._decorate(message)
        self.saw(write.last)
        self._count_write([mid])
        self.recent.put(message)
        return shown

    # --- accounting ------------------------------------------------------------------

    def usage(self, since: float, author: str | None) -> dict[str, dict[str, Any]]:
        return sql.usage(self.con, since, author)

    def stats(self) -> dict[str, int]:
        return sql.stats(self.con)
