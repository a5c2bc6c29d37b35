"""``GET conversations/{cid}/watch``: observers pushed at the snapshot cadence, not polled.

Against a real Jupyter server: every watcher is assembled by a strict client that
applies each text at exactly the offset it holds (a gap or a duplicate fails), so
"only the new part" and "resumes without gaps or duplicates" are checked byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client import Api, ApiError, RawStream, parse_sse
from tests.provider import FakeProvider
from tests.test_wire_contract import EVENT_SHAPES, assert_shape


class Observer:
    """What a watching panel holds, built only from the watch stream's events."""

    def __init__(self) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self.revision = 0
        self.events: list[tuple[str, Any]] = []
        self.text_events = 0  # events that carried new text
        self.changed = asyncio.Event()

    def apply(self, name: str, data: Any) -> None:
        assert_shape(data, EVENT_SHAPES[name], f"watch event {len(self.events)} ({name})")
        self.events.append((name, data))
        if name == "snapshot":
            for message in data["messages"]:
                held = self.messages.get(message["id"])
                if "offset" in message:
                    assert held is not None, f"an update for a message never sent: {message}"
                    assert message["offset"] == len(held["content"]), "gap or duplicate"
                    held.update({**message, "content": held["content"] + message["content"]})
                    self.text_events += bool(message["content"])
                else:
                    self.messages[message["id"]] = dict(message)
            if data["branch"] is not None:
                for mid in set(self.messages) - set(data["branch"]):
                    del self.messages[mid]
            self.revision = data["revision"]
        elif name == "delta":
            held = self.messages[data["message_id"]]
            assert data["offset"] == len(held["content"]), "gap or duplicate"
            assert data["text"], "an empty delta"
            held["content"] += data["text"]
            self.text_events += 1
        self.changed.set()

    def held(self) -> dict[str, int]:
        return {
            mid: len(m["content"]) for mid, m in self.messages.items() if m["status"] == "streaming"
        }

    async def until(self, predicate: Any, timeout: float = 15) -> None:
        async def wait() -> None:
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)


async def _watch(
    client: httpx.AsyncClient, cid: str, since: int, held: dict[str, int] | None = None
) -> AsyncIterator[tuple[str, Any]]:
    params: dict[str, Any] = {"since": since}
    if held:
        params["from"] = ",".join(f"{mid}:{n}" for mid, n in held.items())
    async with client.stream("GET", f"conversations/{cid}/watch", params=params) as r:
        if r.status_code >= 300:
            raise ApiError(r.status_code, (await r.aread()).decode(), r.headers)
        assert r.headers["content-type"].startswith("text/event-stream")
        async for event in parse_sse(r.aiter_lines()):
            yield event


def _follow(
    client: httpx.AsyncClient,
    observer: Observer,
    cid: str,
    since: int,
    held: dict[str, int] | None = None,
) -> asyncio.Task[None]:
    async def run() -> None:
        async for name, data in _watch(client, cid, since, held):
            observer.apply(name, data)

    return asyncio.ensure_future(run())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _reply(observer: Observer) -> dict[str, Any] | None:
    return next((m for m in observer.messages.values() if m["role"] == "assistant"), None)


def _complete(observer: Observer) -> bool:
    reply = _reply(observer)
    return reply is not None and reply["status"] == "complete"


