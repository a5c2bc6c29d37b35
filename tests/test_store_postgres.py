"""What only the PostgreSQL backend promises, beyond the interface's contract (which
``test_store_contract.py`` runs on it): partial text appended as chunks, several
processes on one database, PostgreSQL restarting mid-stream, no password shown, and the
schema matching the declared columns.

Real parts only: a cluster started by this worker (``tests/pg.py``: Debian's
``postgresql``; missing, these tests fail and say ``make system-deps``), a fresh
database per test. Two ``PostgresStore`` objects on one database stand for two service
processes: each has its own connections, thread and LISTEN connection, exactly as two
processes would (the notification filter is by backend pid, not by Python object).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest

import r3nb.engine.store.pg_sql as pg_sql
import r3nb.engine.store.rows as rows
from r3nb.engine.store import Final, NewMessage, StoreInterface
from r3nb.engine.store.interface import ConversationAccess, Share
from r3nb.engine.store.pg_connection import redact
from r3nb.engine.store.pg_notify import MAX_PAYLOAD, parse, payload
from r3nb.engine.store.pg_schema import MIGRATIONS
from r3nb.engine.store.pg_store import PostgresStore
from r3nb.errors import StoreUnavailable
from r3nb.protocol import MessageDict
from tests.pg import PostgresCluster


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(pg_url)
    store.open()
    yield store
    store.close()


@pytest.fixture
def second_store(pg_url: str, pg_store: PostgresStore) -> Iterator[PostgresStore]:
    """Another "process" on the same database (opened after the first)."""
    store = PostgresStore(pg_url)
    store.open()
    yield store
    store.close()


async def _streaming_reply(store: StoreInterface) -> tuple[str, MessageDict]:
    cid = (await store.create_conversation("t", "alice"))["id"]
    _, reply = await store.add_messages(
        cid,
        [
            NewMessage("user", "q", "complete", author="alice"),
            NewMessage("assistant", "", "streaming", model="m", author="alice"),
        ],
    )
    return cid, reply


def _wal_position(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as con:
        row = con.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def _wal_since(url: str, start: str) -> int:
    with psycopg.connect(url, autocommit=True) as con:
        row = con.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)", [start]
        ).fetchone()
    assert row is not None
    return int(row[0])


def _chunk_rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as con:
        row = con.execute("SELECT count(*) FROM message_chunks").fetchone()
    assert row is not None
    return int(row[0])


# --- partial text as chunks ------------------------------------------------------------


async def test_a_thousand_flushes_append_chunks_read_back_whole_with_flat_wal_per_byte(
    pg_store: PostgresStore, pg_url: str
) -> None:
    """50 characters a flush (a reply at ~12 tokens/s, flushed every 2 s), 1,000
    flushes: 50,000 characters. Rewriting the whole text each time would make WAL per
    text byte grow with the reply; appending keeps it flat."""
    cid, reply = await _streaming_reply(pg_store)
    mid = reply["id"]
    step, flushes, window = 50, 1000, 20
    text = ""
    per_byte: dict[str, float] = {}
    for i in range(flushes):
        if i in (0, flushes - window):
            start = _wal_position(pg_url)
        text += f"{i:05d}" + "é" * (step - 5)  # not ASCII: lengths are in code points
        await pg_store.flush_partials([(mid, text)])
        if i + 1 in (window, flushes):
            label = "first 1k chars" if i + 1 == window else "last 1k chars"
            per_byte[label] = _wal_since(pg_url, start) / len(text[-window * step :].encode())
    print(f"WAL bytes per text byte, single stream, {step} chars a flush: {per_byte}")
    assert per_byte["last 1k chars"] < 1.5 * per_byte["first 1k chars"]  # flat
    assert per_byte["last 1k chars"] < 20  # a rewrite would be ~50k/50 = 1,000x here

    stored = await pg_store.get_message(mid)
    assert stored is not None
    assert (stored["content"], stored["status"]) == (text, "streaming")
    assert [m["content"] for m in await pg_store.messages_since(cid, 0)][1] == text
    found = await pg_store.snapshot(cid, reply["revision"])
    assert found is not None
    assert [m["content"] for m in found[1]] == [text]
    assert _chunk_rows(pg_url) == flushes

    # The server's shape: every stream flushed in one transaction (20 streams, 200
    # characters each a flush: 50 tokens/s every 2 s, roughly).
    streams = [(await _streaming_reply(pg_store))[1]["id"] for _ in range(20)]
    start, texts = _wal_position(pg_url), dict.fromkeys(streams, "")
    for _ in range(25):
        texts = {m: t + "y" * 200 for m, t in texts.items()}
        await pg_store.flush_partials(list(texts.items()))
    batched = _wal_since(pg_url, start) / sum(len(t) for t in texts.values())
    print(f"WAL bytes per text byte, 20 streams batched, 200 chars a flush: {batched:.2f}")
    assert batched < 4
    assert (await pg_store.get_message(streams[-1]))["content"] == "y" * 5000  # type: ignore[index]

    ended = await pg_store.finalize(mid, Final(text + " end", "complete"))
    assert ended is not None
    assert ended["content"] == text + " end"
    assert _chunk_rows(pg_url) == 20 * 25  # only the other streams' chunks are left
    assert (await pg_store.context_for(cid))[-1][1] == text + " end"


async def test_a_flush_by_a_process_that_did_not_write_the_start_appends_only_the_rest(
    pg_store: PostgresStore, second_store: PostgresStore, pg_url: str
) -> None:
    _, reply = await _streaming_reply(pg_store)
    mid = reply["id"]
    await pg_store.flush_partials([(mid, "Hello")])
    # The other process knows nothing of what was written: it measures it.
    await second_store.flush_partials([(mid, "Hello, world")])
    assert (await pg_store.get_message(mid))["content"] == "Hello, world"  # type: ignore[index]
    with psycopg.connect(pg_url, autocommit=True) as con:
        texts = [r[0] for r in con.execute("SELECT text FROM message_chunks ORDER BY n")]
    assert texts == ["Hello", ", world"]
    # Text that is not an extension (never in a normal stream) replaces what is there.
    await pg_store.flush_partials([(mid, "Hi")])
    assert (await second_store.get_message(mid))["content"] == "Hi"  # type: ignore[index]
    # The sweeper's form (a cut-off) ends another live process's row; start-up
    # recovery's (none) would not (test_a_process_starting_ends_only_the_replies_...).
    failed = await second_store.fail_streaming("stale", older_than=time.time() + 1)
    assert failed == [mid]
    assert (await pg_store.get_message(mid))["content"] == "Hi"  # type: ignore[index]
    assert _chunk_rows(pg_url) == 0


# --- several processes on one database -------------------------------------------------


async def test_two_processes_see_each_others_writes_and_revisions_never_go_back(
    pg_store: PostgresStore, second_store: PostgresStore
) -> None:
    loop = asyncio.get_running_loop()
    heard: asyncio.Queue[frozenset[str] | None] = asyncio.Queue()
    second_store.on_change.append(lambda cids: loop.call_soon_threadsafe(heard.put_nowait, cids))
    heard_first: asyncio.Queue[frozenset[str] | None] = asyncio.Queue()
    pg_store.on_change.append(lambda cids: loop.call_soon_threadsafe(heard_first.put_nowait, cids))

    cid, reply = await _streaming_reply(pg_store)
    for _ in range(2):  # its creation, then its first two messages
        assert await asyncio.wait_for(heard.get(), 10) == frozenset({cid})
    assert second_store.revision > reply["revision"]  # the notification named it
    header = await second_store.get_conversation(cid)
    assert header is not None
    assert (header["message_count"], header["head_id"]) == (2, reply["id"])
    assert [c["id"] for c in (await second_store.list_conversations(10))[0]] == [cid]

    seen = [header["revision"]]
    await pg_store.flush_partials([(reply["id"], "partial")])
    found = await second_store.snapshot(cid, header["revision"])
    assert found is not None
    assert [(m["id"], m["content"]) for m in found[1]] == [(reply["id"], "partial")]
    assert found[3] is True  # still streaming
    seen.append(found[2])

    # The other process ends it; the first sees the end, and its context.
    ended = await second_store.finalize(reply["id"], Final("partial answer", "complete"))
    assert ended is not None
    seen.append(ended["revision"])
    assert (await pg_store.get_message(reply["id"])) == ended
    assert (await pg_store.context_for(cid))[-1][1] == "partial answer"
    assert pg_store.cached_context(cid) is None  # never from a memory another may outdate
    again = await pg_store.snapshot(cid, found[2])
    assert again is not None
    assert [m["content"] for m in again[1]] == ["partial answer"]
    seen.append(again[2])

    # Interleaved writes from both: each takes a revision above every earlier one.
    for store in (pg_store, second_store, pg_store, second_store):
        renamed = await store.update_conversation(cid, f"by {id(store)}", None, None)
        assert renamed is not None
        assert renamed["revision"] > seen[-1]
        seen.append(renamed["revision"])
    assert seen == sorted(seen)
    assert await pg_store.get_conversation(cid) == await second_store.get_conversation(cid)

    # The first process heard each of the other's three writes, and only those.
    for _ in range(3):
        assert await asyncio.wait_for(heard_first.get(), 10) == frozenset({cid})
    assert heard_first.empty()
    # A deletion elsewhere drops what this process remembered of the conversation.
    (mine,) = await pg_store.add_messages(cid, [NewMessage("user", "more", "complete")])
    assert pg_store.recent.get(mine["id"]) is not None
    assert await second_store.delete_conversation(cid) is True
    assert await asyncio.wait_for(heard_first.get(), 10) == frozenset({cid})
    assert pg_store.recent.get(mine["id"]) is None
    assert await pg_store.get_conversation(cid) is None
    assert await pg_store.snapshot(cid, 0) is None


async def _blocked_or_done(task: asyncio.Future[None], url: str) -> None:
    """Until ``task`` finished or its write waits on a lock held by another session
    (PostgreSQL shows that in ``pg_stat_activity``; there is no event to await)."""
    deadline = time.monotonic() + 10
    with psycopg.connect(url, autocommit=True) as con:
        while not task.done() and time.monotonic() < deadline:
            row = con.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            ).fetchone()
            if row and row[0]:
                return
            await asyncio.sleep(0.02)  # polling PostgreSQL's view of the lock
    assert time.monotonic() < deadline


async def test_a_write_numbered_later_never_commits_before_an_earlier_one(
    pg_store: PostgresStore, second_store: PostgresStore, pg_url: str
) -> None:
    """A poll that saw revision R must never later find a write numbered at or below
    R. Another process is mid-write (it took its revision, has not committed): this
    store's flush must wait, not commit a later revision first."""
    cid, one = await _streaming_reply(pg_store)
    _, two = await pg_store.add_messages(
        cid,
        [NewMessage("user", "q2", "complete"), NewMessage("assistant", "", "streaming")],
    )
    start = pg_store.revision
    with psycopg.connect(pg_url, autocommit=True) as other, contextlib.ExitStack() as open_tx:
        write = open_tx.enter_context(pg_sql.writing(other, 1))
        pg_sql.touch_streaming(other, time.time(), [one["id"]], [write.first])
        write.changed.add(cid)
        flush = asyncio.ensure_future(pg_store.flush_partials([(two["id"], "x")]))
        await _blocked_or_done(flush, pg_url)
        during = await second_store.snapshot(cid, start)
        assert during is not None
        open_tx.close()  # the other process commits
        await flush
    after = await second_store.snapshot(cid, during[2])
    assert after is not None
    seen = {m["id"] for m in during[1] + after[1]}
    assert {one["id"], two["id"]} <= seen  # neither write was skipped by the polls


