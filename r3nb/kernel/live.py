"""Pacing: read an event stream at full speed, hand it on at a few dozen batches a second.

IOPub drops every message (even ``print``) once a kernel sends more than ~1,000 a second
averaged over 3 s, and a reply can arrive at thousands of tokens a second. So a worker
thread drains the stream into a buffer, and the owner (the ``%%chat`` cell's thread, a
background display thread, the comm relay) takes merged batches at its own pace. The
owner waits on a condition with a timeout, so it stays interruptible (the notebook's stop
button raises ``KeyboardInterrupt`` there) and the tail of a burst is never held back.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

Event = tuple[str, Any]
#: Seconds between two batches: fixed, or asked again before each wait (an owner whose
#: every batch costs more as the reply grows paces itself by what it has).
Interval = float | Callable[[], float]


def merge_deltas(events: list[Event]) -> list[Event]:
    """Consecutive deltas of one message become one: offset of the first, texts joined.
    Linear in the batch: a slowly paced owner may take thousands of deltas at once."""
    out: list[Event] = []
    parts: list[str] = []  # texts of the delta being merged, out[-1]
    end = -1  # where that delta's text ends; -1: out[-1] is not a delta being merged

    def close() -> None:
        if len(parts) > 1:
            out[-1] = ("delta", {**out[-1][1], "text": "".join(parts)})

    for name, data in events:
        if (
            name == "delta"
            and end >= 0
            and out[-1][1]["message_id"] == data["message_id"]
            and data["offset"] == end
        ):
            parts.append(data["text"])
            end += len(data["text"])
            continue
        close()
        out.append((name, data))
        parts = [data["text"]] if name == "delta" else []
        end = data["offset"] + len(data["text"]) if name == "delta" else -1
    close()
    return out


class Follower:
    """Drains ``open_events()`` on a daemon thread; ``batches()`` yields merged events."""

    def __init__(self, open_events: Callable[[], Iterator[Event]], name: str = "r3nb-follow"):
        self._open = open_events
        self._cond = threading.Condition()
        self._pending: list[Event] = []
        self._finished = False
        self._ended = False  # the stream's last event ("done") is pending: no more pacing
        self._waiting = False  # the owner waits for data (not for its pacing interval)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        context = contextvars.copy_context()  # keeps the cell's output routing in the thread
        self._thread = threading.Thread(
            target=context.run, args=(self._drain,), name=name, daemon=True
        )

    def start(self) -> Follower:
        self._thread.start()
        return self

    def _drain(self) -> None:
        events = None
        try:
            events = self._open()
            for event in events:
                with self._cond:
                    self._pending.append(event)
                    if event[0] == "done":
                        self._ended = True
                        self._cond.notify()
                    elif self._waiting:  # a pacing owner is not woken per token
                        self._cond.notify()
                if self._stop.is_set():
                    break
        except BaseException as e:
            self._error = e
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
            with self._cond:
                self._finished = True
                self._cond.notify()

    def stop(self) -> None:
        """Stop reading (after the next event); the stream itself goes on server-side."""
        self._stop.set()

    def batches(self, interval: Interval) -> Iterator[list[Event]]:
        """Yield what arrived, merged, at most once per ``interval`` seconds; ends when the
        stream does. The end (``done``) is handed on at once, not after the interval.
        Re-raises whatever ended the stream abnormally."""
        pace = interval if callable(interval) else lambda: interval
        last = 0.0
        while True:
            with self._cond:
                step = pace()
                wait = last + step - time.monotonic()
                if wait > 0 and not (self._ended or self._finished):
                    self._cond.wait(wait)  # pace: even if events are pending
                    continue
                if not self._pending and not self._finished:
                    self._waiting = True
                    try:
                        self._cond.wait(max(step, 0.25))
                    finally:
                        self._waiting = False
                    continue
                batch, self._pending = self._pending, []
                finished = self._finished
            if batch:
                last = time.monotonic()
                yield merge_deltas(batch)
            if finished:
                with self._cond:
                    leftover, self._pending = self._pending, []
                if leftover:
                    yield merge_deltas(leftover)
                if self._error is not None:
                    raise self._error
                return
