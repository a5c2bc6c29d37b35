"""The core promise: real streaming, persisted, observable, cancellable."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.client import Api, parse_sse
from tests.provider import FakeProvider


async def test_full_stream_matches_provider_and_store(
    api: Api, provider: FakeProvider, model: str
) -> None:
    cid = await api.conversation()
    result = await api.send(cid, "hello !tokens=50", model=model)
    joined = "".join(d["text"] for d in result["deltas"])
    assert joined == provider.replies[0]
    offsets = [d["offset"] for d in result["deltas"]]
    assert offsets == sorted(offsets)
    assert offsets[0] == 0
    done = result["done"]["message"]
    assert done["status"] == "complete", done["error"]
    assert done["content"] == provider.replies[0]
    assert done["completion_tokens"] == 50
    assert done["prompt_tokens"] > 0
    start = result["start"]
    assert start["user_message"]["content"] == "hello !tokens=50"
    assert start["assistant_message"]["status"] == "streaming"
    snapshot = await api.ok("GET", f"conversations/{cid}")
    stored = {m["role"]: m for m in snapshot["messages"]}
    assert stored["assistant"]["content"] == provider.replies[0]
    assert stored["assistant"]["status"] == "complete"
    assert stored["assistant"]["model"] == model
    assert stored["user"]["status"] == "complete"
    assert snapshot["streaming"] is False


async def test_context_of_earlier_turns_reaches_the_provider(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    await api.send(cid, "first question !tokens=3")
    await api.send(cid, "second question !tokens=3")
    messages = provider.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == provider.replies[0]


async def test_demo_model_streams_offline(api: Api, monkeypatch: Any) -> None:
    monkeypatch.setenv("R3NB_DEMO_DELAY", "0.003")
    cid = await api.conversation()
    result = await api.send(cid, "how do I configure a provider?", model="demo")
    text = "".join(d["text"] for d in result["deltas"])
    assert result["done"]["message"]["status"] == "complete"
    assert "c.R3nbApp.models" in text
    assert len(result["deltas"]) > 10  # word by word, not one blob


async def _snapshot_until(api: Api, cid: str, predicate: Any, timeout: float = 15) -> Any:
    """Poll the observers' snapshot route (that is how observers learn) until true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        snap = await api.ok("GET", f"conversations/{cid}")
        if predicate(snap):
            return snap
        assert asyncio.get_running_loop().time() < deadline, snap
        await asyncio.sleep(0.05)


def _assistant(snapshot: dict[str, Any]) -> dict[str, Any]:
    return next(m for m in snapshot["messages"] if m["role"] == "assistant")


