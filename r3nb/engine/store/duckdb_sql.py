"""Every SQL statement of the DuckDB backend, as functions of the connection.

Stateless: the caller (``duckdb_ops``) numbers revisions, keeps the mirror and the trees
in step, and runs these on the DB thread. Column lists come from ``rows.py``; only those
module constants are interpolated into SQL, every value is a bound parameter.

``messages`` has no index on ``id`` (``schema.py`` says why): a statement that touches
many rows is written as one set-based statement, one scan, never one per row.

A streaming message's text is its ``content`` followed by its ``message_chunks`` (the
text each flush appended, by offset): a flush then writes only the new text, not the
whole reply again. Every read that returns a message folds the chunks in (``_fold``);
``finalize`` and ``fail_streaming`` fold them into ``content`` and delete them, so a
message that no longer streams is one ``content`` column again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import duckdb

import r3nb.engine.store.rows as rows
from r3nb.protocol import ConversationDict, MessageDict

from .duckdb_thread import transaction
from .report_rows import usage_by_author
from .values import Context, Final

Connection = duckdb.DuckDBPyConnection

_M = rows.MESSAGE_COLUMNS
_INSERT_CONVERSATION = (
    f"INSERT INTO conversations ({', '.join(rows.CONVERSATION_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(rows.CONVERSATION_COLUMNS))})"
)
_UPDATE_HEADER = (
    "UPDATE conversations SET "
    + ", ".join(f"{name} = ?" for name in rows.HEADER_FIELDS)
    + " WHERE id = ?"
)
_INSERT_MESSAGES = f"INSERT INTO messages ({_M}) SELECT " + ", ".join(
    f"unnest(?) AS {name}" for name in rows.MESSAGE_FIELDS
)
#: Many headers in one statement, each column bound as a list (see ``insert_messages``).
_UPDATE_HEADERS = (
    "UPDATE conversations SET "
    + ", ".join(f"{name} = b.{name}" for name in rows.HEADER_FIELDS)
    + " FROM (SELECT "
    + ", ".join(f"unnest(?) AS {name}" for name in (*rows.HEADER_FIELDS, "id"))
    + ") AS b WHERE conversations.id = b.id"
)
#: Each message's chunks as one text, in offset order (add WHERE, then GROUP BY).
_CHUNK_TEXT = (
    "SELECT message_id, string_agg(text, '' ORDER BY start_offset) AS text FROM message_chunks"
)
_FINALIZE = (
    "UPDATE messages SET "
    + ", ".join(f"{name} = ?" for name in rows.FINAL_FIELDS)
    + f", updated_at = ?, revision = ? WHERE id = ? AND status = 'streaming' RETURNING {_M}"
)

#: ``_FINALIZE`` for many messages, each column bound as a list (``finalize_many``).
_FINAL_TYPES = {"prompt_tokens": "INTEGER", "completion_tokens": "INTEGER", "cost": "DOUBLE"}
_FINALIZE_MANY = (
    "UPDATE messages SET "
    + ", ".join(f"{name} = b.{name}" for name in rows.FINAL_FIELDS)
    + ", updated_at = ?, revision = b.rev FROM (SELECT unnest(?::VARCHAR[]) AS id,"
    + " unnest(?::BIGINT[]) AS rev, "
    + ", ".join(
        f"unnest(?::{_FINAL_TYPES.get(name, 'VARCHAR')}[]) AS {name}" for name in rows.FINAL_FIELDS
    )
    + ") AS b WHERE messages.id = b.id AND messages.status = 'streaming' RETURNING "
    + ", ".join(f"messages.{name}" for name in rows.MESSAGE_FIELDS)
)


# --- conversations -----------------------------------------------------------------


def max_revision(con: Connection) -> int:
    row = con.execute(
        "SELECT greatest((SELECT coalesce(max(revision), 0) FROM messages),"
        " (SELECT coalesce(max(revision), 0) FROM conversations))"
    ).fetchone()
    return int(row[0]) if row else 0


def all_conversations(con: Connection) -> list[ConversationDict]:
    return [
        rows.conversation_from_row(r) for r in con.execute(rows.SELECT_CONVERSATIONS).fetchall()
    ]


def insert_conversation(con: Connection, header: ConversationDict) -> None:
    con.execute(_INSERT_CONVERSATION, rows.conversation_values(header, rows.CONVERSATION_COLUMNS))


def update_header(con: Connection, header: ConversationDict) -> None:
    """Persist what changes in a header (``rows.HEADER_FIELDS``)."""
    con.execute(
        _UPDATE_HEADER, [*rows.conversation_values(header, rows.HEADER_FIELDS), header["id"]]
    )


def delete_conversation(con: Connection, cid: str) -> bool:
    """The conversation, its messages and attachments, in one transaction; False if it
    did not exist."""
    with transaction(con):
        con.execute(
            "DELETE FROM message_chunks WHERE message_id IN"
            " (SELECT id FROM messages WHERE conversation_id = ?)",
            [cid],
        )
        con.execute("DELETE FROM attachments WHERE conversation_id = ?", [cid])
        con.execute("DELETE FROM messages WHERE conversation_id = ?", [cid])
        deleted = con.execute(
            "DELETE FROM conversations WHERE id = ? RETURNING id", [cid]
        ).fetchall()
    return bool(deleted)


def conversations_mentioning(con: Connection, query: str) -> list[str]:
    """Ids of conversations with a message containing ``query`` (case-insensitive)."""
    pattern = "%" + re.sub(r"([\\%_])", r"\\\1", query) + "%"
    found = con.execute(
        "SELECT DISTINCT m.conversation_id FROM messages m LEFT JOIN"
        f" ({_CHUNK_TEXT} GROUP BY message_id) c ON c.message_id = m.id"
        " WHERE (m.content || coalesce(c.text, '')) ILIKE ? ESCAPE '\\'",
        [pattern],
    ).fetchall()
    return [r[0] for r in found]


# --- messages ----------------------------------------------------------------------


def insert_messages(con: Connection, values: Sequence[Sequence[Any]]) -> None:
    """Rows of ``rows.MESSAGE_COLUMNS`` values, in ONE statement (one implicit
    transaction unless the caller holds one), bound as one list per column: a VALUES
    list of 100 rows (2,000 parameters) took 50-90 ms to plan, this takes ~3 ms."""
    con.execute(_INSERT_MESSAGES, [list(column) for column in zip(*values, strict=True)])


def admit(
    con: Connection, values: Sequence[Sequence[Any]], headers: Sequence[ConversationDict]
) -> None:
    """Several exchanges' rows and their conversations' headers in ONE transaction: the
    group commit of sends that arrive together (``duckdb_admit``)."""
    with transaction(con):
        insert_messages(con, values)
        con.execute(
            _UPDATE_HEADERS,
            [
                list(column)
                for column in zip(
                    *([*rows.conversation_values(h, rows.HEADER_FIELDS), h["id"]] for h in headers),
                    strict=True,
                )
            ],
        )


def select_message(con: Connection, mid: str) -> MessageDict | None:
    row = con.execute(f"SELECT {_M} FROM messages WHERE id = ?", [mid]).fetchone()
    return _fold(con, [rows.message_from_row(row)])[0] if row else None


def messages_since(con: Connection, cid: str, since: int) -> list[MessageDict]:
    found = con.execute(
        f"SELECT {_M} FROM messages WHERE conversation_id = ? AND revision > ? ORDER BY seq",
        [cid, since],
    ).fetchall()
    return _fold(con, [rows.message_from_row(r) for r in found])


def _fold(con: Connection, messages: list[MessageDict]) -> list[MessageDict]:
    """``messages`` with each streaming one's chunks appended to its ``content``."""
    streaming = [m["id"] for m in messages if m["status"] == "streaming"]
    if not streaming:
        return messages
    found = dict(
        con.execute(
            f"{_CHUNK_TEXT} WHERE list_contains(?::VARCHAR[], message_id) GROUP BY message_id",
            [streaming],
        ).fetchall()
    )
    return [
        {**m, "content": m["content"] + found[m["id"]]} if m["id"] in found else m for m in messages
    ]


