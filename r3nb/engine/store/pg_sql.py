"""Every SQL statement of the PostgreSQL backend, as functions of the connection.

Stateless, like ``duckdb_sql``: ``pg_ops`` decides what runs in which transaction and
keeps this process's memory in step. Column lists come from ``rows.py``; only module
constants are interpolated into SQL, every value is a bound parameter.

A streaming reply's text is its ``content`` (the placeholder it was inserted with)
followed by its ``message_chunks`` in order; every SELECT or RETURNING list of messages
(``_M``) reads it that way, so readers see the text so far whatever backend wrote it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import r3nb.engine.store.rows as rows
from r3nb.engine.branches import Tree
from r3nb.protocol import ConversationDict, MessageDict

from .pg_connection import WRITER_PREFIX, Connection
from .pg_notify import CHANNEL, payload
from .report_rows import usage_by_author
from .values import Context, Final

#: A streaming message's appended text, in order.
_CHUNKS = (
    "(SELECT string_agg(k.text, '' ORDER BY k.n) FROM message_chunks k WHERE k.message_id = m.id)"
)
#: A message's text as readers see it (alias ``m``).
CONTENT = (
    f"CASE WHEN m.status = 'streaming' THEN m.content || coalesce({_CHUNKS}, '') ELSE m.content END"
)
_M = ", ".join(CONTENT if n == "content" else f"m.{n}" for n in rows.MESSAGE_FIELDS)
_C = ", ".join(
    f"{rows.COUNTED[n]} AS {n}" if n in rows.COUNTED else f"c.{n}" for n in rows.CONVERSATION_FIELDS
)
_INSERT_CONVERSATION = (
    f"INSERT INTO conversations ({', '.join(rows.CONVERSATION_COLUMNS)})"
    f" VALUES ({', '.join(['%s'] * len(rows.CONVERSATION_COLUMNS))})"
)
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({rows.MESSAGE_COLUMNS})"
    f" VALUES ({', '.join(['%s'] * len(rows.MESSAGE_FIELDS))})"
)
#: Where a message row (``rows.new_message_row``) holds its id and status.
_ID = rows.MESSAGE_FIELDS.index("id")
_STATUS = rows.MESSAGE_FIELDS.index("status")
_FINALIZE = (
    "UPDATE messages AS m SET "
    + ", ".join(f"{name} = %s" for name in rows.FINAL_FIELDS)
    + f", updated_at = %s, revision = %s WHERE m.id = %s AND m.status = 'streaming'"
    f" RETURNING {_M}"
)


@dataclass
class Write:
    """One writing transaction: the revisions it took (``first``..``last``) and the
    conversations it changed (named in its notification)."""

    first: int
    last: int
    changed: set[str] = field(default_factory=set)


@contextlib.contextmanager
def writing(con: Connection, revisions: int) -> Iterator[Write]:
    """A transaction taking ``revisions`` new revisions, notifying on commit.

    The counter row stays locked until commit, so writers of every process commit in
    revision order (a poll never skips a revision committed late); PostgreSQL
    serializes notifying transactions at commit anyway."""
    with con.transaction():
        row = con.execute(
            "UPDATE store_revision SET value = value + %s RETURNING value", [revisions]
        ).fetchone()
        assert row is not None
        write = Write(first=int(row[0]) - revisions + 1, last=int(row[0]))
        yield write
        if write.changed:
            con.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload(write.last, write.changed)])


@contextlib.contextmanager
def reading(con: Connection) -> Iterator[None]:
    """A read-only transaction on one snapshot: the rows and the counter agree."""
    with con.transaction():
        con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def revision(con: Connection) -> int:
    row = con.execute("SELECT value FROM store_revision").fetchone()
    return int(row[0]) if row else 0


def wake_listeners(con: Connection) -> None:
    """A notification that is no change: a listener waiting on it looks at its flag."""
    con.execute("SELECT pg_notify(%s, 'wake')", [CHANNEL])


# --- conversations -----------------------------------------------------------------


def _conversation(row: Sequence[Any] | None) -> ConversationDict | None:
    return rows.conversation_from_row(row) if row else None


def select_conversation(
    con: Connection, cid: str, *, lock: bool = False
) -> ConversationDict | None:
    """The header; ``lock`` holds its row to the end of the transaction (writers of one
    conversation then take turns, in every process)."""
    if lock:
        con.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", [cid])
    row = con.execute(f"SELECT {_C} FROM conversations c WHERE c.id = %s", [cid]).fetchone()
    return _conversation(row)


def list_conversations(
    con: Connection, limit: int, after: tuple[float, str] | None, query: str | None
) -> list[ConversationDict]:
    """Up to ``limit`` headers in list order after the key ``after`` (``paging``'s
    ``(-updated_at, id)``), matching ``query`` in the title or any message's text."""
    where: list[str] = []
    params: list[Any] = []
    if query:
        pattern = "%" + re.sub(r"([\\%_])", r"\\\1", query) + "%"
        where.append(
            "(c.title ILIKE %s OR EXISTS (SELECT 1 FROM messages m"
            f" WHERE m.conversation_id = c.id AND ({CONTENT}) ILIKE %s))"
        )
        params += [pattern, pattern]
    if after is not None:
        where.append('(c.updated_at < %s OR (c.updated_at = %s AND c.id COLLATE "C" > %s))')
        params += [-after[0], -after[0], after[1]]
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    found = con.execute(
        f'SELECT {_C} FROM conversations c{clause} ORDER BY c.updated_at DESC, c.id COLLATE "C"'
        " LIMIT %s",
        [*params, limit],
    ).fetchall()
    return [rows.conversation_from_row(r) for r in found]


