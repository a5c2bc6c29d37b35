"""Pinned and excluded messages (issue 13): a person decides what the model sees. A
pinned message is always sent, even when older turns are left out to fit the context
window; an excluded one never is; the reply says how many turns were left out, also
after a reload; observers see the marks. Through a real Jupyter server, the local
provider (what it received is what the model was sent) and a real DuckDB file."""

from __future__ import annotations

from typing import Any

import pytest

from r3nb.engine.context import fit
from tests.client import Api
from tests.kernels import KernelSession
from tests.provider import FakeProvider, small_context_config
from tests.test_branches import _RELAY


def _turn(role: str, chars: int) -> dict[str, Any]:
    return {"role": role, "content": "x" * chars}


def test_fit_sends_pinned_turns_first_and_says_when_they_alone_do_not_fit() -> None:
    system, question = {"role": "system", "content": "be brief"}, _turn("user", 40)
    history = [_turn("user", 400), _turn("assistant", 4000), _turn("user", 40),
               _turn("assistant", 400)]  # fmt: skip
    everything = [system, *history, question]
    assert fit(everything, 1000, 256).messages == [system, history[2], history[3], question]
    pinned = fit(everything, 1000, 256, pinned=[1])  # the first question
    assert pinned.messages == [system, history[0], history[2], history[3], question]
    assert (pinned.left_out, pinned.over_budget) == (1, False)
    # A reply whose question is pinned is no orphan: it may follow it.
    turns = [_turn("user", 4000), _turn("assistant", 40), _turn("user", 40), _turn("assistant", 40)]
    assert fit([*turns, question], 700, 256, pinned=[2]).messages == [*turns[2:], question]
    over = fit(everything, 1000, 256, pinned=[1, 2])
    assert over.messages == [system, history[0], history[1], question]  # sent anyway
    assert (over.left_out, over.over_budget) == (2, True)
    assert not fit(everything, 300, 256).over_budget  # nothing pinned: nothing to say


@pytest.fixture
def r3nb_config(provider: FakeProvider) -> dict[str, Any]:
    return small_context_config(provider)


def _sent(provider: FakeProvider) -> list[str]:
    return [m["content"] for m in provider.requests[-1]["messages"]]


async def _mark(api: Api, cid: str, mid: str, mark: str | None) -> dict[str, Any]:
    reply = await api.ok("PATCH", f"conversations/{cid}/messages/{mid}", {"context": mark})
    message: dict[str, Any] = reply["message"]
    return message