def tree_rows(con: Connection, cid: str) -> list[tuple[str, str | None, str | None]]:
    """(id, parent_id, context mark) of a conversation's messages in ``seq`` order."""
    found = con.execute(
        "SELECT id, parent_id, context FROM messages WHERE conversation_id = ? ORDER BY seq",
        [cid],
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in found]


def completed_turns(con: Connection, cid: str, path: list[str]) -> Context:
    """The ``complete`` messages of ``path`` as model turns, in ``path`` order."""
    found = con.execute(
        "SELECT id, role, content, attachments, context FROM messages"
        " WHERE conversation_id = ? AND list_contains(?::VARCHAR[], id)"
        " AND status = 'complete'",
        [cid, path],
    ).fetchall()
    turns = {r[0]: (r[1], r[2], rows.decode("attachments", r[3]), r[4]) for r in found}
    return [turns[mid] for mid in path if mid in turns]


def flush_partials(
    con: Connection,
    now: float,
    appends: Sequence[tuple[str, int, str]],
    rewrites: Sequence[tuple[str, str]],
    revisions: Sequence[tuple[str, int]],
) -> list[str]:
    """One transaction: each (id, offset, text) of ``appends`` becomes a chunk, each
    (id, text) of ``rewrites`` the whole ``content`` (its chunks dropped), each message
    of ``revisions`` gets that revision and ``updated_at`` — all only while it streams.
    Returns the ids still streaming. Set-based statements joined to the batch: one scan
    of the table, where one statement per stream would scan it once per stream."""
    with transaction(con):
        found = con.execute(
            "UPDATE messages SET updated_at = ?, revision = b.rev"
            " FROM (SELECT unnest(?::VARCHAR[]) AS id, unnest(?::BIGINT[]) AS rev) AS b"
            " WHERE messages.id = b.id AND messages.status = 'streaming' RETURNING messages.id",
            [now, [m for m, _ in revisions], [r for _, r in revisions]],
        ).fetchall()
        live = [r[0] for r in found]
        if rewrites:
            con.execute(
                "DELETE FROM message_chunks WHERE list_contains(?::VARCHAR[], message_id)",
                [[m for m, _ in rewrites]],
            )
            con.execute(
                "UPDATE messages SET content = b.content FROM (SELECT unnest(?::VARCHAR[]) AS id,"
                " unnest(?::VARCHAR[]) AS content) AS b"
                " WHERE messages.id = b.id AND list_contains(?::VARCHAR[], messages.id)",
                [[m for m, _ in rewrites], [t for _, t in rewrites], live],
            )
        if appends:
            con.execute(
                "INSERT INTO message_chunks SELECT * FROM (SELECT unnest(?::VARCHAR[]) AS id,"
                " unnest(?::BIGINT[]) AS start, unnest(?::VARCHAR[]) AS text)"
                " WHERE list_contains(?::VARCHAR[], id)",
                [[a[0] for a in appends], [a[1] for a in appends], [a[2] for a in appends], live],
            )
    return live