def insert_conversation(con: Connection, header: ConversationDict) -> None:
    con.execute(_INSERT_CONVERSATION, rows.conversation_values(header, rows.CONVERSATION_COLUMNS))


def update_conversation(
    con: Connection,
    cid: str,
    title: str | None,
    model: str | None,
    system_prompt: str | None,
    revision: int,
) -> ConversationDict | None:
    """None leaves a field; an empty title or model too; an empty system prompt clears."""
    row = con.execute(
        "UPDATE conversations AS c SET title = coalesce(nullif(%s, ''), c.title),"
        " model = coalesce(nullif(%s, ''), c.model),"
        " system_prompt = CASE WHEN %s::text IS NULL THEN c.system_prompt"
        " ELSE nullif(%s::text, '') END,"
        f" revision = %s WHERE c.id = %s RETURNING {_C}",
        [title, model, system_prompt, system_prompt, revision, cid],
    ).fetchone()
    return _conversation(row)


def update_header(con: Connection, cid: str, revision: int, **fields: Any) -> ConversationDict:
    """Set ``fields`` (stored header columns) and the revision; returns the header."""
    names = [n for n in fields if n in rows.HEADER_FIELDS]
    sets = "".join(f"{n} = %s, " for n in names)
    row = con.execute(
        f"UPDATE conversations AS c SET {sets}revision = %s WHERE c.id = %s RETURNING {_C}",
        [*(rows.encode(n, fields[n]) for n in names), revision, cid],
    ).fetchone()
    assert row is not None, "update_header runs on a locked, existing conversation"
    return rows.conversation_from_row(row)


def delete_conversation(con: Connection, cid: str) -> bool:
    """The conversation; its messages and their chunks go with it (ON DELETE CASCADE)."""
    return bool(
        con.execute("DELETE FROM conversations WHERE id = %s RETURNING id", [cid]).fetchall()
    )


# --- messages ----------------------------------------------------------------------


def _messages(found: list[Any]) -> list[MessageDict]:
    return [rows.message_from_row(r) for r in found]


def insert_messages(con: Connection, values: Sequence[Sequence[Any]], writer: str) -> None:
    """The rows, and ``writer`` as the process streaming those still ``streaming``."""
    with con.cursor() as cur:
        cur.executemany(_INSERT_MESSAGE, values)
    streaming = [v[_ID] for v in values if v[_STATUS] == "streaming"]
    if streaming:
        with con.cursor() as cur:
            cur.executemany(
                "INSERT INTO stream_writers (message_id, writer) VALUES (%s, %s)",
                [(mid, writer) for mid in streaming],
            )


def count_messages(con: Connection, cid: str) -> int:
    row = con.execute("SELECT count(*) FROM messages WHERE conversation_id = %s", [cid]).fetchone()
    return int(row[0]) if row else 0