# --- PostgreSQL going away -------------------------------------------------------------


async def test_a_restart_mid_stream_fails_one_flush_and_loses_nothing_acknowledged(
    pg_cluster: PostgresCluster, pg_store: PostgresStore
) -> None:
    loop = asyncio.get_running_loop()
    heard: asyncio.Queue[frozenset[str] | None] = asyncio.Queue()
    pg_store.on_change.append(lambda cids: loop.call_soon_threadsafe(heard.put_nowait, cids))
    cid, reply = await _streaming_reply(pg_store)
    mid = reply["id"]
    await pg_store.flush_partials([(mid, "acknowledged ")])
    pg_cluster.stop()
    try:
        with pytest.raises(StoreUnavailable) as failed:
            await pg_store.flush_partials([(mid, "acknowledged lost? ")])
        reason = str(failed.value)
        assert "PostgreSQL" in reason
        assert "running and reachable" in reason  # what a person can do
        assert pg_store.error == reason
        with pytest.raises(StoreUnavailable):
            await pg_store.get_message(mid)
        assert await pg_store.try_reopen() is False  # still down
    finally:
        pg_cluster.start_again()
    # The next flush reconnects by itself (the sweeper's try_reopen would too).
    await pg_store.flush_partials([(mid, "acknowledged lost? and after")])
    assert pg_store.error is None
    stored = await pg_store.get_message(mid)
    assert stored is not None
    assert (stored["content"], stored["status"]) == ("acknowledged lost? and after", "streaming")
    ended = await pg_store.finalize(mid, Final("acknowledged lost? and after, done", "complete"))
    assert ended is not None
    assert ended["content"] == "acknowledged lost? and after, done"
    # The listener reconnected too, and said that it may have missed anything.
    assert await asyncio.wait_for(heard.get(), 15) is None
    assert (await pg_store.snapshot(cid, 0)) is not None


