"""Branches (issue 13): regenerate a reply, edit and resend a prompt, switch versions,
delete a turn, clear. An edit or a regenerate is a new version (same ``parent_id``), the
old one stays retrievable, and everything that reads a conversation — snapshots, the
model's context, ``history()``/``export()`` — follows the current branch.

Through a real Jupyter server, the local provider (what it received is what the model
was sent), a real DuckDB file, a real kernel; embedded mode through the panel's relay."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from r3nb.engine.store import MIGRATIONS, NewMessage, Store
from tests.client import Api, ApiError
from tests.kernels import KernelSession
from tests.provider import FakeProvider


async def _turn(api: Api, cid: str, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    out = await api.send(cid, text)
    return out["start"]["user_message"], out["done"]["message"]


async def _stream(api: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async for event, data in api.events("POST", path, body):
        out[event] = data
    return out


async def _regenerate(api: Api, cid: str, mid: str, **body: Any) -> dict[str, Any]:
    return await _stream(api, f"conversations/{cid}/messages/{mid}/regenerate", body)


async def _edit(api: Api, cid: str, mid: str, content: str) -> dict[str, Any]:
    return await _stream(api, f"conversations/{cid}/messages/{mid}/edit", {"content": content})


async def _send_noting_start(
    api: Api, cid: str, content: str, started: asyncio.Event
) -> dict[str, Any]:
    """``api.send``, setting ``started`` at the ``start`` event (the rows are durable)."""
    out: dict[str, Any] = {"deltas": []}
    async for event, data in api.events(
        "POST", f"conversations/{cid}/messages", {"content": content}
    ):
        if event == "start":
            started.set()
        if event == "delta":
            out["deltas"].append(data)
        else:
            out[event] = data
    return out


async def _shown(api: Api, cid: str) -> tuple[list[str], dict[str, Any]]:
    """The ids a panel shows (the branch) and the snapshot."""
    snap = await api.ok("GET", f"conversations/{cid}")
    ids = [m["id"] for m in snap["messages"]]
    assert snap["branch"] == ids, "a first load names the branch it sends"
    assert [m["seq"] for m in snap["messages"]] == sorted(m["seq"] for m in snap["messages"])
    return ids, snap


def _sent(provider: FakeProvider, index: int = -1) -> list[tuple[str, str]]:
    """(role, content) of what the model was sent on request ``index``."""
    return [(m["role"], m["content"]) for m in provider.requests[index]["messages"]]


async def test_regenerate_keeps_the_old_reply_and_sends_only_the_current_branch(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    u1, a1 = await _turn(api, cid, "first !tokens=3")
    u2, a2 = await _turn(api, cid, "second !tokens=3")
    provider.scenario.text = "another answer"  # the prompt's directives stay the same
    out = await _regenerate(api, cid, a2["id"])
    a3 = out["done"]["message"]
    assert out["start"]["user_message"] is None
    assert a3["status"] == "complete"
    assert a3["parent_id"] == u2["id"]
    assert a3["siblings"] == [a2["id"], a3["id"]]
    assert a3["content"] == provider.replies[2] != a2["content"]
    # The model saw the branch up to the prompt, not the reply it replaces.
    assert _sent(provider) == [
        ("user", "first !tokens=3"), ("assistant", a1["content"]), ("user", "second !tokens=3"),
    ]  # fmt: skip

    ids, snap = await _shown(api, cid)
    assert ids == [u1["id"], a1["id"], u2["id"], a3["id"]]
    assert snap["conversation"]["head_id"] == a3["id"]
    assert snap["messages"][3]["siblings"] == [a2["id"], a3["id"]]
    assert "siblings" not in snap["messages"][0]

    # The old reply is one switch away, with its text; the next prompt follows it.
    switched = await api.ok("POST", f"conversations/{cid}/head", {"message_id": a2["id"]})
    assert switched["conversation"]["head_id"] == a2["id"]
    ids, snap = await _shown(api, cid)
    assert ids == [u1["id"], a1["id"], u2["id"], a2["id"]]
    assert snap["messages"][3]["content"] == a2["content"]
    await _turn(api, cid, "third !tokens=2")
    assert ("assistant", a2["content"]) in _sent(provider)
    assert ("assistant", a3["content"]) not in _sent(provider)


async def test_edit_and_resend_makes_a_new_version_of_the_prompt(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    u1, a1 = await _turn(api, cid, "first !tokens=3")
    u2, a2 = await _turn(api, cid, "secnod !tokens=3")
    out = await _edit(api, cid, u2["id"], "second, spelled right !tokens=3")
    u3, a3 = out["start"]["user_message"], out["done"]["message"]
    assert u3["parent_id"] == a1["id"]
    assert u3["siblings"] == [u2["id"], u3["id"]]
    assert a3["parent_id"] == u3["id"]
    assert _sent(provider)[-1] == ("user", "second, spelled right !tokens=3")
    assert ("user", "secnod !tokens=3") not in _sent(provider)
    assert (await _shown(api, cid))[0] == [u1["id"], a1["id"], u3["id"], a3["id"]]
    # Choosing the old prompt shows it with its own reply (the newest message under it).
    await api.ok("POST", f"conversations/{cid}/head", {"message_id": u2["id"]})
    assert (await _shown(api, cid))[0] == [u1["id"], a1["id"], u2["id"], a2["id"]]


async def test_deleting_a_turn_keeps_the_turns_after_it(api: Api, provider: FakeProvider) -> None:
    cid = await api.conversation()
    u1, a1 = await _turn(api, cid, "one !tokens=2")
    u2, a2 = await _turn(api, cid, "two !tokens=2")
    u3, a3 = await _turn(api, cid, "three !tokens=2")
    provider.scenario.text = "three, again"
    a3b = (await _regenerate(api, cid, a3["id"]))["done"]["message"]
    provider.scenario.text = None
    gone = await api.ok("DELETE", f"conversations/{cid}/messages/{u2['id']}")
    assert gone["deleted"] == [u2["id"], a2["id"]]
    ids, snap = await _shown(api, cid)
    assert ids == [u1["id"], a1["id"], u3["id"], a3b["id"]]
    assert [m["seq"] for m in snap["messages"]] == [1, 2, 3, 5]  # 4 is a3, another version
    assert snap["messages"][2]["parent_id"] == a1["id"]
    assert snap["conversation"]["message_count"] == 5
    await _turn(api, cid, "four !tokens=2")
    assert [c for _, c in _sent(provider)] == ["one !tokens=2", a1["content"], "three !tokens=2",
                                               a3b["content"], "four !tokens=2"]  # fmt: skip
    # The last turn, with both versions of its reply: the branch ends at the turn before.
    last_user = (await _shown(api, cid))[0][-2]
    await api.ok("DELETE", f"conversations/{cid}/messages/{last_user}")
    await api.ok("DELETE", f"conversations/{cid}/messages/{u3['id']}")
    ids, snap = await _shown(api, cid)
    assert ids == [u1["id"], a1["id"]]
    assert snap["conversation"]["head_id"] == a1["id"]
    assert snap["conversation"]["message_count"] == 2


async def test_clear_starts_afresh_and_the_old_turns_stay_reachable(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    u1, a1 = await _turn(api, cid, "remember 42 !tokens=2")
    cleared = await api.ok("POST", f"conversations/{cid}/clear")
    assert cleared["conversation"]["head_id"] is None
    ids, snap = await _shown(api, cid)
    assert ids == []
    assert snap["conversation"]["message_count"] == 2  # nothing was deleted
    fresh, _ = await _turn(api, cid, "what number? !tokens=2")
    assert _sent(provider) == [("user", "what number? !tokens=2")]
    assert fresh["parent_id"] is None
    assert fresh["siblings"] == [u1["id"], fresh["id"]]
    await api.ok("POST", f"conversations/{cid}/head", {"message_id": u1["id"]})
    assert (await _shown(api, cid))[0] == [u1["id"], a1["id"]]


async def test_an_observer_polling_by_revision_sees_the_branch_change(api: Api) -> None:
    cid = await api.conversation()
    u1, a1 = await _turn(api, cid, "one !tokens=2")
    u2, a2 = await _turn(api, cid, "two !tokens=2")
    held = await api.ok("GET", f"conversations/{cid}")
    idle = await api.ok("GET", f"conversations/{cid}", since=held["revision"])
    assert (idle["conversation"], idle["branch"], idle["messages"]) == (None, None, [])
    a3 = (await _regenerate(api, cid, a2["id"]))["done"]["message"]
    poll = await api.ok("GET", f"conversations/{cid}", since=held["revision"])
    assert poll["branch"] == [u1["id"], a1["id"], u2["id"], a3["id"]]
    assert [m["id"] for m in poll["messages"]] == [a3["id"]]  # the old reply is not sent
    # Switching back names a message the observer no longer holds: it reloads (since=0).
    await api.ok("POST", f"conversations/{cid}/head", {"message_id": a2["id"]})
    poll = await api.ok("GET", f"conversations/{cid}", since=poll["revision"])
    assert poll["branch"] == [u1["id"], a1["id"], u2["id"], a2["id"]]
    await api.ok("DELETE", f"conversations/{cid}/messages/{u2['id']}")
    poll = await api.ok("GET", f"conversations/{cid}", since=poll["revision"])
    assert poll["branch"] == [u1["id"], a1["id"]]


async def test_bad_branch_requests_are_clear_4xx_never_500(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    u1, a1 = await _turn(api, cid, "one !tokens=2")
    other = await api.conversation()
    u9, a9 = await _turn(api, other, "elsewhere !tokens=2")
    unknown = "0123456789abcdef"
    m, c = f"conversations/{cid}/messages", f"conversations/{cid}"
    gone = f"conversations/{unknown}"
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", f"{gone}/messages/{a1['id']}/regenerate", {}, 404, "no conversation"),
        ("POST", f"{m}/{unknown}/regenerate", {}, 404, "no message"),
        ("POST", f"{m}/not-an-id/regenerate", {}, 404, "no message"),
        ("POST", f"{m}/{a9['id']}/regenerate", {}, 404, "no message"),
        ("POST", f"{m}/{u1['id']}/regenerate", {}, 400, "assistant messages"),
        ("POST", f"{m}/{a1['id']}/regenerate", {"model": "nope"}, 400, "unknown model"),
        ("POST", f"{m}/{a1['id']}/edit", {"content": "x"}, 400, "user messages"),
        ("POST", f"{m}/{u1['id']}/edit", {"content": " "}, 400, "'content'"),
        ("POST", f"{m}/{u9['id']}/edit", {"content": "x"}, 404, "no message"),
        ("DELETE", f"{m}/{a1['id']}", None, 400, "give its prompt"),
        ("DELETE", f"{m}/{unknown}", None, 404, "no message"),
        ("DELETE", f"{gone}/messages/{u1['id']}", None, 404, "no conversation"),
        ("POST", f"{c}/head", {}, 400, "'message_id'"),
        ("POST", f"{c}/head", [1], 400, "JSON object"),
        ("POST", f"{c}/head", {"message_id": unknown}, 404, "no message"),
        ("POST", f"{c}/head", {"message_id": u9["id"]}, 404, "no message"),
        ("POST", f"{gone}/clear", None, 404, "no conversation"),
        ("GET", f"{c}/clear", None, 405, "use POST"),
    ]  # fmt: skip
    for method, path, body, status, words in cases:
        got, reply = await api.call(method, path, body)
        assert (got, words in reply.get("error", "")) == (status, True), (method, path, reply)
    assert len(provider.requests) == 2, "nothing refused reached the model"

    # While a reply is being written, nothing may change the branch under it.
    started = asyncio.Event()
    sending = asyncio.create_task(_send_noting_start(api, cid, "two !tokens=30 !gate=2", started))
    await provider.await_sent(2, 2)
    await started.wait()  # acknowledged, so stored: the provider may stream before that
    streaming = [m for m in (await _shown(api, cid))[1]["messages"] if m["status"] == "streaming"]
    for method, path, body in [
        ("POST", f"conversations/{cid}/messages/{a1['id']}/regenerate", {}),
        ("POST", f"conversations/{cid}/messages/{u1['id']}/edit", {"content": "again"}),
        ("DELETE", f"conversations/{cid}/messages/{u1['id']}", None),
        ("POST", f"conversations/{cid}/head", {"message_id": a1["id"]}),
        ("POST", f"conversations/{cid}/clear", None),
    ]:
        got, reply = await api.call(method, path, body)
        assert got == 409, (method, path, reply)
        assert reply["message_id"] == streaming[0]["id"]
    provider.release()
    assert (await sending)["done"]["message"]["status"] == "complete"
    with pytest.raises(ApiError):
        await _regenerate(api, cid, u1["id"])


def test_an_old_file_is_migrated_into_one_branch_per_conversation(tmp_path: Path) -> None:
    """A file written with the 0003 schema: each message follows the one before it, the
    head is the last message, and new messages follow it."""
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (name VARCHAR PRIMARY KEY, applied_at DOUBLE)")
    for name, statements in MIGRATIONS[:3]:
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_migrations VALUES (?, 0)", [name])
    assert MIGRATIONS[2][0] == "0003_conversation_system_prompt"
    for cid, count in (("c" * 16, 4), ("d" * 16, 1), ("e" * 16, 0)):
        con.execute(
            "INSERT INTO conversations (id, title, created_at, updated_at, revision)"
            " VALUES (?, 'old', 0, 0, 1)",
            [cid],
        )
        for seq in range(1, count + 1):
            con.execute(
                "INSERT INTO messages (id, conversation_id, seq, role, content, status,"
                " created_at, updated_at, revision) VALUES (?, ?, ?, ?, ?, 'complete', 0, 0, ?)",
                [f"{cid[0]}{seq:015d}", cid, seq, "user" if seq % 2 else "assistant",
                 f"text {seq}", seq],
            )  # fmt: skip
    con.close()

    async def check() -> None:
        store = Store(path)
        store.open()
        try:
            assert "0004_message_branches" in store.applied_migrations()
            found = await store.snapshot("c" * 16, 0)
            assert found is not None
            header, messages, _, _, branch = found
            ids = [f"c{seq:015d}" for seq in range(1, 5)]
            assert branch == ids == [m["id"] for m in messages]
            assert [m["parent_id"] for m in messages] == [None, *ids[:3]]
            assert header["head_id"] == ids[-1]
            assert (await store.get_conversation("d" * 16))["head_id"] == "d" + "0" * 14 + "1"  # type: ignore[index]
            assert (await store.get_conversation("e" * 16))["head_id"] is None  # type: ignore[index]
            assert await store.context_for("c" * 16) == [
                ("user", "text 1", [], None), ("assistant", "text 2", [], None),
                ("user", "text 3", [], None), ("assistant", "text 4", [], None),
            ]  # fmt: skip
            (new,) = await store.add_messages("c" * 16, [NewMessage("user", "new", "complete")])
            assert (new["parent_id"], new["seq"]) == (ids[-1], 5)
        finally:
            store.close()

    asyncio.run(check())


async def test_kernel_history_and_export_follow_the_current_branch(
    server_kernel: KernelSession, api: Api, provider: FakeProvider
) -> None:
    await server_kernel.ok(
        "import r3nb\nr3nb.chat('one !tokens=3')\nr3nb.chat('two !tokens=6')\n"
        "from r3nb.kernel.client import current_conversation\n"
    )
    cid = await server_kernel.json("current_conversation()")
    _, snap = await _shown(api, cid)
    old = snap["messages"][-1]
    provider.scenario.text = "a second opinion"
    new = (await _regenerate(api, cid, old["id"]))["done"]["message"]
    provider.scenario.text = None
    rows = await server_kernel.json("r3nb.history()[['role', 'content', 'id']].values.tolist()")
    assert [r[2] for r in rows] == [m["id"] for m in snap["messages"][:3]] + [new["id"]]
    assert rows[-1][1] == new["content"]
    markdown = await server_kernel.json("r3nb.export()")
    assert new["content"] in markdown
    assert old["content"] not in markdown
    assert "version 2 of 2" in markdown
    exported = json.loads(await server_kernel.json("r3nb.export(format='json')"))
    assert [m["id"] for m in exported["messages"]][-1] == new["id"]
    # The next %%chat / r3nb.chat follows the branch shown, not the replaced reply.
    await server_kernel.ok("r3nb.chat('three !tokens=2')")
    assert ("assistant", new["content"]) in _sent(provider)
    assert ("assistant", old["content"]) not in _sent(provider)


_RELAY = """
import time, r3nb
panel, sent = r3nb.ChatPanel(), []
panel.send = lambda m, buffers=None: sent.append(m)
def relay(method, path, body=None):
    rid = str(len(sent)) + path
    panel._relay({'type': 'request', 'id': rid, 'method': method, 'path': path, 'body': body})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        mine = [m for m in sent if m['id'] == rid]
        if mine and mine[-1]['type'] in ('response', 'end'):
            return mine
        time.sleep(0.01)
    raise TimeoutError(path)