def select_message(con: Connection, mid: str) -> MessageDict | None:
    row = con.execute(f"SELECT {_M} FROM messages m WHERE m.id = %s", [mid]).fetchone()
    return rows.message_from_row(row) if row else None


def messages_since(con: Connection, cid: str, since: int) -> list[MessageDict]:
    return _messages(
        con.execute(
            f"SELECT {_M} FROM messages m WHERE m.conversation_id = %s AND m.revision > %s"
            " ORDER BY m.seq",
            [cid, since],
        ).fetchall()
    )


def any_streaming(con: Connection, cid: str) -> bool:
    row = con.execute(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE conversation_id = %s"
        " AND status = 'streaming')",
        [cid],
    ).fetchone()
    return bool(row and row[0])


def tree(con: Connection, cid: str, head: str | None) -> Tree:
    """The conversation's branch tree, as stored now."""
    found = con.execute(
        "SELECT id, parent_id, context FROM messages WHERE conversation_id = %s ORDER BY seq",
        [cid],
    ).fetchall()
    marks = {r[0]: r[2] for r in found if r[2] is not None}
    return Tree(((r[0], r[1]) for r in found), head, marks)


def completed_turns(con: Connection, cid: str, path: list[str]) -> Context:
    """The ``complete`` messages of ``path`` as model turns, in ``path`` order."""
    found = con.execute(
        "SELECT id, role, content, attachments, context FROM messages"
        " WHERE conversation_id = %s AND id = ANY(%s::text[]) AND status = 'complete'",
        [cid, path],
    ).fetchall()
    turns = {r[0]: (r[1], r[2], rows.decode("attachments", r[3]), r[4]) for r in found}
    return [turns[mid] for mid in path if mid in turns]


def touch_streaming(
    con: Connection, now: float, mids: list[str], revisions: list[int]
) -> dict[str, str]:
    """Give each still-streaming message of ``mids`` its revision and ``now``; returns
    {id: conversation id} of those (their rows stay locked to commit)."""
    found = con.execute(
        "UPDATE messages AS m SET updated_at = %s, revision = b.rev"
        " FROM unnest(%s::text[], %s::bigint[]) AS b(id, rev)"
        " WHERE m.id = b.id AND m.status = 'streaming' RETURNING m.id, m.conversation_id",
        [now, mids, revisions],
    ).fetchall()
    return {r[0]: r[1] for r in found}


def stored_lengths(con: Connection, mids: list[str]) -> dict[str, int]:
    """The length (code points) of each message's text so far."""
    found = con.execute(
        "SELECT m.id, char_length(m.content) + coalesce((SELECT sum(char_length(k.text))"
        " FROM message_chunks k WHERE k.message_id = m.id), 0)"
        " FROM messages m WHERE m.id = ANY(%s::text[])",
        [mids],
    ).fetchall()
    return {r[0]: int(r[1]) for r in found}


def append_chunks(con: Connection, chunks: list[tuple[str, str]]) -> None:
    """(id, text) appended after each message's text, in ONE statement."""
    con.execute(
        "INSERT INTO message_chunks (message_id, text)"
        " SELECT * FROM unnest(%s::text[], %s::text[])",
        [[m for m, _ in chunks], [t for _, t in chunks]],
    )


def rewrite_text(con: Connection, mid: str, text: str) -> None:
    """``text`` as the whole text of a streaming message (when it is not an extension of
    what was written: rare, never in a normal stream)."""
    con.execute("DELETE FROM message_chunks WHERE message_id = %s", [mid])
    con.execute("UPDATE messages SET content = %s WHERE id = %s", [text, mid])


def finalize(
    con: Connection, mid: str, final: Final, now: float, revision: int
) -> MessageDict | None:
    """The end state of a ``streaming`` message, its chunks deleted; None if it no
    longer streams. Call inside a transaction."""
    values = [getattr(final, name) for name in rows.FINAL_FIELDS]
    row = con.execute(_FINALIZE, [*values, now, revision, mid]).fetchone()
    if row is None:
        return None
    con.execute("DELETE FROM message_chunks WHERE message_id = %s", [mid])
    con.execute("DELETE FROM stream_writers WHERE message_id = %s", [mid])
    return rows.message_from_row(row)


