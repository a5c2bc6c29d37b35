"""The HTTP contract as one transport-free route table.

The tornado handler (server mode) and the comm relay (embedded mode) both parse their
input into a ``Call`` and hand it to ``dispatch``; validation and replies therefore
cannot differ between the two. Each route function validates its input and calls the
engine; errors are ``R3nbError`` subclasses that the transport turns into JSON.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from r3nb.errors import BadRequest, NotFound, R3nbError
from r3nb.protocol import ID_PATTERN, SSE_HEARTBEAT_SECONDS, MessageDict

from . import images, reports, usage
from .context import MARKS
from .core import Caller, Engine
from .images import Image
from .streams import Event


class MethodNotAllowed(R3nbError):
    status = 405


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
    """An event stream: ``start``, ``delta``…, ``done`` (and ``heartbeat`` when quiet)."""

    events: AsyncIterator[Event]


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
RouteFn = Callable[[Engine, Call], Awaitable[Reply]]

# --- input validation ----------------------------------------------------------------

_MAX_SHORT = 200


def _object_body(call: Call) -> dict[str, Any]:
    if call.body is None:
        return {}
    if not isinstance(call.body, dict):
        raise BadRequest("the request body must be a JSON object")
    return call.body


def _optional_str(body: dict[str, Any], key: str, max_len: int = _MAX_SHORT) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    if len(value) > max_len:
        raise BadRequest(f"'{key}' must be at most {max_len} characters")
    return value


def _attachments(body: dict[str, Any]) -> tuple[list[dict[str, str]], list[Image]]:
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


def _int_arg(call: Call, key: str, default: int) -> int:
    raw = call.query.get(key)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\d{1,18}", raw):
        raise BadRequest(f"'{key}' must be a non-negative integer")
    return int(raw)


def _offsets(call: Call) -> dict[str, int]:
    """``from=MID:N,MID2:M`` → {MID: N, MID2: M}."""
    raw = call.query.get("from") or ""
    offsets: dict[str, int] = {}
    for item in filter(None, raw.split(",")):
        mid, _, n = item.partition(":")
        if not ID_PATTERN.match(mid) or not re.fullmatch(r"\d{1,18}", n):
            raise BadRequest("'from' must look like MESSAGE_ID:OFFSET[,MESSAGE_ID:OFFSET...]")
        offsets[mid] = int(n)
    return offsets


def _id(call: Call, key: str, what: str) -> str:
    value = call.params[key]
    if not ID_PATTERN.match(value):
        raise NotFound(f"no {what} {value[:40]!r}")
    return value


# --- routes --------------------------------------------------------------------------


async def get_health(engine: Engine, call: Call) -> Reply:
    return JsonReply(await engine.health())


async def get_models(engine: Engine, call: Call) -> Reply:
    return JsonReply(engine.models_report(call.caller))


async def reload_models(engine: Engine, call: Call) -> Reply:
    """Read the models file now (the watcher would within seconds). Open to whoever may
    write to r3nb, like every other change: it applies only what the file says."""
    return JsonReply(await engine.reload_models(call.caller))


#: Conversations per page of ``GET conversations``: default and most a client may ask.
LIST_PAGE, LIST_PAGE_MAX = 100, 500


async def list_conversations(engine: Engine, call: Call) -> Reply:
    limit = _int_arg(call, "limit", LIST_PAGE)
    if not 1 <= limit <= LIST_PAGE_MAX:
        raise BadRequest(f"'limit' must be between 1 and {LIST_PAGE_MAX}")
    query = (call.query.get("q") or "").strip()
    if len(query) > _MAX_SHORT:
        raise BadRequest(f"'q' must be at most {_MAX_SHORT} characters")
    cursor = call.query.get("cursor") or None
    if cursor is not None and len(cursor) > _MAX_SHORT:
        raise BadRequest("'cursor' is not a cursor this server gave out")
    page, next_cursor = await engine.list_conversations(limit, cursor, query or None)
    return JsonReply({"conversations": page, "next_cursor": next_cursor})


async def create_conversation(engine: Engine, call: Call) -> Reply:
    title = _optional_str(_object_body(call), "title")
    conversation = await engine.create_conversation(call.caller, title and title.strip())
    return JsonReply({"conversation": conversation}, status=201)


async def update_conversation(engine: Engine, call: Call) -> Reply:
    cid = _id(call, "cid", "conversation")
    body = _object_body(call)
    title = _optional_str(body, "title")
    model = _optional_str(body, "model")
    system_prompt = _optional_str(body, "system_prompt", engine.settings.max_prompt_chars)
    if title is not None and not title.strip():
        raise BadRequest("'title' must be a non-empty string")
    if title is None and model is None and system_prompt is None:
        raise BadRequest("give a new 'title', 'model' and/or 'system_prompt'")
    updated = await engine.update_conversation(cid, title and title.strip(), model, system_prompt)
    return JsonReply({"conversation": updated})


async def get_snapshot(engine: Engine, call: Call) -> Reply:
    cid = _id(call, "cid", "conversation")
    snapshot = await engine.snapshot(cid, _int_arg(call, "since", 0), _offsets(call))
    return JsonReply(snapshot)


async def watch_conversation(engine: Engine, call: Call) -> Reply:
    """The snapshot poll as a stream: ``snapshot`` and ``delta`` events at the snapshot
    cadence, from memory, only what changed (``since`` and ``from`` as for the poll)."""
    cid = _id(call, "cid", "conversation")
    return StreamReply(engine.watch(cid, _int_arg(call, "since", 0), _offsets(call)))


async def delete_conversation(engine: Engine, call: Call) -> Reply:
    await engine.delete_conversation(_id(call, "cid", "conversation"))
    return JsonReply({"deleted": call.params["cid"]})


def _prompt(body: dict[str, Any]) -> str:
    content = body.get("content")
    if not isinstance(content, str) or not content.strip():
        raise BadRequest("'content' must be a non-empty string")
    return content


async def post_message(engine: Engine, call: Call) -> Reply:
    return await _send(engine, call, replaces=None)


async def edit_message(engine: Engine, call: Call) -> Reply:
    """Edit and resend: a new version of user message ``mid``, on a new branch."""
    return await _send(engine, call, replaces=_id(call, "mid", "message"))


async def _send(engine: Engine, call: Call, replaces: str | None) -> Reply:
    cid = _id(call, "cid", "conversation")
    body = _object_body(call)
    texts, uploads = _attachments(body)
    user, assistant, stream = await engine.send(
        call.caller,
        cid,
        _prompt(body),
        model_name=_optional_str(body, "model"),
        kernel_id=_optional_str(body, "kernel_id"),
        attachments=texts,
        replaces=replaces,
        image_uploads=uploads,
    )
    return _reply_events(engine, user, assistant, stream.left_out, stream.pinned_over_budget)


async def regenerate_message(engine: Engine, call: Call) -> Reply:
    """A new version of reply ``mid`` (same prompt), on a new branch."""
    cid = _id(call, "cid", "conversation")
    mid = _id(call, "mid", "message")
    body = _object_body(call)
    assistant, stream = await engine.regenerate(
        call.caller,
        cid,
        mid,
        model_name=_optional_str(body, "model"),
        kernel_id=_optional_str(body, "kernel_id"),
    )
    return _reply_events(engine, None, assistant, stream.left_out, stream.pinned_over_budget)


def _reply_events(
    engine: Engine,
    user: MessageDict | None,
    assistant: MessageDict,
    left_out: int,
    pinned_over_budget: bool,
) -> StreamReply:
    async def events() -> AsyncIterator[Event]:
        yield (
            "start",
            {
                "user_message": user,
                "assistant_message": assistant,
                # Earlier turns left out to fit the model's context window (0: all sent).
                "context_left_out": left_out,
                # The pinned messages alone exceed that window (they were sent anyway).
                "context_pinned_over_budget": pinned_over_budget,
            },
        )
        async for event in engine.hub.follow(assistant["id"], 0, SSE_HEARTBEAT_SECONDS):
            yield event

    return StreamReply(events())


async def move_head(engine: Engine, call: Call) -> Reply:
    """Switch branch: the one through ``message_id``, down to its newest message."""
    cid = _id(call, "cid", "conversation")
    mid = _object_body(call).get("message_id")
    if not isinstance(mid, str):
        raise BadRequest("'message_id' must be the id of a message of this conversation")
    if not ID_PATTERN.match(mid):
        raise NotFound(f"no message {mid[:40]!r}")
    return JsonReply({"conversation": await engine.move_head(cid, mid)})


async def clear_conversation(engine: Engine, call: Call) -> Reply:
    """An empty branch: the next prompt starts afresh; older messages stay reachable."""
    cid = _id(call, "cid", "conversation")
    return JsonReply({"conversation": await engine.move_head(cid, None)})


async def delete_turn(engine: Engine, call: Call) -> Reply:
    cid = _id(call, "cid", "conversation")
    conversation, deleted = await engine.delete_turn(cid, _id(call, "mid", "message"))
    return JsonReply({"conversation": conversation, "deleted": deleted})


async def mark_message(engine: Engine, call: Call) -> Reply:
    """Pin a message (always sent to the model), exclude it (never sent), or neither."""
    cid = _id(call, "cid", "conversation")
    mid = _id(call, "mid", "message")
    body = _object_body(call)
    if "context" not in body:
        raise BadRequest('give \'context\': "pinned", "excluded" or null')
    mark = body["context"]
    if mark is not None and (not isinstance(mark, str) or mark not in MARKS):
        raise BadRequest('\'context\' must be "pinned", "excluded" or null')
    return JsonReply({"message": await engine.mark_message(cid, mid, mark)})


async def stream_message(engine: Engine, call: Call) -> Reply:
    mid = _id(call, "mid", "message")
    offset = _int_arg(call, "offset", 0)
    live = engine.hub.live.get(mid)
    message = live.message if live else await engine.store.get_message(mid)
    if message is None:
        raise NotFound(f"no message {mid}")

    async def events() -> AsyncIterator[Event]:
        yield "start", {"user_message": None, "assistant_message": message}
        async for event in engine.hub.follow(mid, offset, SSE_HEARTBEAT_SECONDS):
            yield event

    return StreamReply(events())


async def get_usage(engine: Engine, call: Call) -> Reply:
    return JsonReply(await usage.usage_report(engine.store, call.caller.name, call.caller.is_admin))


async def get_usage_report(engine: Engine, call: Call) -> Reply:
    reports.require_admin(call.caller.is_admin, "the usage report")
    chosen = reports.output_format(call.query)
    covers, rows = await reports.usage_report(engine.store, call.query)
    if chosen == "csv":
        text = reports.to_csv(reports.USAGE_COLUMNS, rows)
        return TextReply(text, "text/csv; charset=utf-8", "r3nb-usage.csv")
    return JsonReply(covers | {"rows": rows})


async def get_audit(engine: Engine, call: Call) -> Reply:
    reports.require_admin(call.caller.is_admin, "the audit trail")
    chosen = reports.output_format(call.query)
    page = await reports.audit(engine.store, call.query)
    if chosen == "csv":
        text = reports.to_csv(reports.AUDIT_COLUMNS, page["sends"])
        return TextReply(text, "text/csv; charset=utf-8", "r3nb-audit.csv")
    return JsonReply(page)


async def get_attachment(engine: Engine, call: Call) -> Reply:
    """An image sent with a prompt of conversation ``cid`` (for its chip's thumbnail)."""
    cid = _id(call, "cid", "conversation")
    row = await images.stored(engine.store, cid, _id(call, "aid", "attachment"))
    return BytesReply(row.data, row.mime)


async def cancel_message(engine: Engine, call: Call) -> Reply:
    message = await engine.cancel(_id(call, "mid", "message"), call.caller)
    return JsonReply({"message": message})


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # "conversations/{cid}/messages"
    fn: RouteFn

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.pattern) + "/?$")