def branch(cid):
    return [m['id'] for m in relay('GET', f'conversations/{cid}')[-1]['body']['messages']]
"""


async def test_embedded_mode_reaches_the_same_routes_through_the_panel_relay(
    plain_kernel: KernelSession,
) -> None:
    await plain_kernel.ok(_RELAY)
    await plain_kernel.ok(
        "cid = relay('POST', 'conversations', {})[-1]['body']['conversation']['id']\n"
        "for text in ('one', 'two'):\n"
        "    relay('POST', f'conversations/{cid}/messages', {'content': text})\n"
        "u1, a1, u2, a2 = branch(cid)\n"
        "regen = relay('POST', f'conversations/{cid}/messages/{a2}/regenerate', {})\n"
        "edit = relay('POST', f'conversations/{cid}/messages/{u2}/edit', {'content': 'two!'})\n"
        "after_edit = branch(cid)\n"
        "head = relay('POST', f'conversations/{cid}/head', {'message_id': a2})[-1]\n"
        "after_head = branch(cid)\n"
        "bad = relay('POST', f'conversations/{cid}/messages/{u1}/regenerate', {})[-1]\n"
        "gone = relay('DELETE', f'conversations/{cid}/messages/{u2}')[-1]\n"
        "after_delete = branch(cid)\n"
        "clear = relay('POST', f'conversations/{cid}/clear')[-1]\n"
        "after_clear = branch(cid)\n"
    )
    state = await plain_kernel.json(
        "{'regen': [m['event'] for m in regen if m['type'] == 'event'],"
        " 'regen_parent': [m['data'] for m in regen if m.get('event') == 'done'][0]"
        "['message']['parent_id'] == u2,"
        " 'edit': [m['event'] for m in edit if m['type'] == 'event'][-1],"
        " 'after_edit': after_edit[:2] == [u1, a1] and u2 not in after_edit,"
        " 'head': head['status'], 'after_head': after_head == [u1, a1, u2, a2],"
        " 'bad': [bad['status'], 'assistant messages' in bad['body']['error']],"
        " 'gone': [gone['status'], sorted(gone['body']['deleted']) == sorted([u2, a2,"
        " [m['data'] for m in regen if m.get('event') == 'done'][0]['message']['id']])],"
        " 'after_delete': after_delete == [u1, a1],"
        " 'clear': [clear['status'], clear['body']['conversation']['head_id']],"
        " 'after_clear': after_clear}"
    )
    events = state.pop("regen")
    assert (events[0], events[-1]) == ("start", "done")
    assert state == {
        "regen_parent": True,
        "edit": "done",
        "after_edit": True,
        "head": 200,
        "after_head": True,
        "bad": [400, True],
        "gone": [200, True],
        "after_delete": True,
        "clear": [200, None],
        "after_clear": [],
    }
