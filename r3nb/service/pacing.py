"""Fewer, larger writes for the live stream of a reply: deltas coalesced at a small interval.

A reply's sender follows it token by token (``StreamHub.follow``): at 50 tokens a second
that is 50 writes and flushes a second in the service, as many reads and writes in the
relay and in the proxy, per stream. The follower *pulls* (each pull takes all the text
that arrived since the last), so coalescing costs nothing but a pause: after writing a
delta, wait ``interval`` before pulling again, and everything that arrived meanwhile
goes out as one delta. The first delta of a burst is never held back (time to first
token is unchanged); the rest arrive at most ``interval`` later, the same order of
cadence at which the kernel's relay hands deltas on (``kernel/live.py``). Watch frames
come at the snapshot cadence already and are passed through untouched.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from r3nb.engine.streams import Event
from r3nb.engine.watch_frames import Encoded

#: Seconds between two deltas of one reply's live stream (0: one write per delta).
DEFAULT_INTERVAL = 0.04
#: The service's environment may change it (``0`` turns coalescing off).
ENV_INTERVAL = "R3NB_SERVICE_DELTA_INTERVAL"


def interval_from_environment() -> float:
    raw = os.environ.get(ENV_INTERVAL, "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        raise ValueError(f"{ENV_INTERVAL} must be a number of seconds, not {raw!r}") from None
    if not 0 <= value <= 1:
        raise ValueError(f"{ENV_INTERVAL} must be between 0 and 1 second, not {value}")
    return value


async def paced(events: AsyncIterator[Event], interval: float) -> AsyncIterator[Event]:
    """``events``, pausing ``interval`` after each live delta before pulling the next."""
    try:
        async for name, data in events:
            yield name, data
            if interval and name == "delta" and not isinstance(data, Encoded):
                await asyncio.sleep(interval)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