# The whole API at a glance: one line per route.
ROUTES: list[Route] = [
    Route("GET", "health", get_health),
    Route("GET", "models", get_models),
    Route("POST", "models/reload", reload_models),
    Route("GET", "usage", get_usage),
    Route("GET", "usage/report", get_usage_report),
    Route("GET", "audit", get_audit),
    Route("GET", "conversations", list_conversations),
    Route("POST", "conversations", create_conversation),
    Route("GET", "conversations/{cid}", get_snapshot),
    Route("GET", "conversations/{cid}/watch", watch_conversation),
    Route("PATCH", "conversations/{cid}", update_conversation),
    Route("DELETE", "conversations/{cid}", delete_conversation),
    Route("POST", "conversations/{cid}/messages", post_message),
    Route("POST", "conversations/{cid}/messages/{mid}/edit", edit_message),
    Route("POST", "conversations/{cid}/messages/{mid}/regenerate", regenerate_message),
    Route("PATCH", "conversations/{cid}/messages/{mid}", mark_message),
    Route("DELETE", "conversations/{cid}/messages/{mid}", delete_turn),
    Route("POST", "conversations/{cid}/head", move_head),
    Route("POST", "conversations/{cid}/clear", clear_conversation),
    Route("GET", "conversations/{cid}/attachments/{aid}", get_attachment),
    Route("GET", "messages/{mid}/stream", stream_message),
    Route("POST", "messages/{mid}/cancel", cancel_message),
]
_COMPILED = [(route, route.regex) for route in ROUTES]


async def dispatch(engine: Engine, call: Call) -> Reply:
    """Find the route for ``call`` and run it. Raises ``R3nbError`` (404/405/4xx)."""
    allowed = []
    for route, regex in _COMPILED:
        match = regex.match(call.path)
        if match is None:
            continue
        if route.method != call.method:
            allowed.append(route.method)
            continue
        call.params = match.groupdict()
        return await route.fn(engine, call)
    if allowed:
        raise MethodNotAllowed(
            f"{call.method} is not allowed on {call.path!r}; use {', '.join(allowed)}"
        )
    raise NotFound(f"no r3nb API route {call.path[:80]!r}")