def fail_streaming(
    con: Connection,
    reason: str,
    now: float,
    revision: int,
    older_than: float,
    exclude: list[str],
    only: list[str] | None = None,
) -> list[MessageDict]:
    """Every ``streaming`` row last written before ``older_than``, not in ``exclude``
    (and in ``only`` when given) becomes ``error``: ``reason``, its chunks folded into
    ``content``. Call inside a transaction."""
    failed = _messages(
        con.execute(
            f"UPDATE messages AS m SET content = m.content || coalesce({_CHUNKS}, ''),"
            " status = 'error', error = %s, updated_at = %s, revision = %s"
            " WHERE m.status = 'streaming' AND m.updated_at < %s"
            " AND NOT (m.id = ANY(%s::text[]))"
            f" AND (%s::text[] IS NULL OR m.id = ANY(%s::text[])) RETURNING {_M}",
            [reason, now, revision, older_than, exclude, only, only],
        ).fetchall()
    )
    if failed:
        ended = [m["id"] for m in failed]
        con.execute("DELETE FROM message_chunks WHERE message_id = ANY(%s::text[])", [ended])
        con.execute("DELETE FROM stream_writers WHERE message_id = ANY(%s::text[])", [ended])
    return failed


def orphans(con: Connection, writer: str) -> list[str]:
    """The ``streaming`` rows no other live process streams: written by ``writer`` (the
    caller), by a writer with no connection named after it (``WRITER_PREFIX``), or by
    none recorded. What start-up recovery may end when processes share the database."""
    found = con.execute(
        """SELECT m.id FROM messages m
           LEFT JOIN stream_writers w ON w.message_id = m.id
           WHERE m.status = 'streaming' AND (w.writer IS NULL OR w.writer = %s
               OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                              WHERE a.application_name = %s || w.writer))""",
        [writer, WRITER_PREFIX],
    ).fetchall()
    return [str(r[0]) for r in found]


def set_context(
    con: Connection, cid: str, mid: str, mark: str | None, revision: int
) -> MessageDict | None:
    row = con.execute(
        "UPDATE messages AS m SET context = %s, revision = %s"
        f" WHERE m.id = %s AND m.conversation_id = %s RETURNING {_M}",
        [mark, revision, mid, cid],
    ).fetchone()
    return rows.message_from_row(row) if row else None


def delete_turn(
    con: Connection,
    cid: str,
    deleted: list[str],
    moved: list[str],
    above: str | None,
    revision: int,
) -> list[MessageDict]:
    """Delete ``deleted``, re-parent ``moved`` to ``above``, renumber ``seq`` 1..n.
    Returns the rows changed (a row may come twice: the later is newer). Call inside a
    transaction."""
    con.execute("DELETE FROM attachments WHERE message_id = ANY(%s::text[])", [deleted])
    con.execute(
        "DELETE FROM messages WHERE conversation_id = %s AND id = ANY(%s::text[])",
        [cid, deleted],
    )
    changed = con.execute(
        "UPDATE messages AS m SET parent_id = %s, revision = %s WHERE m.conversation_id = %s"
        f" AND m.id = ANY(%s::text[]) RETURNING {_M}",
        [above, revision, cid, moved],
    ).fetchall()
    changed += con.execute(
        "UPDATE messages AS m SET seq = r.n, revision = %s FROM (SELECT id, row_number()"
        " OVER (ORDER BY seq) AS n FROM messages WHERE conversation_id = %s) AS r"
        f" WHERE m.id = r.id AND m.seq <> r.n RETURNING {_M}",
        [revision, cid],
    ).fetchall()
    return _messages(changed)


# --- accounting --------------------------------------------------------------------


def usage(con: Connection, since: float, author: str | None) -> dict[str, dict[str, Any]]:
    found = con.execute(
        "SELECT coalesce(author, ''),"
        " sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)),"
        " sum(coalesce(cost, 0)), count(*) FROM messages"
        " WHERE role = 'assistant' AND created_at >= %s"
        " AND (%s::text IS NULL OR author = %s) GROUP BY 1",
        [since, author, author],
    ).fetchall()
    return usage_by_author(found)


def stats(con: Connection) -> dict[str, int]:
    row = con.execute(
        "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM messages),"
        " (SELECT count(*) FROM messages WHERE status = 'streaming')"
    ).fetchone()
    assert row is not None
    return {"conversations": int(row[0]), "messages": int(row[1]), "streaming_rows": int(row[2])}
