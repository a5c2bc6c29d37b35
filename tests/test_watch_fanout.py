"""The watch stream's fan-out (``engine/watch.py``) in one process: a frame's bytes are
encoded once and written once per watcher, and idle watchers are kept alive by their
producer's heartbeat, not by a timer each."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from typing import Any

import pytest

from r3nb.engine.store import NewMessage, Store
from r3nb.engine.watch import WatchHub
from r3nb.engine.watch_frames import Encoded, joined
from r3nb.sse_gzip import GzipBody, accepts_gzip


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


@pytest.mark.fast
def test_a_frame_compressed_once_decodes_after_any_history_and_ends_a_valid_gzip() -> None:
    """One shared segment per frame (``sse_gzip``): two watchers that joined at different
    points each decode it the moment it arrives, and each stream is one gzip member."""
    frames = [
        Encoded("delta", {"message_id": "m", "offset": i, "text": "héllo " * i})
        for i in range(1, 6)
    ]
    assert frames[0].deflated() is frames[0].deflated()  # made once, for every watcher
    early, late = GzipBody(), GzipBody()
    streams = {id(early): bytearray(), id(late): bytearray()}
    decoders = {id(early): zlib.decompressobj(31), id(late): zlib.decompressobj(31)}
    for i, frame in enumerate(frames):
        for body in (early, late) if i >= 2 else (early,):
            piece = body.segment(frame.sse, frame.deflated())
            streams[id(body)] += piece
            assert decoders[id(body)].decompress(piece) == frame.sse  # all of it, now
    for body, first in ((early, 0), (late, 2)):
        whole = bytes(streams[id(body)]) + body.end()
        assert gzip.decompress(whole) == b"".join(f.sse for f in frames[first:])
    # A stream that sent nothing was never declared gzip: it ends with nothing (before,
    # it wrote a gzip header and trailer into a body no Content-Encoding announced).
    assert GzipBody().end() == b""


@pytest.mark.fast
@pytest.mark.parametrize(
    ("header", "takes"),
    [
        ("gzip, deflate, br, zstd", True),  # a browser
        ("gzip;q=0.5, identity", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("br;q=1, *;q=0.1", True),
        ("gzip;q=0, *", False),
        ("*;q=0", False),
        ("identity", False),
        ("deflate", False),
        ("gzip;q=nonsense", False),
        ("", False),
        (None, False),
    ],
)
def test_gzip_only_for_an_accept_encoding_that_takes_it(header: str | None, takes: bool) -> None:
    assert accepts_gzip(header) is takes