def finalize(
    con: Connection, mid: str, final: Final, now: float, revision: int
) -> MessageDict | None:
    """The end state of a ``streaming`` message; None if it no longer streams."""
    return finalize_many(con, [(mid, final, revision)], now)[0]


def finalize_many(
    con: Connection, ends: Sequence[tuple[str, Final, int]], now: float
) -> list[MessageDict | None]:
    """``finalize`` for each (id, final, revision) of ``ends``: ONE transaction of
    set-based statements (the replies of a burst end together; one each scanned the
    table twice and committed fifty times: ~3 ms of the DB thread per reply)."""
    if len(ends) == 1:
        mid, final, revision = ends[0]
        values = [getattr(final, name) for name in rows.FINAL_FIELDS]
        with transaction(con):
            row = con.execute(_FINALIZE, [*values, now, revision, mid]).fetchone()
            if row:  # the final text is whole: what the flushes appended goes
                con.execute("DELETE FROM message_chunks WHERE message_id = ?", [mid])
        return [rows.message_from_row(row) if row else None]
    columns = [[getattr(final, name) for _, final, _ in ends] for name in rows.FINAL_FIELDS]
    with transaction(con):
        found = con.execute(
            _FINALIZE_MANY,
            [now, [m for m, _, _ in ends], [r for _, _, r in ends], *columns],
        ).fetchall()
        ended = {row[0]: row for row in found}
        if ended:
            con.execute(
                "DELETE FROM message_chunks WHERE list_contains(?::VARCHAR[], message_id)",
                [list(ended)],
            )
    return [rows.message_from_row(ended[m]) if m in ended else None for m, _, _ in ends]


