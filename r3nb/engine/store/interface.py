"""The store interface: what the engine may ask of a backend, and what each answer means.

DuckDB (``duckdb_store.DuckDBStore``) is one implementation; a PostgreSQL backend for
the hub service is meant to be another. ``tests/test_store_contract.py`` runs the
contract written here on every backend.

Terms used throughout:

- **revision**: one counter per store. Every write — a message inserted or changed, a
  conversation's header changed, a conversation deleted — takes revisions greater than
  every revision before it, and a message's or header's ``revision`` is that of its
  latest write. ``since=REV`` means "written after REV": ``revision > REV``.
- **branch**: messages form a tree (``parent_id``); a conversation's ``head_id`` is the
  last message of its current branch, the path from a first message to the head.
- **decorated**: a message as clients get it, with ``siblings`` (itself and its other
  versions, oldest first) when it has other versions.

Errors: every method raises ``StoreUnavailable`` (a sentence a person can act on, HTTP
503) when the store cannot be used — not opened, its open failed (``error`` says why),
or the database failed during the call; nothing may be called after ``close()``. A
missing conversation or message is ``None`` (or ``False``, ``[]``) where the method says
so, else ``LookupError``; a malformed cursor is ``BadRequest``. Nothing else is raised
for ordinary input.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from r3nb.engine.recent import RecentWrites
from r3nb.protocol import AuditRow, ConversationDict, MessageDict, UsageRow

from .values import HEAD, Context, Final, NewMessage, Parent, SnapshotParts, StoredAttachment


class Store(Protocol):
    """Conversations and their messages, for one server (or one hub service)."""

    #: Where the data lives, for logs and ``GET health`` (a file path; no secrets).
    path: str

    # --- lifecycle and health --------------------------------------------------------

    def open(self) -> None:
        """Connect, create the schema or migrate it, load what is kept in memory. Blocks:
        call once at start-up. ``StoreUnavailable`` (also kept in ``error``) says why not."""

    async def try_reopen(self) -> bool:
        """After a failure, open again: True when usable (``error`` is None again)."""

    def close(self) -> None:
        """Finish pending writes, close, stop any thread. Safe to call twice."""

    @property
    def error(self) -> str | None:
        """Why the last open failed (shown by health, cleared by a successful reopen);
        None otherwise."""

    @property
    def exposed(self) -> list[str]:
        """What of the stored data other users of the machine could read, in words."""

    @property
    def revision(self) -> int:
        """The latest revision handed out (0 for an empty store)."""

    @property
    def recent(self) -> RecentWrites:
        """What this process wrote lately (``recent.py``), updated after each commit:
        the engine reads a message there before asking the store."""

    @property
    def writes(self) -> int:
        """Message-row writes since open (health's ``db_writes``)."""

    @property
    def write_counts(self) -> OrderedDict[str, int]:
        """Writes per message id, for the most recently written messages (bounded)."""

    # --- conversations ---------------------------------------------------------------

    async def create_conversation(self, title: str, author: str | None) -> ConversationDict:
        """A new, empty conversation (no head, no model, no system prompt)."""

    async def list_conversations(
        self, limit: int, cursor: str | None = None, query: str | None = None
    ) -> tuple[list[ConversationDict], str | None]:
        """Up to ``limit`` conversations, most recently active first (``updated_at``
        descending, then ``id``), starting after ``cursor``, and the cursor of the next
        page (None on the last). ``query`` keeps those whose title or any message's text
        contains it, case-insensitively, ``%`` and ``_`` literally. ``BadRequest`` for a
        cursor this store did not give out."""

    async def get_conversation(self, cid: str) -> ConversationDict | None:
        """The header, ``message_count`` counting every branch; None if unknown."""

    async def update_conversation(
        self, cid: str, title: str | None, model: str | None, system_prompt: str | None
    ) -> ConversationDict | None:
        """Change what is given: None leaves a field as it is, an empty system prompt
        clears it. A new revision, ``updated_at`` unchanged (a rename is not activity).
        None if unknown."""

    async def delete_conversation(self, cid: str) -> bool:
        """The conversation and all its messages, atomically; False if unknown."""

    # --- messages --------------------------------------------------------------------

    async def add_messages(
        self,
        cid: str,
        messages: Sequence[NewMessage],
        title_hint: str | None = None,
        parent: Parent = HEAD,
    ) -> list[MessageDict]:
        """Insert ``messages`` in order, atomically; returns them decorated.

        Each follows the one before it, the first follows ``parent`` (HEAD: the current
        head; None: a new first message), and the last becomes the head. ``seq``
        continues the conversation's count; revisions increase in list order. The header
        is touched: ``updated_at`` now, a new revision, ``message_count``, the model of
        the first message that names one, and ``title_hint`` as title while the title is
        still ``DEFAULT_TITLE``. ``LookupError`` for an unknown conversation or parent."""

    async def begin_exchange(
        self, cid: str, messages: Sequence[NewMessage], title_hint: str, parent: Parent = HEAD
    ) -> list[MessageDict] | None:
        """``add_messages`` for a prompt (none for a regenerated reply) and its
        ``streaming`` reply, on every reply's time to first token: the rows are durable
        when this returns; the header may be persisted just after (it is in memory, and
        ``get_conversation`` shows it, at once). None where ``add_messages`` raises
        ``LookupError`` (the conversation or ``parent`` was deleted meanwhile). Calls
        arriving together may share one transaction (DuckDB's group commit), but one
        call's None or failure never fails another's."""

    async def get_message(self, mid: str) -> MessageDict | None:
        """The message as stored now, decorated; None if unknown."""

    async def messages_since(self, cid: str, since: int) -> list[MessageDict]:
        """Every message of ``cid`` on any branch written after ``since``, by ``seq``;
        not decorated; [] for an unknown conversation."""

    async def snapshot(self, cid: str, since: int) -> SnapshotParts | None:
        """What an observer's poll needs: (header, the current branch's messages written
        after ``since`` decorated in branch order, a revision these are consistent with
        — pass it as the next ``since`` — whether any message of the conversation still
        streams, the current branch's ids). None if unknown."""

    async def flush_partials(self, partials: Sequence[tuple[str, str]]) -> None:
        """Each (message id, text so far) becomes that message's ``content``, with a new
        revision, while the message still streams; others are left alone. All in ONE
        transaction: a server flushes every stream at once, every ``snapshot_interval``.
        A backend may store only what the text adds to the last flush (DuckDB appends
        chunks), so long as every read, ``fail_streaming`` and ``finalize`` see or leave
        the whole text."""

    async def finalize(self, mid: str, final: Final) -> MessageDict | None:
        """End a ``streaming`` message: ``final``'s text, status, error, tokens and cost
        in one write, a new revision. The first end wins: a message that no longer
        streams is left as it is. Returns the message as stored afterwards, decorated;
        None if unknown."""

    async def fail_streaming(
        self, reason: str, *, older_than: float | None = None, exclude: Iterable[str] = ()
    ) -> list[str]:
        """Every ``streaming`` message last written before ``older_than`` (None: all) and
        not in ``exclude`` becomes ``error`` with ``reason``, text kept, in one write with
        a new revision; returns their ids. Start-up recovery passes no cut-off (every
        such row was left by an earlier process); the sweeper passes one, and excludes
        the messages live tasks own. A backend several processes share (PostgreSQL)
        ends, without a cut-off, only the rows no other live process is streaming: a
        second service process starting must not end the first one's replies."""

    def fail_streaming_blocking(self, reason: str) -> list[str]:
        """``fail_streaming(reason)`` from sync code at start-up (a loop may be running)."""

    # --- the model's context and branches --------------------------------------------

    async def context_for(self, cid: str, upto: Parent = HEAD) -> Context:
        """What a model is sent: the ``complete`` messages of the branch ending at
        ``upto`` (HEAD: the head), first first, as (role, content, attachments, mark).
        Failed and cancelled replies are left out: feeding back partial text would teach
        the model to continue a broken answer. [] for an unknown conversation."""

    def cached_context(self, cid: str, upto: Parent = HEAD) -> Context | None:
        """``context_for`` answered from memory without waiting, or None: then ask
        ``context_for``."""

    async def move_head(self, cid: str, mid: str | None, *, newest: bool) -> ConversationDict:
        """Make the branch through ``mid`` current (``newest``: down to the most recently
        written message under it); None clears the branch (the next prompt starts a new
        first message). A new header revision. ``LookupError`` if unknown."""

    async def delete_turn(self, cid: str, mid: str) -> tuple[ConversationDict, list[str]]:
        """Delete prompt ``mid`` and every reply to it (all versions), atomically; what
        followed a reply now follows the prompt's parent, so the rest of each branch
        stays, and ``seq`` is renumbered 1..n. A head that was deleted moves to the
        prompt's parent. Returns the header and the deleted ids (``mid`` first).
        ``LookupError`` if unknown."""

    async def set_context(self, cid: str, mid: str, mark: str | None) -> MessageDict:
        """Mark message ``mid`` "pinned", "excluded" or neither (None): what the model is
        sent from now on. A new revision of the message; returns it decorated.
        ``LookupError`` for an unknown conversation or message."""

    # --- accounting ------------------------------------------------------------------

    async def usage(self, since: float, author: str | None = None) -> dict[str, dict[str, Any]]:
        """Per author ("" for none) of assistant messages created at or after ``since``
        (only ``author``'s when given): ``tokens`` (prompt + completion), ``cost`` and
        ``messages``, whatever their status."""

    async def stats(self) -> dict[str, int]:
        """Counts: ``conversations``, ``messages``, ``streaming_rows``."""

    # --- reports (admins) --------------------------------------------------------------

    async def usage_rows(self, since: float, until: float) -> list[UsageRow]:
        """Assistant messages created in [``since``, ``until``), whatever their status,
        grouped by UTC day (``floor(created_at / 86400)``: Unix days are UTC days),
        author ("" for none) and model ("" for none), ordered by day, person, model.
        Tokens and cost count None as 0."""

    async def audit_rows(
        self, since: float, until: float, limit: int, before: tuple[float, str] | None = None
    ) -> list[AuditRow]:
        """The replies created in [``since``, ``until``), newest first (``created_at``
        descending, then message id descending), at most ``limit``, starting after
        ``before`` = (created_at, id) of the last row of the previous page. Each with its
        prompt (the reply's parent when that is a user message, else "") cut at 500
        characters, and its author as ``person`` ("" for none)."""

    # --- attachments ------------------------------------------------------------------
    # Bytes sent with a prompt (an image for the model), one row each in ``attachments``
    # (id, message_id, conversation_id, kind, mime, name, bytes, size, created_at). The
    # prompt's ``attachments`` field names them (kind, name, id, mime, size; no bytes).
    # Not revisions: the prompt's row carries the change. Deleted with the conversation,
    # and with their message by ``delete_turn``.

    async def add_attachments(self, attachments: Sequence[StoredAttachment]) -> None:
        """Store the rows (written before the prompt they belong to, whose id they
        carry); all or none."""

    async def get_attachments(self, ids: Sequence[str]) -> dict[str, StoredAttachment]:
        """The rows of ``ids`` that exist, by id, with their bytes (unknown ids left out)."""

    async def delete_attachments(self, mid: str) -> int:
        """Delete the rows of message ``mid`` (a prompt that could not be stored); how many."""

    # --- access (hub mode) ------------------------------------------------------------
    # Who a conversation belongs to and whom it is shared with. Only the hub service
    # (``r3nb/service``) calls these; a single-user server never records access, so its
    # conversations have none. Names are JupyterHub user or group names, stored as
    # given (case-sensitive). Tables (DuckDB migration "0006_conversation_access"):
    #   conversation_owners(conversation_id PK, owner, server, created_at)
    #   conversation_shares(conversation_id, kind 'user'|'group', name, granted_by,
    #                       created_at; PRIMARY KEY (conversation_id, kind, name))
    # Access rows are not revisions: they change no ``revision`` and no snapshot.

    async def set_owner(self, cid: str, owner: str, server: str) -> None:
        """Record that ``owner`` created conversation ``cid`` through hub server
        ``server`` ("alice/" or "alice/lab": owner/server-name as in JupyterHub's
        ``access:servers!server=`` scope). Called once, right after creation; a second
        call for the same ``cid`` replaces the row (upsert). The conversation need not
        be checked for existence."""

    async def access_of(self, cids: Sequence[str]) -> dict[str, ConversationAccess]:
        """The access of each of ``cids`` that has an owner row (others are absent
        from the result), with its shares sorted by (kind, name). One round trip for
        the whole batch: the service filters a page of 100 conversations with it."""

    async def add_share(self, cid: str, share: Share, granted_by: str) -> bool:
        """Share ``cid`` with ``share`` (a user or a group). True if it is new, False if
        it already existed (nothing changes then). Does not check that ``cid`` exists."""

    async def remove_share(self, cid: str, share: Share) -> bool:
        """Revoke ``share`` on ``cid``. True if it existed."""

    async def forget_access(self, cid: str) -> None:
        """Delete ``cid``'s owner row and all its shares (after the conversation is
        deleted). Nothing happens for an unknown ``cid``."""


@dataclass(frozen=True, order=True)
class Share:
    """A conversation shared with one hub user (``kind="user"``) or hub group."""

    kind: Literal["user", "group"]
    name: str

    def as_json(self) -> dict[str, str]:
        return {self.kind: self.name}


@dataclass(frozen=True)
class ConversationAccess:
    """Who owns a conversation, where it was created, and whom it is shared with."""

    owner: str
    server: str  # "owner/server-name" of the hub server it was created through
    shares: tuple[Share, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "server": self.server,
            "shares": [share.as_json() for share in self.shares],
        }
