"""The core promise: real streaming, persisted, observable, cancellable."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.client import Api
from tests.provider import FakeProvider


async def test_full_stream_matches_provider_and_store(api: Api, provider: FakeProvider) -> None:
    cid = await api.conversation()
    result = await api.send(cid, "hello !tokens=50")
    joined = "".join(d["text"] for d in result["deltas"])
    assert joined == provider.replies[0]
    offsets = [d["offset"] for d in result["deltas"]]
    assert offsets == sorted(offsets) and offsets[0] == 0
    done = result["done"]["message"]
    assert done["status"] == "complete", done["error"]
    assert done["content"] == provider.replies[0]
    assert done["completion_tokens"] == 50 and done["prompt_tokens"] > 0
    start = result["start"]
    assert start["user_message"]["content"] == "hello !tokens=50"
    assert start["assistant_message"]["status"] == "streaming"
    snapshot = await api.ok("GET", f"conversations/{cid}")
    stored = {m["role"]: m for m in snapshot["messages"]}
    assert stored["assistant"]["content"] == provider.replies[0]
    assert stored["assistant"]["status"] == "complete"
    assert stored["assistant"]["model"] == "fake"
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
