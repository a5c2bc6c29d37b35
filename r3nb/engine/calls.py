"""What a route of the transport-free API (``api.py``) receives and returns, and the
checks that read its input: one place, so the tornado handler, the hub service and the
comm relay (embedded mode) build the same ``Call`` and send the same ``Reply``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from r3nb.errors import BadRequest, NotFound
from r3nb.protocol import ID_PATTERN

from . import images
from .caller import Caller
from .images import Image
from .streams import Event


@dataclass
class Call:
    method: str
    path: str  # relative to the API root, without query
    query: dict[str, str]
    body: Any
    caller: Caller
    params: dict[str, str] = field(default_factory=dict)  # filled by ``dispatch``


@dataclass
class JsonReply:
    body: Any
    status: int = 200


@dataclass
class StreamReply:
    """An event stream: ``start``, ``delta``…, ``done`` (and ``heartbeat`` when quiet).
    ``compressible``: sent gzip-encoded to a client that accepts it (a watch: its frames
    are large and shared; a reply's per-token events are small and latency-bound)."""

    events: AsyncIterator[Event]
    compressible: bool = False


@dataclass
class TextReply:
    """A document that is not JSON (a CSV report): its text, type and a file name a
    browser saves it under."""

    text: str
    content_type: str
    filename: str


@dataclass
class BytesReply:
    """Bytes shown in the page (an attached image for its chip), of a checked type."""

    data: bytes
    content_type: str


Reply = JsonReply | StreamReply | TextReply | BytesReply

# --- input validation ----------------------------------------------------------------

MAX_SHORT = 200


def object_body(call: Call) -> dict[str, Any]:
    if call.body is None:
        return {}
    if not isinstance(call.body, dict):
        raise BadRequest("the request body must be a JSON object")
    return call.body


def optional_str(body: dict[str, Any], key: str, max_len: int = MAX_SHORT) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    if len(value) > max_len:
        raise BadRequest(f"'{key}' must be at most {max_len} characters")
    return value


def attachments(body: dict[str, Any]) -> tuple[list[dict[str, str]], list[Image]]:
    """The text attachments, and the images decoded, checked and bounded (``images.py``)."""
    value = body.get("attachments")
    if value is None:
        return [], []
    if not isinstance(value, list) or len(value) > 20:
        raise BadRequest("'attachments' must be a list of at most 20 objects")
    uploads = [item for item in value if images.is_upload(item)]
    images.check_count(uploads)
    out = []
    for item in value:
        if images.is_upload(item):
            continue
        if not isinstance(item, dict) or not all(
            isinstance(item.get(k), str) for k in ("kind", "name", "summary")
        ):
            raise BadRequest("each attachment needs string fields 'kind', 'name', 'summary'")
        out.append({k: item[k] for k in ("kind", "name", "summary")})
    return out, [images.decode(item) for item in uploads]


def int_arg(call: Call, key: str, default: int) -> int:
    raw = call.query.get(key)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\d{1,18}", raw):
        raise BadRequest(f"'{key}' must be a non-negative integer")
    return int(raw)


def offsets(call: Call) -> dict[str, int]:
    """``from=MID:N,MID2:M`` → {MID: N, MID2: M}."""
    raw = call.query.get("from") or ""
    offsets: dict[str, int] = {}
    for item in filter(None, raw.split(",")):
        mid, _, n = item.partition(":")
        if not ID_PATTERN.match(mid) or not re.fullmatch(r"\d{1,18}", n):
            raise BadRequest("'from' must look like MESSAGE_ID:OFFSET[,MESSAGE_ID:OFFSET...]")
        offsets[mid] = int(n)
    return offsets


def route_id(call: Call, key: str, what: str) -> str:
    value = call.params[key]
    if not ID_PATTERN.match(value):
        raise NotFound(f"no {what} {value[:40]!r}")
    return value
