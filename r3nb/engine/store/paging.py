"""The conversation list's order and its cursors, the same for every backend.

Most recently active first, ties by id; a cursor is the order key of a page's last
conversation, opaque to clients (URL-safe base64 of JSON).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

from r3nb.errors import BadRequest
from r3nb.protocol import ConversationDict


def list_order(c: ConversationDict) -> tuple[float, str]:
    return (-c["updated_at"], c["id"])


def encode_cursor(c: ConversationDict) -> str:
    raw = json.dumps([c["updated_at"], c["id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The order key after which the next page starts; ``BadRequest`` when malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        updated_at, cid = json.loads(raw)
        return (-float(updated_at), str(cid))
    except (ValueError, TypeError) as e:
        raise BadRequest("'cursor' is not a cursor this server gave out") from e


def page(
    conversations: Iterable[ConversationDict], limit: int, cursor: str | None
) -> tuple[list[ConversationDict], str | None]:
    """One page of ``conversations`` in list order after ``cursor``, and the next cursor
    (None on the last page)."""
    everything = sorted(conversations, key=list_order)
    if cursor is not None:
        after = decode_cursor(cursor)
        everything = [c for c in everything if list_order(c) > after]
    chosen = everything[:limit]
    more = len(everything) > limit
    return chosen, (encode_cursor(chosen[-1]) if more and chosen else None)