async def test_watcher_gets_new_messages_only_new_text_and_status_at_the_cadence(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    start = await api.ok("GET", f"conversations/{cid}")
    observer = Observer()
    task = _follow(api.client, observer, cid, start["revision"])
    try:
        await observer.until(lambda o: o.events)  # the catch-up: nothing new yet
        assert observer.events[0][1]["messages"] == []
        result = await api.send(cid, "!tokens=40 !delay=0.03")  # ~1.2 s: several ticks
        await observer.until(_complete)
    finally:
        await _stop(task)
    reply = _reply(observer)
    assert reply is not None
    assert reply["content"] == result["done"]["message"]["content"] == provider.replies[0]
    assert [m["role"] for m in observer.messages.values()] == ["user", "assistant"]
    # Pushed at the snapshot cadence (0.3 s), not once at the end and not per token.
    assert 2 <= observer.text_events < 40, observer.text_events
    updates = [m for name, data in observer.events if name == "snapshot" for m in data["messages"]]
    assert updates[-1]["status"] == "complete"
    assert "offset" in updates[-1], "the end is a partial update, not the whole text again"


async def test_watcher_sees_a_deleted_turn_leave_and_a_deleted_conversation_end_it(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    first = await api.send(cid, "one")
    await api.send(cid, "two")
    start = await api.ok("GET", f"conversations/{cid}")
    observer = Observer()
    for m in start["messages"]:
        observer.messages[m["id"]] = dict(m)
    task = _follow(api.client, observer, cid, start["revision"])
    prompt = first["start"]["user_message"]["id"]
    await observer.until(lambda o: o.events)
    await api.ok("DELETE", f"conversations/{cid}/messages/{prompt}")
    await observer.until(lambda o: prompt not in o.messages)
    assert len(observer.messages) == 2  # the second turn stays
    await api.ok("DELETE", f"conversations/{cid}")
    await asyncio.wait_for(task, 10)  # the stream ends by itself
    assert observer.events[-1][0] == "error"
    assert "deleted" in observer.events[-1][1]["error"]


async def test_reconnecting_with_since_and_from_resumes_without_gap_or_duplicate(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    start = await api.ok("GET", f"conversations/{cid}")
    observer = Observer()
    task = _follow(api.client, observer, cid, start["revision"])
    sender = asyncio.ensure_future(api.send(cid, "!tokens=30 !gate=10"))
    try:
        await provider.await_sent(0, 10)
        await observer.until(lambda o: (r := _reply(o)) is not None and len(r["content"]) > 0)
    finally:
        await _stop(task)  # the panel's connection drops mid-reply
    held = observer.held()
    assert held
    assert 0 < next(iter(held.values())) < len(provider.replies[0])
    provider.release()
    again = _follow(api.client, observer, cid, observer.revision, held)
    try:
        await sender
        await observer.until(_complete)
    finally:
        await _stop(again)
    reply = _reply(observer)
    assert reply is not None
    assert reply["content"] == provider.replies[0]


async def test_many_watchers_cost_one_store_read_per_tick_not_one_each(
    api: Api, provider: FakeProvider, engine: Any
) -> None:
    watchers = 200
    cid = await api.conversation()
    start = await api.ok("GET", f"conversations/{cid}")
    limits = httpx.Limits(max_connections=watchers + 10, max_keepalive_connections=0)
    client = httpx.AsyncClient(
        base_url=api.base, headers=dict(api.client.headers), limits=limits, timeout=30
    )
    observers = [Observer() for _ in range(watchers)]
    tasks = [_follow(client, o, cid, start["revision"]) for o in observers]
    try:
        for o in observers:
            await o.until(lambda o: o.events)  # every watcher joined (catch-up received)
        before = dict(engine.watches.counters)
        assert engine.watches.report()["watchers"] == watchers
        await api.send(cid, "!tokens=40 !delay=0.03")
        for o in observers:
            await o.until(_complete)
        after = dict(engine.watches.counters)
    finally:
        for task in tasks:
            await _stop(task)
        await client.aclose()
    ticks = after["ticks"] - before["ticks"]
    assert ticks >= 3
    # One read of the conversation per tick, whatever the number of watchers (a poll
    # per watcher would be 200 a tick), and no watcher had to catch up on its own.
    assert after["store_reads"] - before["store_reads"] == ticks
    assert after.get("catch_ups", 0) == before.get("catch_ups", 0)
    texts = {(r := _reply(o)) and r["content"] for o in observers}
    assert texts == {provider.replies[0]}


async def _watch_raw(
    client: httpx.AsyncClient, cid: str, since: int, encoding: str, observer: Observer
) -> RawStream:
    raw = RawStream()
    path = f"conversations/{cid}/watch"
    async for name, data in raw.events(client, path, encoding, since=since):
        observer.apply(name, data)
    return raw


async def test_a_watcher_that_takes_gzip_gets_each_frame_compressed_as_it_arrives(
    api: Api, provider: FakeProvider
) -> None:
    """Issue 16.3: a watcher's bytes ≤ 1.2× the reply's text. The frames' rows and
    framing cost a ~6 KB reply ~1.37× uncompressed; a client that accepts gzip (every
    browser) gets the same events as one that does not, each decodable the moment it
    arrives, in one valid gzip member that ends with the stream."""
    text = Path(__file__).parent.parent.joinpath("README.md").read_text()[:6000]  # prose
    provider.scenario.text = text
    cid = await api.conversation()
    start = (await api.ok("GET", f"conversations/{cid}"))["revision"]
    plain, packed = Observer(), Observer()
    watches = [
        asyncio.ensure_future(_watch_raw(api.client, cid, start, "identity", plain)),
        asyncio.ensure_future(_watch_raw(api.client, cid, start, "gzip, deflate", packed)),
    ]
    await plain.until(lambda o: o.events)
    await packed.until(lambda o: o.events)
    await api.send(cid, "!delay=0.001")  # ~1,000 chunks over ~1.5 s: several frames
    await packed.until(_complete)
    await plain.until(_complete)
    await api.ok("DELETE", f"conversations/{cid}")  # ends both streams
    plain_raw, packed_raw = await asyncio.wait_for(asyncio.gather(*watches), 15)
    headers, wire = packed_raw.headers, bytes(packed_raw.wire)
    assert headers is not None
    assert plain_raw.headers is not None
    reply = _reply(packed)
    assert reply is not None
    assert reply["content"] == text
    assert packed.events == plain.events  # the same events, byte for byte once decoded
    assert packed.text_events >= 2, "the text came in more than one frame, each on arrival"
    assert headers["content-encoding"] == "gzip"
    assert "accept-encoding" in headers["vary"].lower()
    assert "content-encoding" not in plain_raw.headers
    assert gzip.decompress(wire) == plain_raw.wire  # CRC-32 and length check out
    ratio = len(wire) / len(text.encode())
    assert ratio <= 1.2, f"{len(wire):,} bytes on the wire for {len(text.encode()):,} of text"


@pytest.mark.parametrize(
    ("query", "status"),
    [({"since": "x"}, 400), ({"from": "nope"}, 400), ({}, 404)],
)
async def test_bad_watch_requests_are_json_4xx(
    api: Api, query: dict[str, str], status: int
) -> None:
    cid = await api.conversation() if status != 404 else "0123456789abcdef"
    code, body = await api.call("GET", f"conversations/{cid}/watch", **query)
    assert code == status
    assert body["error"]
