"""The service's live stream of a reply, coalesced (``r3nb/service/pacing.py``): whatever
arrives while it pauses goes out as one delta, nothing is lost or reordered, the first
delta is not held back, and watch frames pass untouched."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from r3nb.engine.streams import LiveStream, StreamHub
from r3nb.engine.watch_frames import Encoded
from r3nb.service.pacing import paced


def _live(hub: StreamHub) -> LiveStream:
    message: Any = {"id": "m1", "conversation_id": "c1", "author": "alice"}
    stream = LiveStream(message, None, 1.0)  # type: ignore[arg-type]
    hub.live["m1"] = stream
    return stream


async def _produce(stream: LiveStream, tokens: int, every: float) -> None:
    for i in range(tokens):
        stream.append(f"t{i} ")
        await asyncio.sleep(every)  # the provider's pace
    stream.final = {"id": "m1", "status": "complete"}  # type: ignore[typeddict-item]
    stream.notify()


async def _follow(
    interval: float, tokens: int = 40, every: float = 0.005
) -> tuple[list[Any], float]:
    hub = StreamHub(None, None)  # type: ignore[arg-type]
    stream = _live(hub)
    producer = asyncio.create_task(_produce(stream, tokens, every))
    started = time.monotonic()
    events = [e async for e in paced(hub.follow("m1", 0, 30), interval)]
    await producer
    return events, time.monotonic() - started


async def test_deltas_arriving_during_the_pause_go_out_as_one() -> None:
    events, took = await _follow(0.04)
    deltas = [data for name, data in events if name == "delta"]
    assert "".join(d["text"] for d in deltas) == "".join(f"t{i} " for i in range(40))
    offsets = [d["offset"] for d in deltas]
    assert offsets == sorted(offsets)
    assert offsets[0] == 0
    assert events[-1][0] == "done"
    # At most one delta per 40 ms pause (plus the first): ~0.2 s of tokens at 200/s.
    assert len(deltas) <= took / 0.04 + 2, (len(deltas), took)
    assert len(deltas) < 40


async def test_watch_frames_are_not_paused() -> None:
    async def frames() -> Any:
        for i in range(5):
            yield "delta", Encoded("delta", {"message_id": "m", "offset": i, "text": "x"})

    started = time.monotonic()
    out = [e async for e in paced(frames(), 0.5)]
    assert len(out) == 5
    assert time.monotonic() - started < 0.5  # five pauses would take 2.5 s
