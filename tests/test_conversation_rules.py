"""How a shared conversation behaves when several people use it (issue 13, server side):
one reply at a time, anyone can stop a reply and the message says who, and the model a
conversation uses is stored with it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.client import Api, ApiError
from tests.provider import FakeProvider


async def test_a_second_prompt_while_a_reply_streams_is_refused_saying_why(
    api: Api, provider: FakeProvider, engine: Any
) -> None:
    cid = await api.conversation()
    first = asyncio.create_task(api.send(cid, "!tokens=50 !gate=5"))
    await provider.await_sent(0, 5)
    with pytest.raises(ApiError) as refused:
        await api.send(cid, "a question that would interleave")
    assert refused.value.status == 409
    assert "still being written" in refused.value.body["error"]
    running = refused.value.body["message_id"]
    other = await api.conversation()
    assert (await api.send(other, "!tokens=2"))["done"]["message"]["status"] == "complete"
    provider.release()
    done = (await first)["done"]["message"]
    assert done["id"] == running
    assert done["status"] == "complete"
    snapshot = await api.ok("GET", f"conversations/{cid}")
    assert [m["role"] for m in snapshot["messages"]] == ["user", "assistant"]
    assert (await api.send(cid, "!tokens=2"))["done"]["message"]["status"] == "complete"
    assert engine.counters["streams_started"] == 3


async def test_anyone_who_sees_a_reply_can_stop_it_and_the_message_says_who(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def send() -> dict[str, Any]:
        final: dict[str, Any] = {}
        async for event, data in api.events(
            "POST", f"conversations/{cid}/messages", {"content": "!tokens=50 !gate=3"}
        ):
            if event == "start":
                started.set_result(data["assistant_message"]["id"])
            elif event == "done":
                final = data["message"]
        return final

    sender = asyncio.create_task(send())
    mid = await asyncio.wait_for(started, 30)  # acknowledged, so visible to everyone
    await provider.await_sent(0, 3)
    snapshot = await api.ok("GET", f"conversations/{cid}")
    assert next(m for m in snapshot["messages"] if m["id"] == mid)["status"] == "streaming"
    stopped = (await api.ok("POST", f"messages/{mid}/cancel"))["message"]
    assert stopped["status"] == "cancelled"
    assert stopped["error"].startswith("stopped by ")
    assert (await sender)["status"] == "cancelled"


async def test_the_model_is_remembered_per_conversation(api: Api) -> None:
    cid = await api.conversation()
    header = (await api.ok("GET", f"conversations/{cid}"))["conversation"]
    assert header["model"] is None
    await api.send(cid, "!tokens=2", model="lean")
    header = (await api.ok("GET", f"conversations/{cid}"))["conversation"]
    assert header["model"] == "lean"
    chosen = await api.ok("PATCH", f"conversations/{cid}", {"model": "fake"})
    assert chosen["conversation"]["model"] == "fake"
    listed = await api.ok("GET", "conversations")
    assert next(c for c in listed["conversations"] if c["id"] == cid)["model"] == "fake"
    status, body = await api.call("PATCH", f"conversations/{cid}", {"model": "nope"})
    assert status == 400
    assert "unknown model" in body["error"]