async def test_after_a_restart_the_next_call_reconnects_and_try_reopen_reports_recovery(
    pg_cluster: PostgresCluster, pg_store: PostgresStore
) -> None:
    cid = (await pg_store.create_conversation("t", None))["id"]
    pg_cluster.restart()  # nobody called meanwhile: the connection is dead, unnoticed
    assert (await pg_store.get_conversation(cid)) is not None
    pg_cluster.stop()
    try:
        with pytest.raises(StoreUnavailable):
            await pg_store.get_conversation(cid)
        assert await pg_store.try_reopen() is False
        assert pg_store.error is not None
    finally:
        pg_cluster.start_again()
    assert await pg_store.try_reopen() is True
    assert pg_store.error is None
    assert (await pg_store.get_conversation(cid)) is not None


# --- what is shown ---------------------------------------------------------------------


async def test_the_password_is_never_shown(pg_cluster: PostgresCluster, pg_url: str) -> None:
    with_password = pg_url.replace("postgres@", "postgres:s3cret-pw@") + "?application_name=x"
    store = PostgresStore(with_password)
    try:
        store.open()  # trust auth: the password is accepted, and must not leak
        assert "s3cret" not in store.path
        assert store.path.startswith("postgresql://postgres@127.0.0.1:")
    finally:
        store.close()
    unreachable = PostgresStore(
        "postgresql://r3nb:s3cret-pw@127.0.0.1:1/r3nb?password=other-s3cret&sslmode=disable"
    )
    try:
        with pytest.raises(StoreUnavailable) as failed:
            unreachable.open()
        for shown in (unreachable.path, str(failed.value), unreachable.error or ""):
            assert "s3cret" not in shown
        assert "127.0.0.1:1" in str(failed.value)
        assert "running and reachable" in str(failed.value)
    finally:
        unreachable.close()


