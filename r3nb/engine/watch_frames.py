"""What a watcher receives (see ``watch.py``): frames, each encoded once for every
watcher, and the same frame cut for a watcher that holds more text than it assumes.

Kept apart from the producers so the wire shape of a watch stream can be read (and
tested) on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from r3nb.protocol import MessageDict, sse_frame
from r3nb.sse_gzip import deflated

from .streams import Event

#: Of ``CHANGING``, the ones whose change is news beyond the text (a flush changes only
#: ``updated_at``, ``revision`` and the text).
NEWS = ("status", "error", "prompt_tokens", "completion_tokens", "cost", "context")


class Encoded(dict[str, Any]):
    """An event's data with its SSE bytes encoded once for every watcher. A plain dict
    to everything else (the comm relay JSON-encodes it as usual).

    In a published frame the first event's ``sse`` holds the bytes of the whole frame
    and the others' are empty (``joined``): an HTTP watcher writes and flushes once per
    frame (one ``send`` per watcher per tick, not one per event), while a consumer of
    the dicts still sees every event."""

    __slots__ = ("_deflated", "sse")

    def __init__(self, name: str, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.sse = sse_frame(name, data)  # compact JSON: most of a watcher's bytes beyond the text
        self._deflated: bytes | None = None

    def deflated(self) -> bytes:
        """``sse`` compressed once for every watcher that takes gzip (``sse_gzip``)."""
        if self._deflated is None:
            self._deflated = deflated(self.sse)
        return self._deflated


def joined(events: list[tuple[str, Encoded]]) -> list[tuple[str, Encoded]]:
    """``events`` with the whole frame's bytes on the first (see ``Encoded``)."""
    if len(events) > 1:
        whole = b"".join(data.sse for _, data in events)
        for i, (_, data) in enumerate(events):
            data.sse = whole if i == 0 else b""
            data._deflated = None
    return events


@dataclass
class Frame:
    """One tick's changes: shared, immutable once published."""

    gen: int
    revision: int  # the producer's read cursor after this frame (a valid ``since``)
    events: list[tuple[str, Encoded]]
    after: dict[str, int]  # text held of each streaming message after this frame


@dataclass
class Watcher:
    """One open watch stream: where it is, and (only while it is not aligned with the
    producer, e.g. just after joining) the text it holds of each streaming message."""

    gen: int
    since: int
    held: dict[str, int] | None = field(default_factory=dict)


def news(message: MessageDict) -> tuple[Any, ...]:
    return tuple(message[k] for k in NEWS)  # type: ignore[literal-required]


def sliced(frame: Frame, held: dict[str, int]) -> list[Event]:
    """``frame`` for a watcher that holds ``held`` (more text than the frame assumes,
    e.g. after joining): each text cut to start where the watcher's ends."""
    events: list[Event] = []
    for name, data in frame.events:
        if name == "delta":
            mid, offset, text = data["message_id"], data["offset"], data["text"]
            have = held.get(mid, offset)
            held[mid] = max(have, offset + len(text))
            if offset < have < offset + len(text):
                cut = {"message_id": mid, "offset": have, "text": text[have - offset :]}
                events.append((name, cut))
            elif have <= offset:  # (a gap, ``have < offset``, the client reloads over)
                events.append((name, dict(data)))  # a plain dict: not the frame's bytes
            continue
        messages = []
        for message in data["messages"]:
            offset = message.get("offset")
            have = held.get(message["id"])
            if offset is not None and have is not None and have > offset:
                cut = message["content"][have - offset :]
                held[message["id"]] = have + len(cut)
                message = {**message, "content": cut, "offset": have}
            else:
                held[message["id"]] = (offset or 0) + len(message["content"])
            messages.append(message)
        events.append((name, {**data, "messages": messages}))
    return events