async def test_observer_sees_partial_text_at_flush_cadence(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    sender = asyncio.ensure_future(api.send(cid, "!tokens=40 !delay=0.05"))  # ~2 s
    seen: list[str] = []
    while True:
        snap = await api.ok("GET", f"conversations/{cid}")
        messages = [m for m in snap["messages"] if m["role"] == "assistant"]
        if messages and messages[0]["status"] != "streaming":
            break
        if messages and messages[0]["content"] and messages[0]["content"] not in seen:
            assert snap["streaming"] is True
            seen.append(messages[0]["content"])
        await asyncio.sleep(0.03)  # an observer polling much faster than the flushes
    result = await sender
    final = provider.replies[0]
    assert result["done"]["message"]["content"] == final
    assert all(final.startswith(partial) for partial in seen)
    # The text grew in several steps, at the flush cadence (0.3 s), not per token (40).
    assert 3 <= len(seen) <= 2.0 / 0.3 + 3, [len(s) for s in seen]
    assert [len(s) for s in seen] == sorted(len(s) for s in seen)


async def test_snapshot_since_and_from_send_only_new_text(api: Api, provider: FakeProvider) -> None:
    cid = await api.conversation()
    sender = asyncio.ensure_future(api.send(cid, "!tokens=30 !gate=10"))
    await provider.await_sent(0, 10)
    first = await _snapshot_until(api, cid, lambda s: any(
        m["role"] == "assistant" and m["content"] for m in s["messages"]))  # fmt: skip
    held = _assistant(first)
    provider.release()
    await sender
    rest = await api.ok(
        "GET", f"conversations/{cid}", since=first["revision"],
        **{"from": f"{held['id']}:{len(held['content'])}"},
    )  # fmt: skip
    assert [m["id"] for m in rest["messages"]] == [held["id"]]  # the user message is old news
    update = rest["messages"][0]
    assert rest["conversation"] is None  # unchanged since `since`: not resent
    assert "author" not in update  # only what changes while streaming: observers merge
    assert update["offset"] == len(held["content"])
    assert held["content"] + update["content"] == provider.replies[0]
    assert update["status"] == "complete"
    nothing = await api.ok("GET", f"conversations/{cid}", since=rest["revision"])
    assert nothing["messages"] == []


async def test_a_reply_held_with_no_text_yet_comes_back_as_an_update(
    api: Api, provider: FakeProvider
) -> None:
    """The panel names every streaming message it holds in ``from``, one with no text
    yet as ``MID:0`` (its first look often comes before the first flush). The contract:
    a message named in ``from`` comes back as a partial update. It came back as the
    whole row instead, on the poll and on the watch stream's first frame: ~500 bytes
    of fields resent to each observer of each reply."""
    cid = await api.conversation()
    sender = asyncio.ensure_future(api.send(cid, "!tokens=20 !gate=0"))
    await provider.await_sent(0, 0)  # the request is at the provider's gate
    empty = await _snapshot_until(
        api, cid, lambda s: any(m["role"] == "assistant" for m in s["messages"])
    )
    held = _assistant(empty)
    assert (held["status"], held["content"]) == ("streaming", "")
    provider.release()
    await sender
    named = {"since": empty["revision"], "from": f"{held['id']}:0"}
    update = _assistant_update(await api.ok("GET", f"conversations/{cid}", **named))
    assert (update["offset"], update["content"]) == (0, provider.replies[0])
    assert "author" not in update  # only the fields that change while streaming
    async with api.client.stream("GET", f"conversations/{cid}/watch", params=named) as r:
        first = await anext(parse_sse(r.aiter_lines()))
    assert first[0] == "snapshot"
    update = _assistant_update(first[1])
    assert (update["offset"], update["content"]) == (0, provider.replies[0])
    assert "author" not in update


def _assistant_update(snapshot: dict[str, Any]) -> dict[str, Any]:
    [update] = snapshot["messages"]
    return dict(update)


async def test_db_writes_follow_flush_cadence_not_tokens(
    api: Api, provider: FakeProvider, engine: Any
) -> None:
    cid = await api.conversation()
    for tokens, delay in ((200, 0.005), (2000, 0.0005)):  # ~1 s each, 10x the tokens
        started = time.monotonic()
        result = await api.send(cid, f"!tokens={tokens} !delay={delay}")
        took = time.monotonic() - started  # longer than 1 s on a loaded machine
        mid = result["done"]["message"]["id"]
        assert result["done"]["message"]["completion_tokens"] == tokens
        writes = engine.store.write_counts[mid]
        # insert + one flush per 0.3 s of the reply + the final write: never per token
        assert 2 <= writes <= took / 0.3 + 3, (tokens, writes, took)


async def test_stream_goes_on_when_the_sender_disconnects(api: Api, provider: FakeProvider) -> None:
    cid = await api.conversation()
    async for event, _data in api.events(
        "POST", f"conversations/{cid}/messages", {"content": "!tokens=30 !delay=0.02"}
    ):
        if event == "delta":
            break  # leaving the context manager drops the connection mid-stream
    snap = await _snapshot_until(api, cid, lambda s: _assistant(s)["status"] != "streaming")
    assert _assistant(snap)["status"] == "complete"
    assert _assistant(snap)["content"] == provider.replies[0]


async def test_cancel_keeps_partial_text(api: Api, provider: FakeProvider, model: str) -> None:
    cid = await api.conversation()
    sender = asyncio.ensure_future(api.send(cid, "!tokens=50 !gate=5", model=model))
    await provider.await_sent(0, 5)
    snap = await _snapshot_until(api, cid, lambda s: len(s["messages"]) == 2)
    mid = _assistant(snap)["id"]
    # wait until the sender has the 5 chunks too, so "partial" is well defined
    cancelled = (await api.ok("POST", f"messages/{mid}/cancel"))["message"]
    result = await sender
    assert cancelled["status"] == "cancelled"
    assert cancelled["content"] == provider.sent[0] == "".join(d["text"] for d in result["deltas"])
    assert cancelled["content"]
    assert cancelled["content"] != provider.replies[0]
    assert cancelled["error"].startswith("stopped by ")
    assert result["done"]["message"]["status"] == "cancelled"
    again = (await api.ok("POST", f"messages/{mid}/cancel"))["message"]
    assert again["status"] == "cancelled"  # idempotent
    provider.release()


async def test_follow_a_stream_from_an_offset_replays_then_goes_live(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    sender = asyncio.ensure_future(api.send(cid, "!tokens=20 !gate=8"))
    await provider.await_sent(0, 8)
    snap = await _snapshot_until(api, cid, lambda s: len(s["messages"]) == 2)
    mid = _assistant(snap)["id"]
    events = []
    async for event, data in api.events("GET", f"messages/{mid}/stream", offset=3):
        events.append((event, data))
        if event == "delta" and len(events) == 2:
            provider.release()
    await sender
    assert events[0][0] == "start"
    deltas = [d for e, d in events if e == "delta"]
    assert deltas[0]["offset"] == 3
    assert "".join(d["text"] for d in deltas) == provider.replies[0][3:]
    assert events[-1][0] == "done"
    assert events[-1][1]["message"]["status"] == "complete"


async def test_twenty_concurrent_streams_are_byte_exact(
    api: Api, provider: FakeProvider, model: str
) -> None:
    cids = [await api.conversation(f"c{i}") for i in range(20)]
    results = await asyncio.gather(
        *(
            api.send(cid, f"stream {i} !tokens={40 + i} !delay=0.005", model=model)
            for i, cid in enumerate(cids)
        )
    )
    for i, result in enumerate(results):
        expected = "".join(d["text"] for d in result["deltas"])
        message = result["done"]["message"]
        assert message["status"] == "complete"
        assert message["content"] == expected
        assert message["completion_tokens"] == 40 + i
        stored = _assistant(await api.ok("GET", f"conversations/{cids[i]}"))
        assert stored["content"] == expected
    assert sorted(provider.replies) == sorted(r["done"]["message"]["content"] for r in results)