async def test_a_pinned_message_is_sent_when_older_turns_are_left_out(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    first = "!tokens=2 remember: " + "the key is blue " * 44  # ~720 characters
    u1 = (await api.send(cid, first))["start"]["user_message"]
    await api.send(cid, "!tokens=2 filler " + "words " * 170)  # ~1,040 characters
    await api.send(cid, "!tokens=2 unpinned")
    assert first not in _sent(provider)  # it no longer fits ...

    marked = await _mark(api, cid, u1["id"], "pinned")
    assert (marked["id"], marked["context"]) == (u1["id"], "pinned")
    out = await api.send(cid, "!tokens=2 what is the key?")
    sent = _sent(provider)
    assert sent[0] == first  # ... pinned, it does
    assert sent[-1] == "!tokens=2 what is the key?"
    assert not any(s.startswith("!tokens=2 filler") for s in sent)
    assert len(sent) == 4  # the pinned question, the last turn, the new question
    assert out["start"]["context_left_out"] == 3  # its reply and the filler turn
    assert out["start"]["context_pinned_over_budget"] is False
    # The note survives a reload: the reply keeps how many turns were left out.
    reply = out["done"]["message"]
    assert reply["context_left_out"] == out["start"]["context_left_out"] > 0
    snap = await api.ok("GET", f"conversations/{cid}")
    stored = {m["id"]: m for m in snap["messages"]}
    assert stored[reply["id"]]["context_left_out"] == reply["context_left_out"]
    assert stored[u1["id"]]["context"] == "pinned"

    # Pinned messages that alone exceed the window are still sent, and the reply says so.
    filler = next(m for m in snap["messages"] if m["content"].startswith("!tokens=2 filler"))
    await _mark(api, cid, filler["id"], "pinned")
    over = await api.send(cid, "!tokens=2 both?")
    assert over["start"]["context_pinned_over_budget"] is True
    assert _sent(provider)[:2] == [first, filler["content"]]

    # Unpinned, it is an ordinary turn again: left out once it no longer fits.
    await _mark(api, cid, u1["id"], None)
    await _mark(api, cid, filler["id"], None)
    await api.send(cid, "!tokens=2 and now?")
    assert first not in _sent(provider)


async def test_an_excluded_message_is_never_sent(api: Api, provider: FakeProvider) -> None:
    cid = await api.conversation()
    secret = await api.send(cid, "!tokens=2 my password is hunter2")
    u1, a1 = secret["start"]["user_message"], secret["done"]["message"]
    a2 = (await api.send(cid, "!tokens=2 second"))["done"]["message"]
    await _mark(api, cid, u1["id"], "excluded")
    await _mark(api, cid, a1["id"], "excluded")
    out = await api.send(cid, "!tokens=2 third")
    assert _sent(provider) == ["!tokens=2 second", a2["content"], "!tokens=2 third"]
    assert out["start"]["context_left_out"] == 0  # excluded is not "left out to fit"
    # Regenerating follows the marks too.
    reply = out["done"]["message"]
    async for _ in api.events("POST", f"conversations/{cid}/messages/{reply['id']}/regenerate", {}):
        pass
    assert _sent(provider) == ["!tokens=2 second", a2["content"], "!tokens=2 third"]
    await _mark(api, cid, u1["id"], None)
    await api.send(cid, "!tokens=2 fourth")
    assert "!tokens=2 my password is hunter2" in _sent(provider)


async def test_observers_see_a_mark_change(api: Api) -> None:
    cid = await api.conversation()
    out = await api.send(cid, "!tokens=2 hello")
    user, reply = out["start"]["user_message"], out["done"]["message"]
    held = await api.ok("GET", f"conversations/{cid}")
    assert {m["context"] for m in held["messages"]} == {None}
    await _mark(api, cid, reply["id"], "excluded")
    poll = await api.ok("GET", f"conversations/{cid}", since=held["revision"])
    assert [(m["id"], m["context"]) for m in poll["messages"]] == [(reply["id"], "excluded")]
    assert poll["revision"] > held["revision"]
    # An observer naming the message as held (from=MID:N) still gets the mark.
    await _mark(api, cid, reply["id"], "pinned")
    length = len(reply["content"])
    poll2 = await api.ok(
        "GET", f"conversations/{cid}", since=poll["revision"], **{"from": f"{reply['id']}:{length}"}
    )
    assert [(m["id"], m["context"]) for m in poll2["messages"]] == [(reply["id"], "pinned")]
    idle = await api.ok("GET", f"conversations/{cid}", since=poll2["revision"])
    assert idle["messages"] == []
    assert user["id"] not in {m["id"] for m in poll2["messages"]}


async def test_bad_mark_requests_are_clear_4xx(api: Api, provider: FakeProvider) -> None:
    cid = await api.conversation()
    out = await api.send(cid, "!tokens=2 one")
    mid = out["start"]["user_message"]["id"]
    other = await api.conversation()
    elsewhere = (await api.send(other, "!tokens=2 two"))["start"]["user_message"]["id"]
    unknown = "0123456789abcdef"
    m = f"conversations/{cid}/messages"
    cases: list[tuple[str, Any, int, str]] = [
        (f"{m}/{mid}", {}, 400, "'context'"),
        (f"{m}/{mid}", {"context": "starred"}, 400, "'context'"),
        (f"{m}/{mid}", {"context": 1}, 400, "'context'"),
        (f"{m}/{mid}", {"context": ["pinned"]}, 400, "'context'"),  # unhashable: was a 500
        (f"{m}/{mid}", {"context": {"pinned": True}}, 400, "'context'"),
        (f"{m}/{mid}", ["pinned"], 400, "JSON object"),
        (f"{m}/{unknown}", {"context": "pinned"}, 404, "no message"),
        (f"{m}/not-an-id", {"context": "pinned"}, 404, "no message"),
        (f"{m}/{elsewhere}", {"context": "pinned"}, 404, "no message"),
        (f"conversations/{unknown}/messages/{mid}", {"context": "pinned"}, 404, "no conversation"),
    ]  # fmt: skip
    for path, body, status, words in cases:
        got, reply = await api.call("PATCH", path, body)
        assert (got, words in reply.get("error", "")) == (status, True), (path, body, reply)
    snap = await api.ok("GET", f"conversations/{cid}")
    assert {m["context"] for m in snap["messages"]} == {None}, "nothing refused was applied"


async def test_embedded_mode_marks_through_the_panel_relay(plain_kernel: KernelSession) -> None:
    await plain_kernel.ok(_RELAY)
    await plain_kernel.ok(
        "cid = relay('POST', 'conversations', {})[-1]['body']['conversation']['id']\n"
        "relay('POST', f'conversations/{cid}/messages', {'content': 'one'})\n"
        "u1, a1 = branch(cid)\n"
        "pin = relay('PATCH', f'conversations/{cid}/messages/{u1}', {'context': 'pinned'})[-1]\n"
        "bad = relay('PATCH', f'conversations/{cid}/messages/{u1}', {'context': 'x'})[-1]\n"
        "marks = [m['context'] for m in relay('GET', f'conversations/{cid}')[-1]['body']"
        "['messages']]\n"
    )
    state = await plain_kernel.json(
        "[pin['status'], pin['body']['message']['context'], bad['status'], marks]"
    )
    assert state == [200, "pinned", 400, ["pinned", None]]


async def test_showing_the_panel_saves_no_empty_conversation(
    server_kernel: KernelSession, api: Api
) -> None:
    """``%r3nb`` with no conversation yet opens a draft: the first message saves it."""
    run = await server_kernel.ok("%load_ext r3nb\n%r3nb")
    assert run.of_type("execute_result")  # the panel is shown ...
    listed = await api.ok("GET", "conversations")
    assert listed["conversations"] == []  # ... and nothing was created by showing it
    await server_kernel.ok("import r3nb\nr3nb.chat('hello !tokens=2')")
    assert len((await api.ok("GET", "conversations"))["conversations"]) == 1
