"""The store's in-memory mirror answers polls exactly as the database would."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from r3nb.engine.store import Final, NewMessage, Store

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
                    db = await store._run(store._snapshot, c, since)
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
