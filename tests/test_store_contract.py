"""The store interface's contract (``r3nb/engine/store/interface.py``), on every backend.

Each test takes ``store``: an opened, empty store of one backend, and speaks to it only
through the interface's public methods, so what passes here is what the engine may rely
on whichever backend it runs on. DuckDB runs file-backed (in ``tmp_path``) and in
memory, PostgreSQL on a fresh database of a real cluster (``tests/pg.py``).

**Adding a backend is one line in ``BACKENDS``**: a name and how to build an unopened
store for a test from its ``request`` and ``tmp_path``. Every test here then runs on it.

What the DuckDB backend adds beyond the interface (the in-memory mirror answering as the
file would, the file's schema, reopening an old file) is tested in ``test_store.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from r3nb.engine.store import (
    DEFAULT_TITLE,
    HEAD,
    DuckDBStore,
    Final,
    NewMessage,
    Parent,
    StoredAttachment,
    StoreInterface,
    new_id,
)
from r3nb.engine.store.pg_store import PostgresStore
from r3nb.errors import BadRequest, StoreUnavailable
from r3nb.protocol import MessageDict

#: name -> an unopened store of that backend, built from the test's ``request`` (for
#: fixtures only that backend needs: a PostgreSQL cluster is started only when a
#: PostgreSQL test runs) and ``tmp_path`` (where its data lives).
BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], StoreInterface]] = {
    "duckdb": lambda _, tmp_path: DuckDBStore(tmp_path / "r3nb.duckdb"),
    "duckdb-memory": lambda _, tmp_path: DuckDBStore(":memory:"),
    # A fresh database of this worker's cluster (tests/pg.py), dropped after the test.
    "postgres": lambda request, _: PostgresStore(request.getfixturevalue("pg_url")),
}


@pytest.fixture(params=sorted(BACKENDS))
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreInterface]:
    """A store of one backend, not opened yet (closed after the test)."""
    unopened = BACKENDS[request.param](request, tmp_path)
    yield unopened
    unopened.close()


@pytest.fixture
def store(new_store: StoreInterface) -> StoreInterface:
    new_store.open()
    return new_store


def _user(text: str = "a question", **fields: object) -> NewMessage:
    return NewMessage("user", text, "complete", **fields)  # type: ignore[arg-type]


def _reply(text: str = "", status: str = "streaming", **fields: object) -> NewMessage:
    fields = {"model": "m", "author": "alice"} | fields
    return NewMessage("assistant", text, status, **fields)  # type: ignore[arg-type]


async def _turn(
    store: StoreInterface, cid: str, prompt: str = "q", parent: Parent = HEAD
) -> tuple[MessageDict, MessageDict]:
    """A prompt and its streaming reply, after ``parent``."""
    user, reply = await store.add_messages(cid, [_user(prompt), _reply()], parent=parent)
    return user, reply


async def _cid(store: StoreInterface, title: str = DEFAULT_TITLE) -> str:
    return (await store.create_conversation(title, "alice"))["id"]


# --- lifecycle -------------------------------------------------------------------------


async def test_a_store_not_opened_says_it_is_unavailable(new_store: StoreInterface) -> None:
    for call in (
        new_store.create_conversation("t", "me"),
        new_store.get_conversation("c"),
        new_store.list_conversations(10),
        new_store.snapshot("c", 0),
        new_store.get_message("m"),
        new_store.stats(),
    ):
        with pytest.raises(StoreUnavailable):
            await call


async def test_an_opened_store_starts_empty_and_usable(store: StoreInterface) -> None:
    assert store.error is None
    assert store.revision == 0
    assert await store.stats() == {"conversations": 0, "messages": 0, "streaming_rows": 0}
    assert await store.list_conversations(10) == ([], None)


# --- conversations ---------------------------------------------------------------------


async def test_a_new_conversation_is_empty_and_can_be_read_back(store: StoreInterface) -> None:
    before = store.revision
    created = await store.create_conversation("Plans", "alice")
    assert {k: v for k, v in created.items() if k not in ("id", "created_at", "updated_at")} == {
        "title": "Plans",
        "author": "alice",
        "revision": before + 1,
        "message_count": 0,
        "model": None,
        "system_prompt": None,
        "head_id": None,
    }
    assert created["created_at"] == created["updated_at"] == pytest.approx(time.time(), abs=60)
    assert len(created["id"]) == 16
    assert store.revision == created["revision"]
    assert await store.get_conversation(created["id"]) == created
    assert await store.get_conversation("no-such-id") is None


async def test_list_pages_most_recently_active_first(store: StoreInterface) -> None:
    cids = [await _cid(store, f"c{i}") for i in range(5)]
    await store.add_messages(cids[1], [_user()])  # activity: c1 moves to the top
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(3):
        page, cursor = await store.list_conversations(2, cursor)
        seen += [c["id"] for c in page]
        if cursor is None:
            break
    assert cursor is None
    assert len(seen) == 5
    assert seen[0] == cids[1]
    assert sorted(seen) == sorted(cids)
    headers = [await store.get_conversation(c) for c in seen]
    keys = [(-h["updated_at"], h["id"]) for h in headers if h is not None]
    assert keys == sorted(keys)
    with pytest.raises(BadRequest):
        await store.list_conversations(2, "not-a-cursor")


async def test_list_query_matches_titles_and_message_text_literally(
    store: StoreInterface,
) -> None:
    titled = await _cid(store, "Alpha plans")
    mentioned = await _cid(store, "beta")
    await store.add_messages(mentioned, [_user("the ALPHA test")])
    percent = await _cid(store, "gamma")
    await store.add_messages(percent, [_user("100% sure")])
    await store.add_messages(await _cid(store, "delta"), [_user("1000 sure")])

    async def found(q: str) -> set[str]:
        return {c["id"] for c in (await store.list_conversations(50, query=q))[0]}

    assert await found("alpha") == {titled, mentioned}
    assert await found("0%") == {percent}
    assert await found("_") == set()
    assert await found("nowhere") == set()


async def test_update_changes_what_is_given_with_a_new_revision(store: StoreInterface) -> None:
    cid = await _cid(store, "old")
    before = await store.get_conversation(cid)
    assert before is not None
    renamed = await store.update_conversation(cid, "new", None, None)
    assert renamed is not None
    assert (renamed["title"], renamed["model"], renamed["system_prompt"]) == ("new", None, None)
    assert renamed["revision"] > before["revision"]
    assert renamed["updated_at"] == before["updated_at"]  # a rename is not activity
    both = await store.update_conversation(cid, None, "gpt", "be brief")
    assert both is not None
    assert (both["title"], both["model"], both["system_prompt"]) == ("new", "gpt", "be brief")
    cleared = await store.update_conversation(cid, None, None, "")
    assert cleared is not None
    assert (cleared["model"], cleared["system_prompt"]) == ("gpt", None)
    assert await store.get_conversation(cid) == cleared
    assert await store.update_conversation("no-such-id", "x", None, None) is None


async def test_delete_conversation_removes_it_and_its_messages(store: StoreInterface) -> None:
    cid = await _cid(store)
    kept = await _cid(store)
    user, _ = await _turn(store, cid)
    await _turn(store, kept)
    assert await store.delete_conversation(cid) is True
    assert await store.get_conversation(cid) is None
    assert await store.get_message(user["id"]) is None
    assert await store.snapshot(cid, 0) is None
    assert [c["id"] for c in (await store.list_conversations(10))[0]] == [kept]
    assert await store.stats() == {"conversations": 1, "messages": 2, "streaming_rows": 1}
    assert await store.delete_conversation(cid) is False


def _image(
    cid: str, mid: str, data: bytes = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
) -> StoredAttachment:
    return StoredAttachment(new_id(), mid, cid, "image", "image/png", "plot.png", data, time.time())


async def test_attachment_rows_keep_their_bytes_and_go_with_their_conversation(
    store: StoreInterface,
) -> None:
    cid = await _cid(store)
    kept = await _cid(store)
    big = _image(cid, "a" * 16, bytes(range(256)) * 4096)  # 1 MiB, every byte value
    small = _image(cid, "a" * 16)
    other = _image(kept, "b" * 16)
    await store.add_attachments([big, small])
    await store.add_attachments([other])
    await store.add_attachments([])
    found = await store.get_attachments([big.id, small.id, other.id, "no-such-id"])
    assert found == {big.id: big, small.id: small, other.id: other}
    assert found[big.id].size == 1 << 20
    assert await store.get_attachments([]) == {}
    assert await store.delete_conversation(cid) is True
    assert await store.get_attachments([big.id, small.id, other.id]) == {other.id: other}


async def test_deleting_a_turn_deletes_its_prompt_s_attachment_rows(
    store: StoreInterface,
) -> None:
    cid = await _cid(store)
    user, _ = await _turn(store, cid)
    kept_user, _ = await _turn(store, cid, "kept")
    gone, kept = _image(cid, user["id"]), _image(cid, kept_user["id"])
    await store.add_attachments([gone, kept])
    await store.delete_turn(cid, user["id"])
    assert await store.get_attachments([gone.id, kept.id]) == {kept.id: kept}


async def test_delete_attachments_removes_one_message_s_rows(store: StoreInterface) -> None:
    cid = await _cid(store)
    first, second = _image(cid, "a" * 16), _image(cid, "b" * 16)
    await store.add_attachments([first, second])
    assert await store.delete_attachments("a" * 16) == 1
    assert await store.delete_attachments("a" * 16) == 0
    assert await store.get_attachments([first.id, second.id]) == {second.id: second}


# --- messages --------------------------------------------------------------------------


async def test_added_messages_follow_each_other_and_touch_the_header(
    store: StoreInterface,
) -> None:
    cid = await _cid(store)
    header = await store.get_conversation(cid)
    assert header is not None
    attachment = {"kind": "variable", "name": "df", "summary": "a DataFrame"}
    user, reply = await store.add_messages(
        cid,
        [
            _user("What is df?", source="kernel", streaming_for="k1", attachments=(attachment,)),
            _reply(id="0123456789abcdef", context_left_out=3),
        ],
        title_hint="What is df?",
    )
    assert (user["seq"], user["parent_id"], reply["seq"], reply["parent_id"]) == (
        1, None, 2, user["id"],
    )  # fmt: skip
    assert header["revision"] < user["revision"] < reply["revision"]
    assert user["attachments"] == [attachment]
    assert (user["source"], user["streaming_for"], user["status"]) == ("kernel", "k1", "complete")
    assert (reply["id"], reply["context_left_out"], reply["status"]) == (
        "0123456789abcdef", 3, "streaming",
    )  # fmt: skip
    assert (reply["model"], reply["author"], reply["role"], reply["content"]) == (
        "m", "alice", "assistant", "",
    )  # fmt: skip
    nulls = ("error", "prompt_tokens", "completion_tokens", "cost", "context")
    assert [reply[k] for k in nulls] == [None] * len(nulls)  # type: ignore[literal-required]
    assert "siblings" not in reply
    assert await store.get_message(reply["id"]) == reply
    touched = await store.get_conversation(cid)
    assert touched is not None
    assert (touched["title"], touched["model"], touched["head_id"]) == (
        "What is df?", "m", reply["id"],
    )  # fmt: skip
    assert touched["message_count"] == 2
    assert touched["revision"] > reply["revision"]
    assert touched["updated_at"] >= header["updated_at"]
    # Only a placeholder title gives way to the first prompt.
    await store.add_messages(cid, [_user("second")], title_hint="second")
    assert (await store.get_conversation(cid))["title"] == "What is df?"  # type: ignore[index]


async def test_adding_to_what_does_not_exist_is_a_lookup_error(store: StoreInterface) -> None:
    with pytest.raises(LookupError):
        await store.add_messages("no-such-id", [_user()])
    cid = await _cid(store)
    with pytest.raises(LookupError):
        await store.add_messages(cid, [_user()], parent="no-such-message")
    assert await store.stats() == {"conversations": 1, "messages": 0, "streaming_rows": 0}


async def test_begin_exchange_stores_a_prompt_and_a_streaming_reply(
    store: StoreInterface,
) -> None:
    cid = await _cid(store)
    created = await store.begin_exchange(cid, [_user("hello"), _reply()], "hello")
    assert created is not None
    user, reply = created
    assert (user["content"], reply["status"], reply["parent_id"]) == (
        "hello", "streaming", user["id"],
    )  # fmt: skip
    header = await store.get_conversation(cid)
    assert header is not None
    assert (header["title"], header["head_id"], header["message_count"]) == (
        "hello", reply["id"], 2,
    )  # fmt: skip
    # A regenerated reply: no prompt, a sibling of the first reply.
    again = await store.begin_exchange(cid, [_reply()], "", parent=user["id"])
    assert again is not None
    assert again[0]["parent_id"] == user["id"]
    assert again[0]["siblings"] == [reply["id"], again[0]["id"]]
    assert await store.begin_exchange("no-such-id", [_reply()], "") is None
    assert await store.begin_exchange(cid, [_reply()], "", parent="no-such-message") is None
    assert (await store.stats())["messages"] == 3


async def test_flush_writes_partial_text_of_streaming_messages_only(
    store: StoreInterface,
) -> None:
    cid, other = await _cid(store), await _cid(store)
    user, one = await _turn(store, cid)
    _, two = await _turn(store, other)
    writes = store.writes
    await store.flush_partials(
        [
            (one["id"], "partial one"),
            (two["id"], "partial two"),
            (user["id"], "overwritten?"),
            ("no-such-message", "lost"),
        ]
    )
    after = {m: await store.get_message(m) for m in (one["id"], two["id"], user["id"])}
    assert after[one["id"]]["content"] == "partial one"  # type: ignore[index]
    assert after[two["id"]]["content"] == "partial two"  # type: ignore[index]
    assert after[one["id"]]["status"] == "streaming"  # type: ignore[index]
    assert after[user["id"]] == user  # not streaming: left alone
    assert after[one["id"]]["revision"] > two["revision"]  # type: ignore[index]
    assert store.writes > writes
    revision = store.revision
    await store.flush_partials([])
    assert store.revision == revision


@pytest.mark.parametrize("status", ["complete", "error", "cancelled"])
async def test_finalize_ends_a_streaming_message_and_the_first_end_wins(
    store: StoreInterface, status: str
) -> None:
    cid = await _cid(store)
    _, reply = await _turn(store, cid)
    await store.flush_partials([(reply["id"], "Half an")])
    error = None if status == "complete" else f"{status}: by test"
    final = Final("Half an answer", status, error, prompt_tokens=7, completion_tokens=3, cost=0.5)
    ended = await store.finalize(reply["id"], final)
    assert ended is not None
    assert (ended["content"], ended["status"], ended["error"]) == ("Half an answer", status, error)
    assert (ended["prompt_tokens"], ended["completion_tokens"], ended["cost"]) == (7, 3, 0.5)
    assert ended["revision"] > reply["revision"]
    assert ended["updated_at"] >= reply["updated_at"]
    late = await store.finalize(reply["id"], Final("something else", "complete"))
    assert late == ended
    assert await store.get_message(reply["id"]) == ended
    await store.flush_partials([(reply["id"], "too late")])
    assert (await store.get_message(reply["id"]))["content"] == "Half an answer"  # type: ignore[index]
    assert await store.finalize("no-such-message", final) is None
    assert (await store.stats())["streaming_rows"] == 0


async def test_fail_streaming_keeps_the_text_and_honours_cutoff_and_exclusions(
    store: StoreInterface,
) -> None:
    replies = []
    for _ in range(3):
        _, reply = await _turn(store, await _cid(store))
        replies.append(reply["id"])
    one, two, three = replies
    await store.flush_partials([(one, "kept text")])
    assert await store.fail_streaming("stale", older_than=time.time() - 3600) == []
    before = store.revision
    failed = await store.fail_streaming("stale", older_than=time.time() + 1, exclude=[two])
    assert sorted(failed) == sorted([one, three])
    for mid, text in ((one, "kept text"), (three, "")):
        message = await store.get_message(mid)
        assert message is not None
        assert (message["status"], message["error"], message["content"]) == ("error", "stale", text)
        assert message["revision"] > before
    assert (await store.get_message(two))["status"] == "streaming"  # type: ignore[index]
    # Start-up recovery: no cut-off, nothing excluded; from sync code.
    assert store.fail_streaming_blocking("restarted") == [two]
    assert (await store.get_message(two))["error"] == "restarted"  # type: ignore[index]
    assert await store.fail_streaming("again") == []
    assert (await store.stats())["streaming_rows"] == 0


async def test_revisions_only_grow_and_since_means_written_after(store: StoreInterface) -> None:
    cid = await _cid(store)
    start = store.revision
    user, reply = await _turn(store, cid)
    assert [m["id"] for m in await store.messages_since(cid, start)] == [user["id"], reply["id"]]
    after_insert = store.revision
    assert after_insert > start
    assert await store.messages_since(cid, after_insert) == []
    await store.flush_partials([(reply["id"], "tok")])
    (flushed,) = await store.messages_since(cid, after_insert)
    assert (flushed["id"], flushed["content"]) == (reply["id"], "tok")
    assert flushed["revision"] > after_insert
    ended = await store.finalize(reply["id"], Final("token", "complete"))
    assert ended is not None
    assert ended["revision"] > flushed["revision"]
    # Every branch counts: a sibling is "written after" too.
    mark = store.revision
    (sibling,) = await store.add_messages(cid, [_reply()], parent=user["id"])
    assert [m["id"] for m in await store.messages_since(cid, mark)] == [sibling["id"]]
    assert [m["seq"] for m in await store.messages_since(cid, 0)] == [1, 2, 3]
    assert await store.messages_since("no-such-id", 0) == []
    assert store.revision >= sibling["revision"]


async def test_snapshot_shows_the_current_branch_written_after_since(
    store: StoreInterface,
) -> None:
    cid = await _cid(store)
    user, first = await _turn(store, cid)
    await store.finalize(first["id"], Final("first answer", "complete"))
    (second,) = await store.add_messages(cid, [_reply()], parent=user["id"])
    found = await store.snapshot(cid, 0)
    assert found is not None
    header, messages, revision, streaming, branch = found
    assert branch == [user["id"], second["id"]] == [m["id"] for m in messages]
    assert header["head_id"] == second["id"]
    assert "siblings" not in messages[0]
    assert messages[1]["siblings"] == [first["id"], second["id"]]
    assert streaming is True
    assert revision >= max(m["revision"] for m in messages)
    nothing = await store.snapshot(cid, revision)
    assert nothing is not None
    assert nothing[1] == []
    await store.flush_partials([(second["id"], "part")])
    off_branch = await store.set_context(cid, first["id"], "excluded")
    assert off_branch["revision"] > revision  # written after, but not on the branch
    changed = await store.snapshot(cid, revision)
    assert changed is not None
    assert [(m["id"], m["content"]) for m in changed[1]] == [(second["id"], "part")]
    assert changed[2] > revision
    await store.finalize(second["id"], Final("second answer", "complete"))
    assert (await store.snapshot(cid, 0))[3] is False  # type: ignore[index]
    assert await store.snapshot("no-such-id", 0) is None


# --- branches and the model's context --------------------------------------------------


async def test_move_head_switches_branches_and_clears(store: StoreInterface) -> None:
    cid = await _cid(store)
    u1, a1 = await _turn(store, cid, "one")
    u2, a2 = await _turn(store, cid, "two")
    (a1b,) = await store.add_messages(cid, [_reply()], parent=u1["id"])
    before = await store.get_conversation(cid)
    assert before is not None
    newest = await store.move_head(cid, a1["id"], newest=True)
    assert newest["head_id"] == a2["id"]
    assert newest["revision"] > before["revision"]
    assert (await store.snapshot(cid, 0))[4] == [u1["id"], a1["id"], u2["id"], a2["id"]]  # type: ignore[index]
    exact = await store.move_head(cid, a1["id"], newest=False)
    assert exact["head_id"] == a1["id"]
    assert (await store.snapshot(cid, 0))[4] == [u1["id"], a1["id"]]  # type: ignore[index]
    back = await store.move_head(cid, a1b["id"], newest=True)
    assert back["head_id"] == a1b["id"]
    cleared = await store.move_head(cid, None, newest=False)
    assert cleared["head_id"] is None
    assert (await store.snapshot(cid, 0))[4] == []  # type: ignore[index]
    assert cleared["message_count"] == 5  # nothing deleted
    (fresh,) = await store.add_messages(cid, [_user("anew")])
    assert fresh["parent_id"] is None
    assert (await store.get_conversation(cid))["head_id"] == fresh["id"]  # type: ignore[index]
    with pytest.raises(LookupError):
        await store.move_head(cid, "no-such-message", newest=True)
    with pytest.raises(LookupError):
        await store.move_head("no-such-id", None, newest=False)


async def test_delete_turn_removes_a_prompt_and_every_reply_and_keeps_the_rest(
    store: StoreInterface,
) -> None:
    cid = await _cid(store)
    u1, a1 = await _turn(store, cid, "one")
    u2, a2 = await _turn(store, cid, "two")
    (a2b,) = await store.add_messages(cid, [_reply()], parent=u2["id"])
    u3, a3 = await _turn(store, cid, "three")  # follows a2b, the head
    header, deleted = await store.delete_turn(cid, u2["id"])
    assert deleted == [u2["id"], a2["id"], a2b["id"]]
    assert (header["head_id"], header["message_count"]) == (a3["id"], 4)
    found = await store.snapshot(cid, 0)
    assert found is not None
    assert found[4] == [u1["id"], a1["id"], u3["id"], a3["id"]]
    assert [(m["seq"], m["parent_id"]) for m in found[1]] == [
        (1, None), (2, u1["id"]), (3, a1["id"]), (4, u3["id"]),
    ]  # fmt: skip
    assert await store.get_message(a2b["id"]) is None
    header, deleted = await store.delete_turn(cid, u3["id"])
    assert deleted == [u3["id"], a3["id"]]
    assert (header["head_id"], header["message_count"]) == (a1["id"], 2)  # the head moved up
    assert await store.get_conversation(cid) == header
    (u4,) = await store.add_messages(cid, [_user("four")])
    assert (u4["seq"], u4["parent_id"]) == (3, a1["id"])
    with pytest.raises(LookupError):
        await store.delete_turn(cid, "no-such-message")
    with pytest.raises(LookupError):
        await store.delete_turn("no-such-id", u1["id"])


async def test_context_is_the_completed_turns_of_a_branch_with_marks(
    store: StoreInterface,
) -> None:
    cid = await _cid(store)
    attachment = {"kind": "variable", "name": "x", "summary": "x = 1"}
    u1, a1 = await store.add_messages(cid, [_user("one", attachments=(attachment,)), _reply()])
    await store.finalize(a1["id"], Final("broken", "error", "provider failed"))
    u2, a2 = await _turn(store, cid, "two")
    await store.finalize(a2["id"], Final("answer two", "complete"))
    marked = await store.set_context(cid, u1["id"], "pinned")
    assert marked["context"] == "pinned"
    assert marked["revision"] > u1["revision"]
    expected = [
        ("user", "one", [attachment], "pinned"),
        ("user", "two", [], None),
        ("assistant", "answer two", [], None),
    ]
    assert await store.context_for(cid) == expected
    assert store.cached_context(cid) in (None, expected)
    assert await store.context_for(cid, u1["id"]) == expected[:1]
    assert await store.context_for(cid, None) == []
    await store.set_context(cid, a2["id"], "excluded")
    cleared = await store.set_context(cid, u1["id"], None)
    assert cleared["context"] is None
    assert [t[3] for t in await store.context_for(cid)] == [None, None, "excluded"]
    assert (await store.get_message(a2["id"]))["context"] == "excluded"  # type: ignore[index]
    assert await store.context_for("no-such-id") == []
    with pytest.raises(LookupError):
        await store.set_context(cid, "no-such-message", "pinned")
    with pytest.raises(LookupError):
        await store.set_context("no-such-id", u2["id"], "pinned")


# --- accounting ------------------------------------------------------------------------


async def test_usage_sums_replies_per_author_since_a_time(store: StoreInterface) -> None:
    cid = await _cid(store)
    since = time.time() - 1
    for author, tokens, cost in (
        ("alice", (10, 5), 0.25),
        ("alice", (3, 4), 0.5),
        ("bob", (1, 1), None),
    ):
        (reply,) = await store.add_messages(cid, [_reply(author=author)])
        await store.finalize(reply["id"], Final("x", "complete", None, *tokens, cost))
    await store.add_messages(cid, [_user(author="carol")])  # a prompt is not a reply
    await store.add_messages(cid, [_reply(author="dave")])  # still streaming: counted
    assert await store.usage(since) == {
        "alice": {"tokens": 22, "cost": 0.75, "messages": 2},
        "bob": {"tokens": 2, "cost": 0.0, "messages": 1},
        "dave": {"tokens": 0, "cost": 0.0, "messages": 1},
    }
    assert await store.usage(since, "bob") == {"bob": {"tokens": 2, "cost": 0.0, "messages": 1}}
    assert await store.usage(time.time() + 60) == {}


async def test_stats_count_conversations_messages_and_streaming_rows(
    store: StoreInterface,
) -> None:
    first, second = await _cid(store), await _cid(store)
    _, reply = await _turn(store, first)
    await _turn(store, second)
    await store.finalize(reply["id"], Final("done", "complete"))
    assert await store.stats() == {"conversations": 2, "messages": 4, "streaming_rows": 1}


async def test_concurrent_writes_get_distinct_increasing_revisions(
    store: StoreInterface,
) -> None:
    cids = [await _cid(store) for _ in range(4)]
    created = await asyncio.gather(*(_turn(store, c) for c in cids))
    revisions = [m["revision"] for pair in created for m in pair]
    assert len(set(revisions)) == len(revisions) == 8
    assert store.revision >= max(revisions)


# --- issue 16: append-only flushes and group-committed admissions -------------------


async def test_each_flush_shows_the_text_so_far_whether_or_not_it_extends_the_last(
    store: StoreInterface,
) -> None:
    """A backend may store only what a flush adds (DuckDB appends chunks): every read,
    a failure and the end still see one whole text, and text that does not extend the
    last flush replaces it."""
    cid = await _cid(store)
    _, reply = await _turn(store, cid)
    mid = reply["id"]
    for text in ("Once", "Once upon", "Once upon a time"):
        await store.flush_partials([(mid, text)])
        assert (await store.get_message(mid))["content"] == text  # type: ignore[index]
    await store.flush_partials([(mid, "Rewritten")])
    assert [m["content"] for m in await store.messages_since(cid, 0)] == ["q", "Rewritten"]
    await store.flush_partials([(mid, "Rewritten, then more")])
    assert (await store.get_message(mid))["content"] == "Rewritten, then more"  # type: ignore[index]
    assert await store.fail_streaming("stale") == [mid]
    failed = await store.get_message(mid)
    assert failed is not None
    assert (failed["status"], failed["content"]) == ("error", "Rewritten, then more")
    await store.flush_partials([(mid, "Rewritten, then more, too late")])
    assert (await store.get_message(mid))["content"] == "Rewritten, then more"  # type: ignore[index]


async def test_begin_exchanges_at_once_each_store_their_rows_or_none(
    store: StoreInterface,
) -> None:
    """Sends arriving together (a backend may commit them together): each gets its own
    rows, a deleted conversation's gets None without failing the others, and two into
    one conversation follow each other."""
    cids = [await _cid(store) for _ in range(6)]
    gone = await _cid(store)
    await store.delete_conversation(gone)
    targets = [*cids, gone, cids[0]]
    answers = await asyncio.gather(
        *(
            store.begin_exchange(c, [_user(f"q{i}"), _reply()], f"q{i}")
            for i, c in enumerate(targets)
        )
    )
    assert answers[6] is None
    for i, cid in enumerate(cids):
        created = answers[i]
        assert created is not None
        assert [(m["conversation_id"], m["content"]) for m in created] == [
            (cid, f"q{i}"),
            (cid, ""),
        ]
    first, again = answers[0], answers[7]
    assert first is not None
    assert again is not None
    assert again[0]["parent_id"] == first[1]["id"]
    header = await store.get_conversation(cids[0])
    assert header is not None
    assert (header["message_count"], header["head_id"]) == (4, again[1]["id"])
