"""``GET conversations/{cid}?since=REV``: what a polling observer has not seen yet.

Most polls' whole payload is the text a streaming reply gained, so this is what keeps
an observer's bytes near the text's: a message the observer holds is sent as an update
(the fields that change while it streams, and the text after what it holds), the
header only when it changed.
"""

from __future__ import annotations

from typing import Any

from r3nb.protocol import MessageDict, MessageUpdate, Snapshot

from .store import SnapshotParts

#: Fields of a message that change while it streams: those the wire declares for an
#: update (``protocol.MessageUpdate``), but the text and offset.
CHANGING = tuple(k for k in MessageUpdate.__annotations__ if k not in ("content", "offset"))


def trimmed(found: SnapshotParts, since: int, offsets: dict[str, int]) -> Snapshot:
    """The snapshot for an observer that has revision ``since`` and, of each message
    in ``offsets``, the text up to its offset."""
    conversation, messages, revision, streaming, branch = found
    out = [
        for_observer(message, message["content"], offsets.get(message["id"]))
        for message in messages
    ]
    # The header only when it changed (or on a first load): it is ~250 bytes. The
    # branch changes only with it (every branch change is a new header revision).
    changed = since == 0 or conversation["revision"] > since
    return {
        "conversation": conversation if changed else None,
        "branch": branch if changed else None,
        "messages": out,  # type: ignore[typeddict-item]
        "revision": revision,
        "streaming": streaming,
    }


def for_observer(message: MessageDict, text: str, held: int | None) -> dict[str, Any]:
    """``message``, whose text is ``text``, for an observer that holds its first
    ``held`` code points (None: not held): a partial update when that is a prefix of
    ``text``, an empty one included, else the whole row. The poll, a watch's first
    frame and each tick of a watch all answer this way."""
    if held is not None and 0 <= held <= len(text):
        return update(message, text[held:], held)
    return {**message, "content": text}


def update(message: MessageDict, text: str, offset: int) -> dict[str, Any]:
    """``message`` as a partial update: the fields that change while it streams and
    its text from ``offset`` on."""
    fields: dict[str, Any] = {k: message[k] for k in CHANGING}  # type: ignore[literal-required]
    return {**fields, "content": text, "offset": offset}
