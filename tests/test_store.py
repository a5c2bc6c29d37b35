"""What the DuckDB backend promises beyond the store interface: its in-memory mirror
answers polls exactly as the file would, its tables are the declared columns, and what
it wrote is there after a reopen. (The interface's own contract, on every backend, is
``test_store_contract.py``.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from r3nb.engine.store import MIGRATIONS, Final, NewMessage, Store, rows

ops = st.lists(
    st.tuples(st.sampled_from(["add", "flush", "finalize", "poll"]), st.integers(0, 3)),
    min_size=5,
    max_size=40,
)


@settings(max_examples=25, deadline=None)
@given(ops=ops, capacity=st.integers(2, 12))
def test_memory_snapshots_equal_database_snapshots(tmp_path_factory, ops, capacity) -> None:  # type: ignore[no-untyped-def]
    path: Path = tmp_path_factory.mktemp("store") / "m.duckdb"

    async def scenario() -> None:
        store = Store(path)
        store.open()
        store.recent.max_messages = capacity  # evict often: the watermark must hold
        try:
            cids = [(await store.create_conversation(f"c{i}", "me"))["id"] for i in range(2)]
            streaming: list[str] = []
            seen_revisions = [0]
            for op, n in ops:
                cid = cids[n % 2]
                if op == "add":
                    _, reply = await store.add_messages(
                        cid,
                        [
                            NewMessage("user", f"q{n}", "complete"),
                            NewMessage("assistant", "", "streaming"),
                        ],
                    )
                    streaming.append(reply["id"])
                elif op == "flush" and streaming:
                    await store.flush_partials([(m, f"partial {n}") for m in streaming])
                elif op == "finalize" and streaming:
                    await store.finalize(streaming.pop(0), Final(f"done {n}", "complete"))
                since = seen_revisions[n % len(seen_revisions)]
                for c in cids:
                    memory = await store.snapshot(c, since)
                    db = await store._thread.run(store._ops.snapshot, c, since)
                    assert memory is not None
                    assert db is not None
                    # Same rows in the same state (the revision each answer is
                    # consistent with may differ: memory knows only its own writes).
                    assert memory[1] == db[1]
                    assert memory[3] == db[3]
                    seen_revisions.append(memory[2])
        finally:
            store.close()

    asyncio.run(scenario())


def test_first_poll_of_an_old_file_goes_to_the_database(tmp_path: Path) -> None:
    async def write() -> str:
        store = Store(tmp_path / "old.duckdb")
        store.open()
        cid = (await store.create_conversation("old", "me"))["id"]
        await store.add_messages(cid, [NewMessage("user", "from before", "complete")])
        store.close()
        return cid

    async def read(cid: str) -> None:
        store = Store(tmp_path / "old.duckdb")
        store.open()
        try:
            found = await store.snapshot(cid, 0)
            assert found is not None
            assert [m["content"] for m in found[1]] == ["from before"]
            assert (await store.get_conversation(cid))["message_count"] == 1  # type: ignore[index]
            assert store.cached_context(cid) is None  # not all in memory: ask the DB
        finally:
            store.close()

    cid = asyncio.run(write())
    asyncio.run(read(cid))


def test_migrated_tables_have_exactly_the_declared_columns(tmp_path: Path) -> None:
    """The column lists are derived from the wire shapes (``rows.py``): a field added
    there without its migration, or a migration without its field, fails here."""
    path = tmp_path / "schema.duckdb"
    store = Store(path)
    store.open()
    assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
    store.close()
    con = duckdb.connect(str(path))
    try:
        columns = {
            table: [
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = ? ORDER BY ordinal_position",
                    [table],
                ).fetchall()
            ]
            for table in ("messages", "conversations")
        }
    finally:
        con.close()
    assert columns["messages"] == list(rows.MESSAGE_FIELDS)
    assert columns["conversations"] == list(rows.CONVERSATION_COLUMNS)
    assert "siblings" not in rows.MESSAGE_FIELDS
    assert set(rows.NEW_MESSAGE_FIELDS) | set(rows.FINAL_FIELDS) <= set(rows.MESSAGE_FIELDS)


def test_what_an_exchange_wrote_is_there_after_a_reopen(tmp_path: Path) -> None:
    """The header of an exchange is written just after its rows (off the time to first
    token); a later call queued behind it finds it durable."""
    path = tmp_path / "reopen.duckdb"

    async def write() -> tuple[str, list[str]]:
        store = Store(path)
        store.open()
        try:
            cid = (await store.create_conversation("New conversation", "me"))["id"]
            exchange = [
                NewMessage("user", "persist me", "complete"),
                NewMessage("assistant", "", "streaming"),
            ]
            created = await store.begin_exchange(cid, exchange, "persist me")
            assert created is not None
            await store.finalize(created[1]["id"], Final("done", "complete", None, 1, 2, 0.5))
            return cid, [m["id"] for m in created]
        finally:
            store.close()

    async def read(cid: str, ids: list[str]) -> None:
        store = Store(path)
        store.open()
        try:
            header = await store.get_conversation(cid)
            assert header is not None
            assert (header["title"], header["head_id"], header["message_count"]) == (
                "persist me", ids[1], 2,
            )  # fmt: skip
            reply = await store.get_message(ids[1])
            assert reply is not None
            assert (reply["content"], reply["status"], reply["cost"]) == ("done", "complete", 0.5)
            assert store.revision == max(header["revision"], reply["revision"])
        finally:
            store.close()

    cid, ids = asyncio.run(write())
    asyncio.run(read(cid, ids))