def fail_streaming(
    con: Connection,
    reason: str,
    now: float,
    revision: int,
    older_than: float,
    exclude: list[str],
) -> list[MessageDict]:
    """Every ``streaming`` row last written before ``older_than`` and not in ``exclude``
    becomes ``error``: ``reason``, its chunks folded into ``content`` (text flushed
    before a crash is kept), in one transaction of set-based statements (measured at
    1,000,000 messages: 92 ms for 100 rows one by one)."""
    with transaction(con):
        found = con.execute(
            "UPDATE messages SET status = 'error', error = ?, updated_at = ?, revision = ?"
            " WHERE status = 'streaming' AND updated_at < ?"
            f" AND NOT list_contains(?::VARCHAR[], id) RETURNING {_M}",
            [reason, now, revision, older_than, exclude],
        ).fetchall()
        failed = [rows.message_from_row(r) for r in found]
        if not failed:
            return []
        # The rows come from RETURNING, not a SELECT by id afterwards: at 1,000,000
        # messages that SELECT scanned them all (30 ms warm, ~300 ms just after open).
        ids = [m["id"] for m in failed]
        folded = dict(
            con.execute(
                "UPDATE messages SET content = messages.content || c.text"
                f" FROM ({_CHUNK_TEXT} WHERE list_contains(?::VARCHAR[], message_id)"
                " GROUP BY message_id) AS c WHERE messages.id = c.message_id"
                " RETURNING messages.id, messages.content",
                [ids],
            ).fetchall()
        )
        if folded:
            con.execute(
                "DELETE FROM message_chunks WHERE list_contains(?::VARCHAR[], message_id)", [ids]
            )
    return [{**m, "content": folded[m["id"]]} if m["id"] in folded else m for m in failed]


def set_context(
    con: Connection, cid: str, mid: str, mark: str | None, revision: int
) -> MessageDict | None:
    row = con.execute(
        "UPDATE messages SET context = ?, revision = ? WHERE id = ? AND conversation_id = ?"
        f" RETURNING {_M}",
        [mark, revision, mid, cid],
    ).fetchone()
    return _fold(con, [rows.message_from_row(row)])[0] if row else None


def delete_turn(
    con: Connection,
    cid: str,
    deleted: list[str],
    moved: list[str],
    above: str | None,
    revision: int,
) -> list[MessageDict]:
    """Delete ``deleted``, re-parent ``moved`` to ``above``, renumber ``seq`` 1..n (a new
    message's seq is the count + 1). Returns the rows changed (a row may come twice: the
    later is newer). Call inside a transaction."""
    con.execute(
        "DELETE FROM message_chunks WHERE list_contains(?::VARCHAR[], message_id)", [deleted]
    )
    con.execute("DELETE FROM attachments WHERE list_contains(?::VARCHAR[], message_id)", [deleted])
    con.execute(
        "DELETE FROM messages WHERE conversation_id = ? AND list_contains(?::VARCHAR[], id)",
        [cid, deleted],
    )
    changed = con.execute(
        "UPDATE messages SET parent_id = ?, revision = ? WHERE conversation_id = ?"
        f" AND list_contains(?::VARCHAR[], id) RETURNING {_M}",
        [above, revision, cid, moved],
    ).fetchall()
    changed += con.execute(
        "UPDATE messages SET seq = r.n, revision = ? FROM (SELECT id, row_number()"
        " OVER (ORDER BY seq) AS n FROM messages WHERE conversation_id = ?) AS r"
        f" WHERE messages.id = r.id AND messages.seq <> r.n RETURNING {_M}",
        [revision, cid],
    ).fetchall()
    return _fold(con, [rows.message_from_row(r) for r in changed])


# --- accounting --------------------------------------------------------------------


def usage(con: Connection, since: float, author: str | None) -> dict[str, dict[str, Any]]:
    found = con.execute(
        "SELECT coalesce(author, ''),"
        " sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)),"
        " sum(coalesce(cost, 0)), count(*) FROM messages"
        " WHERE role = 'assistant' AND created_at >= ? AND (? IS NULL OR author = ?)"
        " GROUP BY 1",
        [since, author, author],
    ).fetchall()
    return usage_by_author(found)


def stats(con: Connection) -> dict[str, int]:
    row = con.execute(
        "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM messages),"
        " (SELECT count(*) FROM messages WHERE status = 'streaming')"
    ).fetchone()
    assert row is not None
    return {"conversations": row[0], "messages": row[1], "streaming_rows": row[2]}
