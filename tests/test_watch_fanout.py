"""The watch stream's fan-out (``engine/watch.py``) in one process: a frame's bytes are
encoded once and written once per watcher, and idle watchers are kept alive by their
producer's heartbeat, not by a timer each."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from r3nb.engine.store import NewMessage, Store
from r3nb.engine.watch import WatchHub
from r3nb.engine.watch_frames import Encoded, joined


@pytest.mark.fast
def test_a_frame_is_one_write_whose_bytes_are_every_event_in_order() -> None:
    events = joined(
        [
            ("snapshot", Encoded("snapshot", {"messages": [], "revision": 3})),
            ("delta", Encoded("delta", {"message_id": "m", "offset": 0, "text": "hé"})),
        ]
    )
    first, second = (data.sse for _, data in events)
    assert second == b""  # written with the first
    blocks = first.decode().split("\n\n")
    assert blocks[0] == 'event: snapshot\ndata: {"messages":[],"revision":3}'
    delta = {"message_id": "m", "offset": 0, "text": "hé"}
    assert json.loads(blocks[1].split("data: ", 1)[1]) == delta
    assert dict(events[1][1]) == {"message_id": "m", "offset": 0, "text": "hé"}  # still a dict


@pytest.mark.fast
def test_idle_watchers_get_pings_from_their_producer_and_new_messages_once() -> None:
    async def scenario() -> tuple[list[list[str]], int, dict[str, Any]]:
        store = Store(":memory:")
        store.open()
        hub = WatchHub(store, {}, interval=0.05, heartbeat=0.3)
        try:
            cid = (await store.create_conversation("quiet", "me"))["id"]
            seen: list[list[str]] = [[], []]

            async def follow(k: int) -> None:
                async for name, data in hub.watch(cid, 0, {}):
                    seen[k].append(name)
                    if name == "snapshot" and data["messages"]:
                        return

            watchers = [asyncio.ensure_future(follow(k)) for k in range(2)]
            await asyncio.sleep(0.8)  # two heartbeats, nothing else
            beats = hub.watches[cid].beats
            await store.add_messages(cid, [NewMessage("user", "hello", "complete")], "hello")
            await asyncio.wait_for(asyncio.gather(*watchers), 5)
            return seen, beats, hub.report()
        finally:
            await hub.stop()
            store.close()

    seen, beats, report = asyncio.run(scenario())
    assert beats >= 2
    for names in seen:
        assert (names[0], names[-1]) == ("snapshot", "snapshot")
        assert names[1:-1] == ["heartbeat"] * (len(names) - 2)
        assert len(names) - 2 >= 2
    assert report["frames"] >= 1
