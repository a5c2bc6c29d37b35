"""The HTTP contract as one transport-free route table.

The tornado handler (server mode) and the comm relay (embedded mode) both parse their
input into a ``Call`` and hand it to ``dispatch``; validation and replies therefore
cannot differ between the two. Each route function validates its input and calls the
engine; errors are ``R3nbError`` subclasses that the transport turns into JSON.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from r3nb.errors import BadRequest, NotFound, R3nbError
from r3nb.protocol import ID_PATTERN, MessageDict

from . import reports
from .calls import (
    MAX_SHORT,
    BytesReply,
    Call,
    JsonReply,
    Reply,
    StreamReply,
    TextReply,
    attachments,
    int_arg,
    object_body,
    offsets,
    optional_str,
    route_id,
)  # fmt: skip
from .context import MARKS
from .core import Engine
from .streams import Event


class MethodNotAllowed(R3nbError):
    status = 405


RouteFn = Callable[[Engine, Call], Awaitable[Reply]]

__all__ = [
    "ROUTES",
    "BytesReply",
    "Call",
    "JsonReply",
    "Reply",
    "StreamReply",
    "TextReply",
    "dispatch",
]


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
    limit = int_arg(call, "limit", LIST_PAGE)
    if not 1 <= limit <= LIST_PAGE_MAX:
        raise BadRequest(f"'limit' must be between 1 and {LIST_PAGE_MAX}")
    query = (call.query.get("q") or "").strip()
    if len(query) > MAX_SHORT:
        raise BadRequest(f"'q' must be at most {MAX_SHORT} characters")
    cursor = call.query.get("cursor") or None
    if cursor is not None and len(cursor) > MAX_SHORT:
        raise BadRequest("'cursor' is not a cursor this server gave out")
    page, next_cursor = await engine.list_conversations(limit, cursor, query or None)
    return JsonReply({"conversations": page, "next_cursor": next_cursor})


async def create_conversation(engine: Engine, call: Call) -> Reply:
    title = optional_str(object_body(call), "title")
    conversation = await engine.create_conversation(call.caller, title and title.strip())
    return JsonReply({"conversation": conversation}, status=201)


async def update_conversation(engine: Engine, call: Call) -> Reply:
    cid = route_id(call, "cid", "conversation")
    body = object_body(call)
    title = optional_str(body, "title")
    model = optional_str(body, "model")
    system_prompt = optional_str(body, "system_prompt", engine.settings.max_prompt_chars)
    if title is not None and not title.strip():
        raise BadRequest("'title' must be a non-empty string")
    if title is None and model is None and system_prompt is None:
        raise BadRequest("give a new 'title', 'model' and/or 'system_prompt'")
    updated = await engine.update_conversation(cid, title and title.strip(), model, system_prompt)
    return JsonReply({"conversation": updated})


async def get_snapshot(engine: Engine, call: Call) -> Reply:
    cid = route_id(call, "cid", "conversation")
    snapshot = await engine.snapshot(cid, int_arg(call, "since", 0), offsets(call))
    return JsonReply(snapshot)


async def watch_conversation(engine: Engine, call: Call) -> Reply:
    """The snapshot poll as a stream: ``snapshot`` and ``delta`` events at the snapshot
    cadence, from memory, only what changed (``since`` and ``from`` as for the poll)."""
    cid = route_id(call, "cid", "conversation")
    events = engine.watch(cid, int_arg(call, "since", 0), offsets(call))
    return StreamReply(events, compressible=True)


async def delete_conversation(engine: Engine, call: Call) -> Reply:
    await engine.delete_conversation(route_id(call, "cid", "conversation"))
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
    return await _send(engine, call, replaces=route_id(call, "mid", "message"))


async def _send(engine: Engine, call: Call, replaces: str | None) -> Reply:
    cid = route_id(call, "cid", "conversation")
    body = object_body(call)
    texts, uploads = attachments(body)
    user, assistant, stream = await engine.send(
        call.caller,
        cid,
        _prompt(body),
        model_name=optional_str(body, "model"),
        kernel_id=optional_str(body, "kernel_id"),
        attachments=texts,
        replaces=replaces,
        image_uploads=uploads,
    )
    return _reply_events(engine, user, assistant, stream.left_out, stream.pinned_over_budget)


async def regenerate_message(engine: Engine, call: Call) -> Reply:
    """A new version of reply ``mid`` (same prompt), on a new branch."""
    cid = route_id(call, "cid", "conversation")
    mid = route_id(call, "mid", "message")
    body = object_body(call)
    assistant, stream = await engine.regenerate(
        call.caller,
        cid,
        mid,
        model_name=optional_str(body, "model"),
        kernel_id=optional_str(body, "kernel_id"),
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
        async for event in engine.follow(assistant["id"], 0):
            yield event

    return StreamReply(events())


async def move_head(engine: Engine, call: Call) -> Reply:
    """Switch branch: the one through ``message_id``, down to its newest message."""
    cid = route_id(call, "cid", "conversation")
    mid = object_body(call).get("message_id")
    if not isinstance(mid, str):
        raise BadRequest("'message_id' must be the id of a message of this conversation")
    if not ID_PATTERN.match(mid):
        raise NotFound(f"no message {mid[:40]!r}")
    return JsonReply({"conversation": await engine.move_head(cid, mid)})


async def clear_conversation(engine: Engine, call: Call) -> Reply:
    """An empty branch: the next prompt starts afresh; older messages stay reachable."""
    cid = route_id(call, "cid", "conversation")
    return JsonReply({"conversation": await engine.move_head(cid, None)})


async def delete_turn(engine: Engine, call: Call) -> Reply:
    cid = route_id(call, "cid", "conversation")
    conversation, deleted = await engine.delete_turn(cid, route_id(call, "mid", "message"))
    return JsonReply({"conversation": conversation, "deleted": deleted})


async def mark_message(engine: Engine, call: Call) -> Reply:
    """Pin a message (always sent to the model), exclude it (never sent), or neither."""
    cid = route_id(call, "cid", "conversation")
    mid = route_id(call, "mid", "message")
    body = object_body(call)
    if "context" not in body:
        raise BadRequest('give \'context\': "pinned", "excluded" or null')
    mark = body["context"]
    if mark is not None and (not isinstance(mark, str) or mark not in MARKS):
        raise BadRequest('\'context\' must be "pinned", "excluded" or null')
    return JsonReply({"message": await engine.mark_message(cid, mid, mark)})


async def stream_message(engine: Engine, call: Call) -> Reply:
    mid = route_id(call, "mid", "message")
    offset = int_arg(call, "offset", 0)
    message = await engine.message(mid)

    async def events() -> AsyncIterator[Event]:
        yield "start", {"user_message": None, "assistant_message": message}
        async for event in engine.follow(mid, offset):
            yield event

    return StreamReply(events())


async def get_usage(engine: Engine, call: Call) -> Reply:
    return JsonReply(await engine.usage(call.caller))


async def get_usage_report(engine: Engine, call: Call) -> Reply:
    reports.require_admin(call.caller.is_admin, "the usage report")
    chosen = reports.output_format(call.query)
    covers, rows = await engine.usage_report(call.query)
    if chosen == "csv":
        text = reports.to_csv(reports.USAGE_COLUMNS, rows)
        return TextReply(text, "text/csv; charset=utf-8", "r3nb-usage.csv")
    return JsonReply(covers | {"rows": rows})


async def get_audit(engine: Engine, call: Call) -> Reply:
    reports.require_admin(call.caller.is_admin, "the audit trail")
    chosen = reports.output_format(call.query)
    page = await engine.audit(call.query)
    if chosen == "csv":
        text = reports.to_csv(reports.AUDIT_COLUMNS, page["sends"])
        return TextReply(text, "text/csv; charset=utf-8", "r3nb-audit.csv")
    return JsonReply(page)


async def get_attachment(engine: Engine, call: Call) -> Reply:
    """An image sent with a prompt of conversation ``cid`` (for its chip's thumbnail)."""
    cid = route_id(call, "cid", "conversation")
    row = await engine.attachment(cid, route_id(call, "aid", "attachment"))
    return BytesReply(row.data, row.mime)


async def cancel_message(engine: Engine, call: Call) -> Reply:
    message = await engine.cancel(route_id(call, "mid", "message"), call.caller)
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
