"""DuckDB persistence: the schema, its migrations, and every SQL statement of r3nb.

One dedicated thread owns the one DuckDB connection (a connection is not thread-safe,
and blocking the tornado loop on a write would stall every kernel websocket on the
server). Callers use the ``async`` methods; each runs its ``_sync`` twin on that thread.

The ``messages`` table deliberately has no PRIMARY KEY/UNIQUE index: streaming rows are
updated every flush, and DuckDB has been reported to bloat and to raise FATAL errors on
frequently updated indexed rows. Ids are random and generated here, so uniqueness holds
by construction, and lookups by id are fast column scans.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import duckdb

from r3nb.errors import BadRequest, StoreUnavailable
from r3nb.protocol import Attachment, ConversationDict, MessageDict, Source

from . import filemodes
from .branches import Tree
from .recent import RecentWrites

log = logging.getLogger("r3nb.store")
T = TypeVar("T")

#: Ordered, named, append-only. An old file upgrades itself by applying what it lacks.
MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "0001_initial",
        [
            """CREATE TABLE conversations (
                id VARCHAR PRIMARY KEY,
                title VARCHAR NOT NULL,
                author VARCHAR,
                created_at DOUBLE NOT NULL,
                updated_at DOUBLE NOT NULL,
                revision BIGINT NOT NULL
            )""",
            """CREATE TABLE messages (
                id VARCHAR NOT NULL,
                conversation_id VARCHAR NOT NULL,
                seq INTEGER NOT NULL,
                role VARCHAR NOT NULL,
                content VARCHAR NOT NULL,
                status VARCHAR NOT NULL,
                model VARCHAR,
                author VARCHAR,
                source VARCHAR,
                streaming_for VARCHAR,
                error VARCHAR,
                prompt_tokens INTEGER,
                completion_tokens INTEGER,
                cost DOUBLE,
                attachments VARCHAR NOT NULL DEFAULT '[]',
                created_at DOUBLE NOT NULL,
                updated_at DOUBLE NOT NULL,
                revision BIGINT NOT NULL
            )""",
        ],
    ),
    # The model a conversation last used or was set to: the panel's picker follows it.
    ("0002_conversation_model", ["ALTER TABLE conversations ADD COLUMN model VARCHAR"]),
    # A conversation's own system prompt, in place of its model's.
    (
        "0003_conversation_system_prompt",
        ["ALTER TABLE conversations ADD COLUMN system_prompt VARCHAR"],
    ),
    # Branches: a regenerated reply or an edited prompt is a sibling, not an overwrite.
    # Existing conversations become one branch: each message follows the one before it.
    (
        "0004_message_branches",
        [
            "ALTER TABLE messages ADD COLUMN parent_id VARCHAR",
            "ALTER TABLE conversations ADD COLUMN head_id VARCHAR",
            """UPDATE messages SET parent_id = p.previous
               FROM (SELECT id, lag(id) OVER (PARTITION BY conversation_id ORDER BY seq)
                     AS previous FROM messages) AS p
               WHERE messages.id = p.id""",
            """UPDATE conversations SET head_id = h.last
               FROM (SELECT conversation_id, arg_max(id, seq) AS last FROM messages
                     GROUP BY conversation_id) AS h
               WHERE conversations.id = h.conversation_id""",
        ],
    ),
    # A person's choice of what the model sees: 'pinned' (always sent), 'excluded'
    # (never sent) or NULL (sent while it fits the context window); and, on a reply, how
    # many earlier turns were left out to fit the window (the panel's note after reload).
    (
        "0005_message_context",
        [
            "ALTER TABLE messages ADD COLUMN context VARCHAR",
            "ALTER TABLE messages ADD COLUMN context_left_out INTEGER",
        ],
    ),
]

_MESSAGE_COLUMNS = (
    "id, conversation_id, seq, role, content, status, model, author, source, streaming_for,"
    " error, prompt_tokens, completion_tokens, cost, attachments, created_at, updated_at,"
    " revision, parent_id, context, context_left_out"
)
_CONVERSATION_SELECT = """
    SELECT c.id, c.title, c.author, c.created_at, c.updated_at, c.revision,
           (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count,
           c.model, c.system_prompt, c.head_id
    FROM conversations c
"""
MEMORY_LIMIT = "512MB"
#: How many per-message write counts to remember (for health and tests); bounded.
_WRITE_COUNT_MEMORY = 10_000
#: Conversation trees (ids and parents) kept in memory; others are read again when used.
_TREE_MEMORY = 2_000

#: The turns a model may see: (role, content, attachments, mark), mark being the
#: person's "pinned"/"excluded" or None.
Context = list[tuple[str, str, list[dict[str, str]], str | None]]
#: A snapshot's parts: header, changed messages of the current branch, the revision they
#: are consistent with, whether anything streams, and the current branch's ids.
SnapshotParts = tuple[ConversationDict, list[MessageDict], int, bool, list[str]]


class _Head(enum.Enum):
    HEAD = "head"


#: "After the conversation's current head": where a new prompt goes by default.
HEAD = _Head.HEAD
Parent = str | None | Literal[_Head.HEAD]


def new_id() -> str:
    """16 hex chars: 64 random bits, unique enough for one server's lifetime of messages."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class NewMessage:
    """What a caller supplies for a row; the store assigns seq, times, revision (and the
    id, unless the caller needs it before the row exists)."""

    role: str
    content: str
    status: str
    model: str | None = None
    author: str | None = None
    source: Source | None = None
    streaming_for: str | None = None
    attachments: tuple[dict[str, str], ...] = ()
    id: str | None = None
    context_left_out: int | None = None  # a reply: earlier turns not sent (context window)


@dataclass(frozen=True)
class Final:
    """The end state of an assistant message."""

    content: str
    status: str
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None


def _message(row: Sequence[Any]) -> MessageDict:
    return {
        "id": row[0],
        "conversation_id": row[1],
        "seq": row[2],
        "role": row[3],
        "content": row[4],
        "status": row[5],
        "model": row[6],
        "author": row[7],
        "source": row[8],
        "streaming_for": row[9],
        "error": row[10],
        "prompt_tokens": row[11],
        "completion_tokens": row[12],
        "cost": row[13],
        "attachments": json.loads(row[14] or "[]"),
        "created_at": row[15],
        "updated_at": row[16],
        "revision": row[17],
        "parent_id": row[18],
        "context": row[19],
        "context_left_out": row[20],
    }


def _conversation(row: Sequence[Any]) -> ConversationDict:
    return {
        "id": row[0],
        "title": row[1],
        "author": row[2],
        "created_at": row[3],
        "updated_at": row[4],
        "revision": row[5],
        "message_count": row[6],
        "model": row[7],
        "system_prompt": row[8],
        "head_id": row[9],
    }


def _list_order(c: ConversationDict) -> tuple[float, str]:
    return (-c["updated_at"], c["id"])


def _encode_cursor(c: ConversationDict) -> str:
    raw = json.dumps([c["updated_at"], c["id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    """The order key after which the next page starts; ``BadRequest`` when malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        updated_at, cid = json.loads(raw)
        return (-float(updated_at), str(cid))
    except (ValueError, TypeError) as e:
        raise BadRequest("'cursor' is not a cursor this server gave out") from e


def default_db_path() -> Path:
    """``<jupyter data dir>/r3nb/r3nb.duckdb``: per user, beside Jupyter's other state."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "r3nb" / "r3nb.duckdb"


class Store:
    """The narrow persistence interface. Everything else sees dicts, never SQL."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r3nb-duckdb")
        self._con: duckdb.DuckDBPyConnection | None = None
        self._revision = 0
        self.error: str | None = None  # set when the file cannot be used; shown by health
        #: Parts of the store other users can read (existing modes are kept; health says).
        self.exposed: list[str] = []
        self._wal = filemodes.WalGuard(self.path)
        self.recent = RecentWrites(0)
        self.writes = 0
        self.write_counts: OrderedDict[str, int] = OrderedDict()
        #: Each conversation's tree, loaded when first needed; DB thread writes, any reads.
        self._trees: OrderedDict[str, Tree] = OrderedDict()
        self._trees_lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating and migrating as needed). Blocks: call once at start-up.

        Raises ``StoreUnavailable`` with the path and DuckDB's reason, e.g. when another
        process holds the file's lock.
        """
        self._executor.submit(self._open_sync).result()

    def _open_sync(self) -> None:
        on_disk = self.path != ":memory:"
        if on_disk:
            parent = Path(self.path).expanduser().resolve().parent
            try:
                filemodes.prepare_folder(parent)
            except OSError as e:
                self._fail(f"cannot create the folder {parent}: {e.strerror or e}")
            self.exposed = filemodes.open_to_others(self.path)
            for warning in self.exposed:
                log.warning("r3nb store: %s", warning)
            created = not os.path.exists(self.path)
        try:
            # DuckDB's buffer cache may otherwise grow to 80% of the machine's memory: too
            # much for a process that shares a JupyterHub node with everyone's kernels.
            self._con = duckdb.connect(self.path, config={"memory_limit": MEMORY_LIMIT})
            if on_disk and created:
                filemodes.make_private(self.path)
            self._migrate()
            row = self._con.execute(
                "SELECT greatest((SELECT coalesce(max(revision), 0) FROM messages),"
                " (SELECT coalesce(max(revision), 0) FROM conversations))"
            ).fetchone()
            self._revision = int(row[0]) if row else 0
            self.recent = RecentWrites(self._revision)
            with self._trees_lock:
                self._trees.clear()
            for conversation in self.con.execute(_CONVERSATION_SELECT).fetchall():
                self.recent.put_conversation(_conversation(conversation))
            self.error = None
        except duckdb.Error as e:
            self._close_connection()
            self._fail(f"cannot open {self.path}: {_short(e)}")

    async def try_reopen(self) -> bool:
        """Open again after a failure; False (and ``error`` kept) while it still fails."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._open_sync)
        except StoreUnavailable:
            return False
        return True

    def _fail(self, reason: str) -> None:
        self.error = f"r3nb's DuckDB store is unavailable: {reason}"
        raise StoreUnavailable(self.error)

    def _migrate(self) -> None:
        assert self._con is not None
        con = self._con
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (name VARCHAR PRIMARY KEY, applied_at DOUBLE NOT NULL)"
        )
        applied = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
        for name, statements in MIGRATIONS:
            if name in applied:
                continue
            con.begin()
            try:
                for statement in statements:
                    con.execute(statement)
                con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [name, time.time()])
                con.commit()
            except duckdb.Error:
                con.rollback()
                raise
            log.info("r3nb store %s: applied migration %s", self.path, name)

    def applied_migrations(self) -> list[str]:
        assert self._con is not None
        return [
            r[0]
            for r in self._con.execute(
                "SELECT name FROM schema_migrations ORDER BY name"
            ).fetchall()
        ]

    def close(self) -> None:
        """Checkpoint and close, then stop the thread. Safe to call twice."""
        with contextlib.suppress(RuntimeError):  # executor already shut down
            self._executor.submit(self._close_connection).result(timeout=30)
        self._executor.shutdown(wait=True)

    def _close_connection(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            finally:
                self._con = None

    # --- plumbing --------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guarded, fn, *args)

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        """Run on the DB thread. After an internal error DuckDB refuses every further
        query until the connection is reopened, so reopen once and report the failure."""
        if self._con is None:
            raise StoreUnavailable(self.error or f"r3nb's store {self.path} is closed")
        try:
            result = fn(*args)
            self._wal.check()
            return result
        except (duckdb.FatalException, duckdb.InternalException) as e:
            log.error("DuckDB internal error on %s: %s; reopening", self.path, _short(e))
            self._close_connection()
            with contextlib.suppress(StoreUnavailable):
                self._open_sync()
            raise StoreUnavailable(f"database error on {self.path}: {_short(e)}") from e

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        assert self._con is not None
        return self._con

    def _next_revision(self) -> int:
        self._revision += 1
        return self._revision

    def _count_write(self, message_ids: Iterable[str]) -> None:
        for mid in message_ids:
            self.writes += 1
            self.write_counts[mid] = self.write_counts.pop(mid, 0) + 1
        while len(self.write_counts) > _WRITE_COUNT_MEMORY:
            self.write_counts.popitem(last=False)

    @property
    def revision(self) -> int:
        return self._revision

    # --- conversations ---------------------------------------------------------------

    async def create_conversation(self, title: str, author: str | None) -> ConversationDict:
        return await self._run(self._create_conversation, title, author)

    def _create_conversation(self, title: str, author: str | None) -> ConversationDict:
        cid, now, rev = new_id(), time.time(), self._next_revision()
        self.con.execute(
            "INSERT INTO conversations (id, title, author, created_at, updated_at, revision)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [cid, title, author, now, now, rev],
        )
        conversation: ConversationDict = {
            "id": cid,
            "title": title,
            "author": author,
            "created_at": now,
            "updated_at": now,
            "revision": rev,
            "message_count": 0,
            "model": None,
            "system_prompt": None,
            "head_id": None,
        }
        with self._trees_lock:
            self._remember_tree(cid, Tree((), None))
        self.recent.put_conversation(conversation)
        return conversation

    def _require_open(self) -> None:
        """Memory answers only for a usable store: otherwise say what is wrong (503)."""
        if self._con is None:
            raise StoreUnavailable(self.error or f"r3nb's store {self.path} is closed")

    async def list_conversations(
        self, limit: int, cursor: str | None = None, query: str | None = None
    ) -> tuple[list[ConversationDict], str | None]:
        """One page, most recently active first, and the cursor of the next (None at the
        end). Headers come from memory (every header is mirrored at open); a ``query``
        also matches message text, which only the database holds."""
        self._require_open()
        with self.recent.lock:
            everything = list(self.recent.conversations.values())
        if query:
            needle = query.casefold()
            in_text = set(await self._run(self._conversations_mentioning, query))
            everything = [
                c for c in everything if needle in c["title"].casefold() or c["id"] in in_text
            ]
        everything.sort(key=_list_order)
        if cursor is not None:
            after = _decode_cursor(cursor)
            everything = [c for c in everything if _list_order(c) > after]
        page = everything[:limit]
        more = len(everything) > limit
        return page, (_encode_cursor(page[-1]) if more and page else None)

    def _conversations_mentioning(self, query: str) -> list[str]:
        pattern = "%" + re.sub(r"([\\%_])", r"\\\1", query) + "%"
        rows = self.con.execute(
            "SELECT DISTINCT conversation_id FROM messages WHERE content ILIKE ? ESCAPE '\\'",
            [pattern],
        ).fetchall()
        return [r[0] for r in rows]

    async def get_conversation(self, cid: str) -> ConversationDict | None:
        self._require_open()
        with self.recent.lock:
            return self.recent.conversations.get(cid)

    async def update_conversation(
        self, cid: str, title: str | None, model: str | None, system_prompt: str | None
    ) -> ConversationDict | None:
        """Change what is given (None: unchanged; an empty system prompt clears it)."""
        return await self._run(self._update_conversation, cid, title, model, system_prompt)

    def _update_conversation(
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
        self._touch_conversation(header)
        self.recent.put_conversation(header)
        return header

    async def delete_conversation(self, cid: str) -> bool:
        return await self._run(self._delete_conversation, cid)

    def _delete_conversation(self, cid: str) -> bool:
        con = self.con
        con.begin()
        try:
            con.execute("DELETE FROM messages WHERE conversation_id = ?", [cid])
            deleted = con.execute(
                "DELETE FROM conversations WHERE id = ? RETURNING id", [cid]
            ).fetchall()
            con.commit()
        except BaseException:
            con.rollback()
            raise
        with self._trees_lock:
            self._trees.pop(cid, None)
        self.recent.drop_conversation(cid, self._next_revision())
        return bool(deleted)

    # --- messages --------------------------------------------------------------------

    async def add_messages(
        self,
        cid: str,
        messages: Sequence[NewMessage],
        title_hint: str | None = None,
        parent: Parent = HEAD,
    ) -> list[MessageDict]:
        """Insert ``messages`` in order, in one transaction, and touch the conversation.

        Each message follows the one before it, the first follows ``parent`` (by default
        the conversation's head), and the last becomes the head. ``title_hint`` renames a
        conversation that still has its placeholder title (first prompt becomes the
        title, as people expect from chat apps)."""
        return await self._run(self._add_messages, cid, messages, title_hint, True, parent)

    def _add_messages(
        self,
        cid: str,
        messages: Sequence[NewMessage],
        title_hint: str | None,
        touch_now: bool = True,
        parent: Parent = HEAD,
    ) -> list[MessageDict]:
        now = time.time()
        tree = self._tree(cid)
        conversation = self.recent.conversations.get(cid)
        if conversation is None or tree is None:
            raise LookupError(cid)
        with self._trees_lock:
            above = tree.head if parent is HEAD else parent
            if above is not None and above not in tree.parent:
                raise LookupError(above)
        # seq runs 1..n per conversation, so the mirrored count is the last seq: no
        # max(seq) scan over every message on each insert.
        seq = conversation["message_count"]
        rows = []
        for m in messages:
            seq += 1
            mid = m.id or new_id()
            rows.append([
                mid, cid, seq, m.role, m.content, m.status, m.model, m.author,
                m.source, m.streaming_for, None, None, None, None,
                json.dumps(list(m.attachments)), now, now, self._next_revision(), above,
                None, m.context_left_out,
            ])  # fmt: skip
            above = mid
        placeholders = ", ".join(["(" + ", ".join("?" * 21) + ")"] * len(rows))
        # One statement, one implicit transaction: this commit is on every reply's time
        # to first token (the `start` event waits for it).
        self.con.execute(
            f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES {placeholders}",
            [value for row in rows for value in row],
        )
        created = [_message(row) for row in rows]
        self._count_write(m["id"] for m in created)
        # The tree first: a poll between these steps then sees a new message on the
        # branch only once the message itself is there (never the reverse).
        with self._trees_lock:
            for message in created:
                tree.add(message["id"], message["parent_id"])
            tree.set_head(above)
        self.recent.put_many(created)
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
        self.recent.put_conversation(header)
        if touch_now:
            self._touch_conversation(header)
        with self._trees_lock:
            return [_decorated(tree, m) for m in created]

    def _touch_conversation(self, header: ConversationDict) -> None:
        """Persist a conversation's header (activity time, revision, first-prompt title).
        Derived data: after an exchange it is written right after the acknowledgement."""
        self.con.execute(
            "UPDATE conversations SET updated_at = ?, revision = ?, title = ?, model = ?,"
            " system_prompt = ?, head_id = ? WHERE id = ?",
            [
                header["updated_at"],
                header["revision"],
                header["title"],
                header["model"],
                header["system_prompt"],
                header["head_id"],
                header["id"],
            ],
        )

    async def begin_exchange(
        self, cid: str, messages: Sequence[NewMessage], title_hint: str, parent: Parent = HEAD
    ) -> list[MessageDict] | None:
        """Store a prompt (none for a regenerated reply) and its ``streaming`` reply in one
        statement, after ``parent``; None if the conversation or ``parent`` does not exist
        (any more). The conversation's header follows in its own write, queued at once
        but off the time to first token."""
        found = await self._run(self._begin_exchange, cid, messages, title_hint, parent)
        if found is None:
            return None
        created, header = found
        touch = asyncio.ensure_future(self._run(self._touch_conversation, header))
        touch.add_done_callback(_log_failure)
        return created

    def _begin_exchange(
        self, cid: str, messages: Sequence[NewMessage], title_hint: str, parent: Parent
    ) -> tuple[list[MessageDict], ConversationDict] | None:
        try:
            created = self._add_messages(cid, messages, title_hint, False, parent)
        except LookupError:
            return None
        return created, self.recent.conversations[cid]

    # --- branches --------------------------------------------------------------------

    def _remember_tree(self, cid: str, tree: Tree) -> None:
        """Keep ``tree`` (call with ``_trees_lock`` held); the least used ones go."""
        self._trees[cid] = tree
        self._trees.move_to_end(cid)
        while len(self._trees) > _TREE_MEMORY:
            self._trees.popitem(last=False)

    def _cached_tree(self, cid: str) -> Tree | None:
        """Call with ``_trees_lock`` held."""
        tree = self._trees.get(cid)
        if tree is not None:
            self._trees.move_to_end(cid)
        return tree

    def _tree(self, cid: str) -> Tree | None:
        """(DB thread) The conversation's tree, read once from the file when not in
        memory; None for an unknown conversation."""
        with self._trees_lock:
            tree = self._cached_tree(cid)
        if tree is not None:
            return tree
        header = self.recent.conversations.get(cid)
        if header is None:
            return None
        rows = self.con.execute(
            "SELECT id, parent_id, context FROM messages WHERE conversation_id = ? ORDER BY seq",
            [cid],
        ).fetchall()
        marks = {r[0]: r[2] for r in rows if r[2] is not None}
        tree = Tree(((r[0], r[1]) for r in rows), header["head_id"], marks)
        with self._trees_lock:
            self._remember_tree(cid, tree)
        return tree

    def _decorate(self, message: MessageDict) -> MessageDict:
        """(DB thread) ``message`` with its ``siblings``, as clients are given it."""
        tree = self._tree(message["conversation_id"])
        if tree is None:
            return message
        with self._trees_lock:
            return _decorated(tree, message)

    def _branch_view(
        self, tree: Tree, found: tuple[ConversationDict, list[MessageDict], int, bool]
    ) -> SnapshotParts:
        conversation, messages, revision, streaming = found
        with self._trees_lock:
            kept = [_decorated(tree, m) for m in messages if tree.on_branch(m["id"])]
            branch = list(tree.branch())
        return conversation, kept, revision, streaming, branch

    async def move_head(self, cid: str, mid: str | None, *, newest: bool) -> ConversationDict:
        """Make the branch through ``mid`` current (``newest``: down to the most recently
        written message under it); ``None`` clears the branch (the next prompt starts a
        new first message). ``LookupError`` for an unknown conversation or message."""
        return await self._run(self._move_head, cid, mid, newest)

    def _move_head(self, cid: str, mid: str | None, newest: bool) -> ConversationDict:
        tree = self._tree(cid)
        header = self.recent.conversations.get(cid)
        if tree is None or header is None:
            raise LookupError(cid)
        with self._trees_lock:
            if mid is not None and mid not in tree.parent:
                raise LookupError(mid)
            head = tree.newest_leaf(mid) if mid is not None and newest else mid
        # A new revision, so observers' next poll carries the new branch.
        moved: ConversationDict = {**header, "head_id": head, "revision": self._next_revision()}
        self._touch_conversation(moved)
        with self._trees_lock:
            tree.set_head(head)
        self.recent.put_conversation(moved)
        return moved

    async def delete_turn(self, cid: str, mid: str) -> tuple[ConversationDict, list[str]]:
        """Delete prompt ``mid`` and every reply to it (all versions); what followed a
        reply now follows the prompt's parent, so the rest of each branch stays.
        Returns the header and the deleted ids; ``LookupError`` if unknown."""
        return await self._run(self._delete_turn, cid, mid)

    def _delete_turn(self, cid: str, mid: str) -> tuple[ConversationDict, list[str]]:
        tree = self._tree(cid)
        header = self.recent.conversations.get(cid)
        if tree is None or header is None:
            raise LookupError(cid)
        with self._trees_lock:
            if mid not in tree.parent:
                raise LookupError(mid)
            above = tree.parent[mid]
            deleted = [mid, *tree.children().get(mid, [])]
            moved = [m for d in deleted[1:] for m in tree.children().get(d, [])]
        revision = self._next_revision()
        con = self.con
        con.begin()
        try:
            con.execute(
                "DELETE FROM messages WHERE conversation_id = ?"
                " AND list_contains(?::VARCHAR[], id)",
                [cid, deleted],
            )
            changed = con.execute(
                "UPDATE messages SET parent_id = ?, revision = ? WHERE conversation_id = ?"
                f" AND list_contains(?::VARCHAR[], id) RETURNING {_MESSAGE_COLUMNS}",
                [above, revision, cid, moved],
            ).fetchall()
            # seq stays 1..n (a new message's seq is the count + 1).
            changed += con.execute(
                "UPDATE messages SET seq = r.n, revision = ? FROM (SELECT id, row_number()"
                " OVER (ORDER BY seq) AS n FROM messages WHERE conversation_id = ?) AS r"
                f" WHERE messages.id = r.id AND messages.seq <> r.n RETURNING {_MESSAGE_COLUMNS}",
                [revision, cid],
            ).fetchall()
            with self._trees_lock:
                head = above if tree.head in deleted else tree.head
            shrunk: ConversationDict = {
                **header,
                "head_id": head,
                "message_count": header["message_count"] - len(deleted),
                "revision": self._next_revision(),
            }
            self._touch_conversation(shrunk)
            con.commit()
        except BaseException:
            con.rollback()
            raise
        self._count_write(r[0] for r in changed)
        with self._trees_lock:
            tree.remove_turn(mid)
        self.recent.drop_messages(cid, deleted)
        self.recent.put_many([_message(r) for r in changed])  # the last version of each wins
        self.recent.put_conversation(shrunk)
        return shrunk, deleted

    async def set_context(self, cid: str, mid: str, mark: str | None) -> MessageDict:
        """Mark message ``mid`` "pinned", "excluded" or neither (None): what the model is
        sent from now on. A new revision of the message, so observers see the change.
        ``LookupError`` for an unknown conversation or message."""
        return await self._run(self._set_context, cid, mid, mark)

    def _set_context(self, cid: str, mid: str, mark: str | None) -> MessageDict:
        tree = self._tree(cid)
        if tree is None:
            raise LookupError(cid)
        with self._trees_lock:
            if mid not in tree.parent:
                raise LookupError(mid)
        row = self.con.execute(
            "UPDATE messages SET context = ?, revision = ? WHERE id = ? AND conversation_id = ?"
            f" RETURNING {_MESSAGE_COLUMNS}",
            [mark, self._next_revision(), mid, cid],
        ).fetchone()
        if row is None:
            raise LookupError(mid)
        self._count_write([mid])
        message = _message(row)
        # The mark first: a poll that sees the new revision then sees the mark too.
        with self._trees_lock:
            tree.set_mark(mid, mark)
            decorated = _decorated(tree, message)
        self.recent.put(message)
        return decorated

    def cached_context(self, cid: str, upto: Parent = HEAD) -> Context | None:
        """The model's context — the completed turns of the branch ending at ``upto`` —
        from memory when all of them are mirrored (the usual case for a conversation in
        use); None: ask the database (``context_for``)."""
        with self._trees_lock:
            tree = self._cached_tree(cid)
            if tree is None:
                return None
            path = tree.path_to(tree.head if upto is HEAD else upto)
            marks = {mid: tree.marks[mid] for mid in path if mid in tree.marks}
        messages = [self.recent.get(mid) for mid in path]
        if any(m is None for m in messages):
            return None
        return [
            (m["role"], m["content"], [_plain(a) for a in m["attachments"]], marks.get(m["id"]))
            for m in messages
            if m is not None and m["status"] == "complete"
        ]

    async def get_message(self, mid: str) -> MessageDict | None:
        return await self._run(self._message_for_client, mid)

    def _message_for_client(self, mid: str) -> MessageDict | None:
        message = self._get_message(mid)
        return self._decorate(message) if message is not None else None

    def _get_message(self, mid: str) -> MessageDict | None:
        row = self.con.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?",
            [mid],
        ).fetchone()
        return _message(row) if row else None

    async def messages_since(self, cid: str, since: int) -> list[MessageDict]:
        """The observers' snapshot query: rows of one conversation written after ``since``."""
        return await self._run(self._messages_since, cid, since)

    def _messages_since(self, cid: str, since: int) -> list[MessageDict]:
        rows = self.con.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages"
            " WHERE conversation_id = ? AND revision > ? ORDER BY seq",
            [cid, since],
        ).fetchall()
        return [_message(r) for r in rows]

    async def context_for(self, cid: str, upto: Parent = HEAD) -> Context:
        """(role, content, attachments) of the turns a model should see: the branch
        ending at ``upto`` (by default the head), first turn first.

        Failed and cancelled replies are left out: their text is partial, and feeding it
        back would teach the model to continue a broken answer."""
        return await self._run(self._context_for, cid, upto)

    def _context_for(self, cid: str, upto: Parent) -> Context:
        tree = self._tree(cid)
        if tree is None:
            return []
        with self._trees_lock:
            path = tree.path_to(tree.head if upto is HEAD else upto)
        rows = self.con.execute(
            "SELECT id, role, content, attachments, context FROM messages"
            " WHERE conversation_id = ? AND list_contains(?::VARCHAR[], id)"
            " AND status = 'complete'",
            [cid, path],
        ).fetchall()
        found = {r[0]: (r[1], r[2], json.loads(r[3] or "[]"), r[4]) for r in rows}
        return [found[mid] for mid in path if mid in found]

    async def snapshot(self, cid: str, since: int) -> SnapshotParts | None:
        """Conversation, its current branch's rows written after ``since``, the revision
        they are consistent with, whether anything still streams, and the branch's ids.
        From memory when ``since`` is recent (every poll but a panel's first); else one
        DB-thread call."""
        self._require_open()
        with self.recent.lock:
            if cid not in self.recent.conversations:
                return None
        with self._trees_lock:
            tree = self._cached_tree(cid)
        found = self.recent.snapshot(cid, since) if tree is not None else None
        if tree is not None and found is not None:
            return self._branch_view(tree, found)
        return await self._run(self._snapshot, cid, since)

    def _snapshot(self, cid: str, since: int) -> SnapshotParts | None:
        with self.recent.lock:
            conversation = self.recent.conversations.get(cid)
        tree = self._tree(cid)
        if conversation is None or tree is None:
            return None
        messages = self._messages_since(cid, since)
        found = (conversation, messages, self._revision, self.recent.streaming_in(cid))
        return self._branch_view(tree, found)

    async def flush_partials(self, partials: Sequence[tuple[str, str]]) -> None:
        """Write the partial text of many streaming messages in ONE transaction.

        Batching matters: fifty streams flushing separately every 2 s were measured to
        push ``/api/status`` p99 from ~7 ms to ~157 ms."""
        if partials:
            await self._run(self._flush_partials, partials)

    def _flush_partials(self, partials: Sequence[tuple[str, str]]) -> None:
        con = self.con
        now = time.time()
        revisions = [self._next_revision() for _ in partials]
        con.begin()
        try:
            # One UPDATE joined to the batch: a single scan of the table, where one
            # UPDATE per stream would scan it once per stream (no index on id, above).
            con.execute(
                "UPDATE messages SET content = b.content, updated_at = ?, revision = b.rev"
                " FROM (SELECT unnest(?::VARCHAR[]) AS id, unnest(?::VARCHAR[]) AS content,"
                " unnest(?::BIGINT[]) AS rev) AS b"
                " WHERE messages.id = b.id AND messages.status = 'streaming'",
                [now, [m for m, _ in partials], [t for _, t in partials], revisions],
            )
            con.commit()
        except BaseException:
            con.rollback()
            raise
        self._count_write(mid for mid, _ in partials)
        updated = []
        for (mid, text), rev in zip(partials, revisions, strict=True):
            cached = self.recent.get(mid)
            if cached is None:
                cached = self._get_message(mid)
            if cached is not None and cached["status"] == "streaming":
                updated.append({**cached, "content": text, "updated_at": now, "revision": rev})
        self.recent.put_many(updated)  # type: ignore[arg-type]

    async def finalize(self, mid: str, final: Final) -> MessageDict | None:
        return await self._run(self._finalize, mid, final)

    def _finalize(self, mid: str, final: Final) -> MessageDict | None:
        row = self.con.execute(
            "UPDATE messages SET content = ?, status = ?, error = ?, prompt_tokens = ?,"
            " completion_tokens = ?, cost = ?, updated_at = ?, revision = ?"
            f" WHERE id = ? AND status = 'streaming' RETURNING {_MESSAGE_COLUMNS}",
            [
                final.content,
                final.status,
                final.error,
                final.prompt_tokens,
                final.completion_tokens,
                final.cost,
                time.time(),
                self._next_revision(),
                mid,
            ],
        ).fetchone()
        self._count_write([mid])
        if row is None:
            return self._message_for_client(mid)
        message = _message(row)
        self.recent.put(message)
        return self._decorate(message)

    async def fail_streaming(
        self, reason: str, *, older_than: float | None = None, exclude: Iterable[str] = ()
    ) -> list[str]:
        """Mark ``streaming`` rows as ``error`` (text kept) and return their ids.

        At start-up (no ``older_than``) every such row was left by an earlier process;
        the sweeper passes a cut-off and the ids that live tasks still own."""
        return await self._run(self._fail_streaming, reason, older_than, list(exclude))

    def fail_streaming_blocking(self, reason: str) -> list[str]:
        """Start-up recovery from sync code (the loop may already run: no ``asyncio.run``)."""
        return self._executor.submit(self._guarded, self._fail_streaming, reason, None, []).result()

    def _fail_streaming(
        self, reason: str, older_than: float | None, exclude: list[str]
    ) -> list[str]:
        # One set-based UPDATE: a scan, not one per stale row (measured at 1,000,000
        # messages: 92 ms for 100 rows one by one).
        rows = self.con.execute(
            "UPDATE messages SET status = 'error', error = ?, updated_at = ?, revision = ?"
            " WHERE status = 'streaming' AND updated_at < ?"
            " AND NOT list_contains(?::VARCHAR[], id)"
            f" RETURNING {_MESSAGE_COLUMNS}",
            [
                reason,
                time.time(),
                self._revision + 1,
                older_than if older_than is not None else float("inf"),
                exclude,
            ],
        ).fetchall()
        if not rows:
            return []
        self._next_revision()
        failed = [_message(r) for r in rows]
        self._count_write(m["id"] for m in failed)
        self.recent.put_many(failed)
        return [m["id"] for m in failed]

    async def usage(self, since: float, author: str | None = None) -> dict[str, dict[str, Any]]:
        """Tokens, cost and replies per author for replies created after ``since``."""
        return await self._run(self._usage, since, author)

    def _usage(self, since: float, author: str | None) -> dict[str, dict[str, Any]]:
        rows = self.con.execute(
            "SELECT coalesce(author, ''),"
            " sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)),"
            " sum(coalesce(cost, 0)), count(*) FROM messages"
            " WHERE role = 'assistant' AND created_at >= ? AND (? IS NULL OR author = ?)"
            " GROUP BY 1",
            [since, author, author],
        ).fetchall()
        return {
            r[0]: {"tokens": int(r[1] or 0), "cost": float(r[2] or 0.0), "messages": int(r[3])}
            for r in rows
        }

    async def stats(self) -> dict[str, int]:
        return await self._run(self._stats)

    def _stats(self) -> dict[str, int]:
        row = self.con.execute(
            "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM messages),"
            " (SELECT count(*) FROM messages WHERE status = 'streaming')"
        ).fetchone()
        assert row is not None
        return {"conversations": row[0], "messages": row[1], "streaming_rows": row[2]}


DEFAULT_TITLE = "New conversation"


def _decorated(tree: Tree, message: MessageDict) -> MessageDict:
    """``message`` with ``siblings`` when it has other versions (``_trees_lock`` held).
    A copy: the mirror keeps rows as stored, since a later version would make it stale."""
    siblings = tree.siblings(message["id"])
    return {**message, "siblings": list(siblings)} if len(siblings) > 1 else message


def _plain(attachment: Attachment) -> dict[str, str]:
    return {k: attachment[k] for k in ("kind", "name", "summary")}


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("r3nb store: a deferred write failed: %s", task.exception())


def _short(e: BaseException) -> str:
    """DuckDB messages can span many lines; the first says what happened."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
