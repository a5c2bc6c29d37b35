"""The PostgreSQL backend's tables, as ordered, named, append-only migrations.

The same columns as DuckDB's (``schema.py``; the column lists themselves come from
``rows.py``), in PostgreSQL's dialect, plus what only this backend has:

- ``message_chunks``: a streaming reply's partial text, appended at each flush. Rewriting
  a whole reply at every flush costs ~22 bytes of WAL per text byte at 200 streams,
  appending ~2.2 (measured, DESIGN.md); ``finalize`` folds the chunks into the one
  ``content`` and deletes them.
- ``store_revision``: the one revision counter of the store, a single row that every
  writing transaction bumps. Not a SEQUENCE: a sequence hands numbers out in call order,
  not commit order, so a poll could see revision 105 committed while 104 is not yet, and
  skip 104 for good. The row lock is held to commit, so revisions commit in order, and a
  read transaction sees a counter consistent with the rows it reads.

The tables start at today's columns (there are no older PostgreSQL stores to upgrade):
a column added later is one migration here and one in ``schema.py``.
``tests/test_store_postgres.py`` fails when these tables and ``rows.py`` disagree.
"""

from __future__ import annotations

import time

import psycopg

#: Ordered, named, append-only; each is applied in one transaction and recorded.
MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "0001_initial",
        [
            """CREATE TABLE conversations (
                id TEXT PRIMARY KEY,
                title TEXT NOT NULL,
                author TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                revision BIGINT NOT NULL,
                model TEXT,
                system_prompt TEXT,
                head_id TEXT
            )""",
            """CREATE TABLE messages (
                id TEXT PRIMARY KEY,
                conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                role TEXT NOT NULL,
                content TEXT NOT NULL,
                status TEXT NOT NULL,
                model TEXT,
                author TEXT,
                source TEXT,
                streaming_for TEXT,
                error TEXT,
                prompt_tokens INTEGER,
                completion_tokens INTEGER,
                cost DOUBLE PRECISION,
                attachments TEXT NOT NULL DEFAULT '[]',
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                revision BIGINT NOT NULL,
                parent_id TEXT,
                context TEXT,
                context_left_out INTEGER
            )""",
            # No index holds a column a flush changes (revision, updated_at), so a
            # flush's UPDATE of a streaming row is a HOT update, which writes no index
            # entry. A conversation's rows are found by conversation_id; since=REV
            # filters those.
            "CREATE INDEX messages_by_conversation ON messages (conversation_id, seq)",
            # The sweeper and start-up recovery look only at rows still streaming.
            "CREATE INDEX messages_streaming ON messages (id) WHERE status = 'streaming'",
            "CREATE INDEX messages_by_creation ON messages (created_at) WHERE role = 'assistant'",
        ],
    ),
    (
        "0002_message_chunks",
        [
            """CREATE TABLE message_chunks (
                message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
                n BIGINT GENERATED ALWAYS AS IDENTITY,
                text TEXT NOT NULL,
                PRIMARY KEY (message_id, n)
            )""",
        ],
    ),
    (
        "0003_store_revision",
        [
            """CREATE TABLE store_revision (
                singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
                value BIGINT NOT NULL
            )""",
            "INSERT INTO store_revision VALUES (TRUE, 0)",
        ],
    ),
    # Hub mode: who owns a conversation, the hub server it was created through, and
    # whom it is shared with (pg_access.py; DuckDB's "0006_conversation_access"). No
    # foreign key: the owner is recorded without checking the conversation exists.
    (
        "0004_conversation_access",
        [
            """CREATE TABLE conversation_owners (
                conversation_id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                server TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE conversation_shares (
                conversation_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                name TEXT NOT NULL,
                granted_by TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (conversation_id, kind, name)
            )""",
        ],
    ),
    # Which process streams each reply (its writer id, pg_connection.WRITER_PREFIX):
    # start-up recovery fails only rows whose writer has no live connection, so a second
    # service process starting does not end the first one's replies.
    (
        "0005_stream_writers",
        [
            """CREATE TABLE stream_writers (
                message_id TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
                writer TEXT NOT NULL
            )""",
        ],
    ),
    # Images sent to a model with a prompt (issue 17), as in schema.py "0008_attachments".
    # No foreign key to ``messages``: the rows are written just before the prompt's.
    (
        "0006_attachments",
        [
            """CREATE TABLE attachments (
                id TEXT PRIMARY KEY,
                message_id TEXT NOT NULL,
                conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                kind TEXT NOT NULL,
                mime TEXT NOT NULL,
                name TEXT NOT NULL,
                bytes BYTEA NOT NULL,
                size BIGINT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX attachments_message ON attachments (message_id)",
        ],
    ),
]

#: Serializes migrations between processes opening the same database at once.
_MIGRATION_LOCK = 0x7233_6E62  # "r3nb"


def migrate(con: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """Apply what the database has not recorded, in order; returns the names applied."""
    applied_now: list[str] = []
    with con.transaction():
        con.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        applied = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
        for name, statements in MIGRATIONS:
            if name in applied:
                continue
            for statement in statements:
                con.execute(statement)
            con.execute("INSERT INTO schema_migrations VALUES (%s, %s)", [name, time.time()])
            applied_now.append(name)
    return applied_now


def applied_migrations(con: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """The names of the migrations the database has recorded, in order."""
    found = con.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()
    return [str(r[0]) for r in found]
