"""The DuckDB backend's two answers to issue 16: partial text is appended, never
rewritten (bytes written grow with a reply, not with its square, and a crash keeps
what was flushed), and sends that arrive together share one transaction.

Bytes are counted where they leave the process: ``wchar`` of ``/proc/self/io`` (every
byte handed to ``write``; the store's DB thread is this process's only writer while a
reply is stored), a deterministic count, unlike page-granular ``write_bytes``. The
server-level ``write_bytes`` figures are ``bench/round2.py``'s.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from r3nb.engine.store import Final, NewMessage, Store
from tests.provider import FakeProvider, generated_text
from tests.servers import JupyterServer


def _written() -> int:
    """Bytes this process has passed to ``write`` so far."""
    for line in Path("/proc/self/io").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "wchar":
            return int(value)
    raise AssertionError("no wchar in /proc/self/io")


def _exchange() -> list[NewMessage]:
    return [NewMessage("user", "a question", "complete"), NewMessage("assistant", "", "streaming")]


async def _reply(store: Any, cid: str) -> str:
    """A prompt and its streaming reply in ``cid``; the reply's id."""
    created = await store.begin_exchange(cid, _exchange(), "a question")
    assert created is not None
    return str(created[1]["id"])


async def _bytes_per_text_byte(store: Any, tokens: int, flushes: int) -> float:
    """Store one reply of ``tokens`` generated tokens as a stream would: ``flushes``
    partial texts, each the whole text so far, then the end; bytes written per byte."""
    cid = (await store.create_conversation("long reply", "me"))["id"]
    text = generated_text(tokens)
    before = _written()
    mid = await _reply(store, cid)
    for i in range(1, flushes + 1):
        await store.flush_partials([(mid, text[: len(text) * i // flushes])])
    ended = await store.finalize(mid, Final(text, "complete"))
    written = _written() - before
    assert ended is not None
    assert ended["content"] == text
    return written / len(text.encode())


@pytest.mark.fast
def test_bytes_written_per_reply_byte_stay_bounded_and_flat_with_length(tmp_path: Path) -> None:
    """A reply of 10k and of 100k tokens flushed every 0.25 s of a 100 tok/s... stream
    (40 and 120 flushes): rewriting the whole text each flush wrote 20 and 62 bytes per
    reply byte; appending writes ~2 (the chunks once, the final content once)."""

    async def scenario() -> dict[int, float]:
        store = Store(tmp_path / "append.duckdb")
        store.open()
        try:
            return {
                tokens: await _bytes_per_text_byte(store, tokens, flushes)
                for tokens, flushes in ((10_000, 40), (100_000, 120))
            }
        finally:
            store.close()

    ratios = asyncio.run(scenario())
    assert ratios[100_000] <= 8, ratios
    assert ratios[100_000] <= 1.5 * ratios[10_000], ratios  # flat, not growing with length


@pytest.mark.fast
def test_a_streaming_message_reads_whole_and_ends_as_one_content_column(tmp_path: Path) -> None:
    """Every read shows the text so far (content + chunks, from the file too); the end
    leaves one ``content`` a person can query, and no chunks."""
    path = tmp_path / "read.duckdb"

    async def scenario() -> tuple[str, str]:
        store = Store(path)
        store.open()
        try:
            cid = (await store.create_conversation("reads", "me"))["id"]
            mid = await _reply(store, cid)
            for text in ("Hel", "Hello, w", "Hello, world"):
                await store.flush_partials([(mid, text)])
            read = await store.get_message(mid)
            since = await store.messages_since(cid, 0)
            found, _ = await store.list_conversations(10, query="o, wor")
            assert read is not None
            assert (read["content"], since[-1]["content"]) == ("Hello, world", "Hello, world")
            assert [c["id"] for c in found] == [cid]
            await store.finalize(mid, Final("Hello, world!", "complete"))
            return mid, cid
        finally:
            store.close()

    mid, _ = asyncio.run(scenario())
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT content FROM messages WHERE id = ?", [mid]).fetchall() == [
            ("Hello, world!",)
        ]
        assert con.execute("SELECT count(*) FROM message_chunks").fetchall() == [(0,)]


@pytest.mark.fast
def test_a_file_of_the_previous_schema_with_a_streaming_row_opens_and_appends(
    tmp_path: Path,
) -> None:
    """A file written before chunks existed (its streaming row's whole partial text in
    ``content``) is migrated on open; a flush then appends after that text."""
    path = tmp_path / "old.duckdb"

    async def write_old() -> str:
        store = Store(path)
        store.open()
        try:
            cid = (await store.create_conversation("old", "me"))["id"]
            mid = await _reply(store, cid)
            await store.flush_partials([(mid, "written by the old schema")])
            return mid
        finally:
            store.close()

    mid = asyncio.run(write_old())
    with duckdb.connect(str(path)) as con:  # back to the previous schema: no chunks
        con.execute("UPDATE messages SET content = 'written by the old schema' WHERE id = ?", [mid])
        con.execute("DROP TABLE message_chunks")
        con.execute("DELETE FROM schema_migrations WHERE name = '0007_message_chunks'")

    async def continue_new() -> tuple[str, list[str]]:
        store = Store(path)
        store.open()
        try:
            await store.flush_partials([(mid, "written by the old schema, and more")])
            ended = await store.finalize(
                mid, Final("written by the old schema, and more.", "complete")
            )
            assert ended is not None
            return ended["content"], store.applied_migrations()
        finally:
            store.close()

    content, migrations = asyncio.run(continue_new())
    assert content == "written by the old schema, and more."
    assert "0007_message_chunks" in migrations


@pytest.mark.fast
def test_sends_arriving_together_share_transactions_each_durable_one_bad_isolated(
    tmp_path: Path,
) -> None:
    """20 ``begin_exchange`` at once (one into a deleted conversation, two into the same
    conversation): fewer transactions than sends, each answered with its own rows, the
    deleted one None without failing the others, all there after a reopen."""
    path = tmp_path / "burst.duckdb"

    async def scenario() -> tuple[list[Any], int, str, str]:
        store = Store(path)
        store.open()
        try:
            cids = [(await store.create_conversation(f"c{i}", "me"))["id"] for i in range(18)]
            gone = (await store.create_conversation("deleted", "me"))["id"]
            await store.delete_conversation(gone)
            before = store.admission_commits
            targets = [*cids, gone, cids[0]]  # cids[0] twice: the second follows the first
            answers = await asyncio.gather(
                *(
                    store.begin_exchange(cid, _exchange(), f"prompt {i}")
                    for i, cid in enumerate(targets)
                )
            )
            return answers, store.admission_commits - before, cids[0], gone
        finally:
            store.close()

    answers, commits, twice, gone = asyncio.run(scenario())
    assert commits < 10, commits
    assert answers[18] is None  # the deleted conversation's
    stored = [a for a in answers if a is not None]
    assert len(stored) == 19
    first, second = answers[0], answers[19]
    assert second[0]["parent_id"] == first[1]["id"]  # one after the other, not siblings

    async def reopened() -> tuple[list[str], dict[str, Any]]:
        store = Store(path)
        store.open()
        try:
            ids = []
            for created in stored:
                for message in created:
                    found = await store.get_message(message["id"])
                    assert found is not None
                    ids.append(found["id"])
            header = await store.get_conversation(twice)
            assert header is not None
            assert await store.get_conversation(gone) is None
            return ids, dict(header)
        finally:
            store.close()

    ids, header = asyncio.run(reopened())
    assert len(ids) == 38
    assert (header["message_count"], header["head_id"]) == (4, second[1]["id"])


@pytest.mark.fast
def test_a_burst_arriving_over_a_busy_loop_is_still_one_transaction_after_the_first(
    tmp_path: Path,
) -> None:
    """Fifty sends released together reach a busy server's store over ~50 ms, mostly
    ~1 ms apart but with gaps of 3-6 ms while the loop does other work (traced). A
    pause of 3 ms and a cap of 15 ms cut such a burst into three or four transactions,
    each commit 15-40 ms on a loaded machine, one after the other: the last sends'
    first token waited for all of them. Here 12 sends 4 ms apart: the first is
    committed alone (a lone send never waits), the rest together."""

    async def scenario() -> int:
        store = Store(tmp_path / "paced.duckdb")
        store.open()
        try:
            cids = [(await store.create_conversation(f"c{i}", "me"))["id"] for i in range(12)]
            before = store.admission_commits
            sends = []
            for cid in cids:  # the pacing of the arrivals, not a wait for anything
                sends.append(asyncio.ensure_future(store.begin_exchange(cid, _exchange(), "q")))
                await asyncio.sleep(0.004)
            answers = await asyncio.gather(*sends)
            assert all(a is not None for a in answers)
            return store.admission_commits - before
        finally:
            store.close()

    commits = asyncio.run(scenario())
    assert commits <= 3, f"{commits} transactions for 12 sends 4 ms apart"


class _CountingLoop(asyncio.SelectorEventLoop):
    """A real event loop that counts how often another thread woke it."""

    def __init__(self) -> None:
        super().__init__()
        self.woken = 0

    def call_soon_threadsafe(self, *args: Any, **kwargs: Any) -> Any:
        self.woken += 1
        return super().call_soon_threadsafe(*args, **kwargs)


@pytest.mark.fast
def test_a_burst_is_answered_in_one_wake_of_the_loop_per_transaction(tmp_path: Path) -> None:
    """30 sends at once, one of whose callers gives up while it waits: the DB thread
    wakes the server's loop once per transaction, not once per send (each wake is a
    write to the loop's self-pipe and a callback, while the burst waits on the loop).
    The others are answered; the one that gave up still has its rows, as a send whose
    client went away does."""

    async def scenario() -> tuple[int, int, list[Any], Any]:
        store = Store(tmp_path / "wakes.duckdb")
        store.open()
        try:
            cids = [(await store.create_conversation(f"c{i}", "me"))["id"] for i in range(30)]
            loop = asyncio.get_running_loop()
            assert isinstance(loop, _CountingLoop)
            commits, woken = store.admission_commits, loop.woken
            sends = [
                asyncio.ensure_future(store.begin_exchange(cid, _exchange(), "q")) for cid in cids
            ]
            await asyncio.sleep(0)  # every send is queued
            sends[7].cancel()
            answers = await asyncio.gather(*sends, return_exceptions=True)
            wakes, commits = loop.woken - woken, store.admission_commits - commits
            kept = await store.messages_since(cids[7], 0)
            return wakes, commits, answers, kept
        finally:
            store.close()

    with asyncio.Runner(loop_factory=_CountingLoop) as runner:
        wakes, commits, answers, kept = runner.run(scenario())
    assert 1 <= commits < 30, commits
    assert wakes <= commits, (wakes, commits)
    assert isinstance(answers[7], asyncio.CancelledError)
    assert all(isinstance(a, list) and len(a) == 2 for i, a in enumerate(answers) if i != 7)
    assert [m["role"] for m in kept] == ["user", "assistant"]


@pytest.mark.fast
def test_an_admission_the_database_refuses_fails_alone(tmp_path: Path) -> None:
    """Sends committed together, one with text DuckDB cannot store (a lone surrogate,
    which a JSON body can carry): that one fails, the others are stored."""

    async def scenario() -> list[Any]:
        store = Store(tmp_path / "refused.duckdb")
        store.open()
        try:
            cids = [(await store.create_conversation(f"c{i}", "me"))["id"] for i in range(6)]
            prompts = ["fine", "fine", "bad \ud800", "fine", "fine", "fine"]
            answers = await asyncio.gather(
                *(
                    store.begin_exchange(
                        cid,
                        [
                            NewMessage("user", p, "complete"),
                            NewMessage("assistant", "", "streaming"),
                        ],
                        p,
                    )
                    for cid, p in zip(cids, prompts, strict=True)
                ),
                return_exceptions=True,
            )
            for cid, answer in zip(cids, answers, strict=True):
                stored = await store.messages_since(cid, 0)
                assert len(stored) == (0 if isinstance(answer, BaseException) else 2)
            return answers
        finally:
            store.close()

    answers = asyncio.run(scenario())
    assert isinstance(answers[2], duckdb.Error)
    assert all(isinstance(a, list) and len(a) == 2 for i, a in enumerate(answers) if i != 2)


@pytest.mark.fast
def test_replies_ending_together_share_a_transaction_each_whole_one_bad_isolated(
    tmp_path: Path,
) -> None:
    """Twelve replies end at once (a burst's replies do): fewer transactions than ends,
    each row whole (flushed chunks folded into ``content``), one with text DuckDB cannot
    store fails alone, one ended twice keeps its first end; all there after a reopen."""
    path = tmp_path / "ends.duckdb"

    async def scenario() -> tuple[list[Any], int, list[str]]:
        store = Store(path)
        store.open()
        try:
            mids = []
            for i in range(12):
                cid = (await store.create_conversation(f"c{i}", "me"))["id"]
                created = await store.begin_exchange(cid, _exchange(), "q")
                assert created is not None
                mids.append(created[1]["id"])
            await store.flush_partials([(mid, f"part {i} ") for i, mid in enumerate(mids)])
            await store.finalize(mids[0], Final("first end", "complete"))
            texts = [f"part {i} and the rest" for i in range(12)]
            texts[9] = "bad \ud800"

            async def end_together(indices: range) -> list[Any]:
                return await asyncio.gather(
                    *(store.finalize(mids[i], Final(texts[i], "complete", None, 3, 4, 0.5))
                      for i in indices),
                    return_exceptions=True,
                )  # fmt: skip

            before = store._admissions.end_commits
            answers = await end_together(range(8))  # all fine: shared transactions
            commits = store._admissions.end_commits - before
            answers += await end_together(range(8, 12))  # one refused: each alone
            return answers, commits, mids
        finally:
            store.close()

    answers, commits, mids = asyncio.run(scenario())
    assert isinstance(answers[9], duckdb.Error)
    assert answers[0] is not None
    assert answers[0]["content"] == "first end"  # ended before
    for i in (1, 2, 3, 4, 5, 6, 7, 8, 10, 11):
        assert answers[i]["content"] == f"part {i} and the rest"
        assert (answers[i]["status"], answers[i]["completion_tokens"]) == ("complete", 4)
    assert commits <= 3, commits  # the first alone, then the others together

    async def reopened() -> list[Any]:
        store = Store(path)
        store.open()
        try:
            return [await store.get_message(mid) for mid in mids]
        finally:
            store.close()

    found = asyncio.run(reopened())
    assert found[0]["content"] == "first end"
    assert (found[9]["status"], found[9]["content"]) == ("streaming", "part 9 ")
    assert [m["content"] for i, m in enumerate(found) if i not in (0, 9)] == [
        f"part {i} and the rest" for i in range(12) if i not in (0, 9)
    ]


@pytest.mark.fast
def test_a_send_given_up_while_queued_does_not_stall_the_others(tmp_path: Path) -> None:
    """A caller cancelled while its admission waits in the queue (a client gone): the
    admissions committed with it are still answered."""

    async def scenario() -> list[Any]:
        store = Store(tmp_path / "cancelled.duckdb")
        store.open()
        try:
            cids = [(await store.create_conversation(f"c{i}", "me"))["id"] for i in range(10)]
            sends = [
                asyncio.create_task(store.begin_exchange(cid, _exchange(), "q")) for cid in cids
            ]
            await asyncio.sleep(0)  # every send queued
            sends[5].cancel()
            others = [t for i, t in enumerate(sends) if i != 5]
            return await asyncio.wait_for(asyncio.gather(*others), timeout=20)
        finally:
            store.close()

    answers = asyncio.run(scenario())
    assert all(a is not None and len(a) == 2 for a in answers)


def _stored(db: Path, mid: str) -> tuple[str, list[tuple[int, str]]]:
    """What the file holds for ``mid``: its ``content`` and its chunks (offset, text)."""
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("SELECT content FROM messages WHERE id = ?", [mid]).fetchone()
        chunks = con.execute(
            "SELECT start_offset, text FROM message_chunks WHERE message_id = ?"
            " ORDER BY start_offset",
            [mid],
        ).fetchall()
    assert row is not None
    return row[0], [(int(o), t) for o, t in chunks]


def test_kill_9_mid_reply_keeps_the_flushed_chunks_and_restart_folds_them(
    tmp_path: Path, provider: FakeProvider
) -> None:
    """A real server killed with SIGKILL while a reply streams: the file holds the text
    flushed so far as chunks after the (empty) content; the next start folds them into
    the reply's one ``content`` and drops them."""
    db = tmp_path / "crash.duckdb"
    config = {
        "db_path": str(db),
        "snapshot_interval": 0.1,
        "models": {"fake": {"model": "openai/fake", "api_base": provider.url, "api_key": "x"}},
        "default_model": "fake",
    }
    server = JupyterServer(tmp_path / "s1", config).start()
    response: httpx.Response | None = None
    try:
        client = httpx.Client(base_url=server.api, headers=server.headers, timeout=30)
        cid = client.post("conversations", json={"title": "crash"}).json()["conversation"]["id"]
        request = client.build_request(
            "POST", f"conversations/{cid}/messages", json={"content": "!tokens=300 !delay=0.01"}
        )
        response = client.send(request, stream=True)
        seen: set[str] = set()  # distinct partial texts: each one is a committed flush
        flushed = ""
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            messages = client.get(f"conversations/{cid}").json()["messages"]
            flushed = messages[-1]["content"] if len(messages) == 2 else ""
            seen |= {flushed} - {""}
            time.sleep(0.02)  # polling what the DB holds: flushes announce nothing
        assert len(seen) == 3, "the reply ended before three flushes were seen"
        mid = messages[-1]["id"]
        server.kill()
    finally:
        if response is not None:
            response.close()
        server.kill()
    content, chunks = _stored(db, mid)
    assert content == ""
    assert len(chunks) >= 2, chunks  # appended flush by flush, never rewritten
    assert "".join(t for _, t in chunks).startswith(flushed)
    assert [o for o, _ in chunks] == [
        sum(len(t) for _, t in chunks[:i]) for i in range(len(chunks))
    ]

    restarted = JupyterServer(tmp_path / "s2", config).start()
    try:
        with httpx.Client(base_url=restarted.api, headers=restarted.headers) as client:
            after = client.get(f"conversations/{cid}").json()["messages"][-1]
    finally:
        restarted.stop()
    assert after["status"] == "error"
    assert after["content"] == "".join(t for _, t in chunks)
    assert _stored(db, mid) == (after["content"], [])
