"""``GET conversations/{cid}?since=REV``: what a polling observer has not seen yet.

Most polls' whole payload is the text a streaming reply gained, so this is what keeps
an observer's bytes near the text's: a message the observer holds is sent as an update
(the fields that change while it streams, and the text after what it holds), the
header only when it changed.
"""

from __future__ import annotations

from r3nb.protocol import MessageUpdate, Snapshot, SnapshotMessage

from .store import SnapshotParts

#: Fields of a message that change while it streams: those the wire declares for an
#: update (``protocol.MessageUpdate``), but the text and offset.
CHANGING = tuple(k for k in MessageUpdate.__annotations__ if k not in ("content", "offset"))


def trimmed(found: SnapshotParts, since: int, offsets: dict[str, int]) -> Snapshot:
    """The snapshot for an observer that has revision ``since`` and, of each message
    in ``offsets``, the text up to its offset."""
    conversation, messages, revision, streaming, branch = found
    out: list[SnapshotMessage] = []
    for message in messages:
        held = offsets.get(message["id"])
        if held is not None and 0 <= held <= len(message["content"]):
            update = {k: message[k] for k in CHANGING}  # type: ignore[literal-required]
            update["content"] = message["content"][held:]
            update["offset"] = held
            out.append(update)  # type: ignore[arg-type]
        else:
            out.append(message)  # type: ignore[arg-type]
    # The header only when it changed (or on a first load): it is ~250 bytes. The
    # branch changes only with it (every branch change is a new header revision).
    changed = since == 0 or conversation["revision"] > since
    return {
        "conversation": conversation if changed else None,
        "branch": branch if changed else None,
        "messages": out,
        "revision": revision,
        "streaming": streaming,
    }