@pytest.mark.fast
def test_urls_are_shown_without_their_password() -> None:
    assert redact("postgresql://r3nb:pw@db.example:5432/r3nb?sslmode=require") == (
        "postgresql://r3nb@db.example:5432/r3nb?sslmode=require"
    )
    assert redact("postgres://r3nb@h/d?password=pw&application_name=a") == (
        "postgres://r3nb@h/d?application_name=a"
    )
    assert redact("postgresql://u:p%40ss@h/d") == "postgresql://u@h/d"  # an @ in it
    assert redact("postgresql:///r3nb") == "postgresql:///r3nb"


@pytest.mark.fast
def test_a_notification_too_large_for_postgres_becomes_a_re_read_hint() -> None:
    cids = [f"{i:016x}" for i in range(1000)]
    assert parse(payload(7, cids[:3])) == (7, frozenset(cids[:3]))
    assert len(payload(7, cids[:400]).encode()) <= MAX_PAYLOAD
    assert parse(payload(7, cids[:400])) == (7, frozenset(cids[:400]))
    too_many = payload(8, cids)
    assert len(too_many.encode()) <= MAX_PAYLOAD
    assert parse(too_many) == (8, None)
    assert parse("wake") is None


def test_a_single_user_server_never_loads_the_postgresql_driver() -> None:
    """Only a ``postgresql://`` store imports psycopg (``factory.make_store``)."""
    probe = (
        "import sys, r3nb.engine.core, r3nb.server.app; from r3nb.engine.store import make_store;"
        " make_store(':memory:'); print('psycopg' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"


# --- schema and access -----------------------------------------------------------------


async def test_the_tables_match_the_declared_columns_and_migrate_once(
    pg_store: PostgresStore, pg_url: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as con:

        def columns(table: str) -> list[str]:
            return [
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = %s ORDER BY ordinal_position",
                    [table],
                )
            ]

        assert columns("messages") == list(rows.MESSAGE_FIELDS)
        assert sorted(columns("conversations")) == sorted(rows.CONVERSATION_COLUMNS)
        stored = [c.strip() for c in rows.ATTACHMENT_COLUMNS.split(",")]
        assert columns("attachments") == [*stored[:-1], "size", stored[-1]]
    names = [name for name, _ in MIGRATIONS]
    assert pg_store.applied_migrations() == names
    again = PostgresStore(pg_url)  # another process opening the migrated database
    again.open()
    try:
        assert again.applied_migrations() == names
    finally:
        again.close()


async def test_access_rows_are_shared_by_every_process(
    pg_store: PostgresStore, second_store: PostgresStore
) -> None:
    cid = (await pg_store.create_conversation("t", "alice"))["id"]
    await pg_store.set_owner(cid, "alice", "alice/")
    assert await second_store.add_share(cid, Share("user", "bob"), "alice") is True
    assert await second_store.add_share(cid, Share("user", "bob"), "alice") is False
    assert await pg_store.add_share(cid, Share("group", "class"), "alice") is True
    expected = ConversationAccess(
        "alice", "alice/", (Share("group", "class"), Share("user", "bob"))
    )
    assert await pg_store.access_of([cid, "no-such-id"]) == {cid: expected}
    assert await second_store.remove_share(cid, Share("user", "bob")) is True
    assert await pg_store.remove_share(cid, Share("user", "bob")) is False
    await pg_store.set_owner(cid, "alice", "alice/lab")
    assert (await second_store.access_of([cid]))[cid].server == "alice/lab"
    await second_store.forget_access(cid)
    assert await pg_store.access_of([cid]) == {}
    assert await pg_store.access_of([]) == {}


async def test_a_process_starting_ends_only_the_replies_no_live_process_streams(
    pg_url: str, pg_store: PostgresStore
) -> None:
    """Start-up recovery on a shared database: a second process starting (its recovery
    runs before its first request) must not end the first one's live reply; a reply
    whose process is gone is ended, its flushed text kept."""
    cid, live = await _streaming_reply(pg_store)
    await pg_store.flush_partials([(live["id"], "partial text")])
    starting = PostgresStore(pg_url)
    starting.open()
    try:
        assert starting.fail_streaming_blocking("interrupted: restarted") == []
        still = await starting.get_message(live["id"])
        assert still is not None
        assert still["status"] == "streaming"
        pg_store.close()  # the first process goes away (its connection with it)
        after_crash = PostgresStore(pg_url)
        after_crash.open()
        try:
            assert after_crash.fail_streaming_blocking("interrupted: restarted") == [live["id"]]
            ended = await after_crash.get_message(live["id"])
            assert ended is not None
            assert (ended["status"], ended["content"]) == ("error", "partial text")
        finally:
            after_crash.close()
    finally:
        starting.close()
    assert cid
