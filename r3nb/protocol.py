"""Wire shapes shared by the server, the kernel clients and (mirrored in JSDoc) the widget.

Everything that crosses a process boundary is declared here once, so the Python ends
cannot drift apart. Timestamps are float seconds since the epoch (UTC); text offsets
count Unicode code points (Python ``str`` indices), not UTF-16 units or bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, NotRequired, TypedDict

#: Every message status. User messages are born ``complete``; an assistant message
#: starts ``streaming`` and ends in exactly one of the three others.
Status = Literal["streaming", "complete", "error", "cancelled"]
FINAL_STATUSES: frozenset[str] = frozenset({"complete", "error", "cancelled"})
Role = Literal["user", "assistant", "system"]

#: Ids are random hex. Validating their shape up front turns junk into a clean 404
#: before any SQL runs.
ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")


def parse_json_body(raw: bytes) -> Any:
    """A request body as JSON; ``ValueError`` with a person's reason for anything else.

    Deeply nested input makes ``json`` raise ``RecursionError`` (not a ``ValueError``),
    which would otherwise escape as a 500 with a traceback in the log.
    ``UnicodeDecodeError`` (a ``ValueError``) is left for the caller to word.
    """
    text = raw.decode("utf-8")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("the request body is nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"the request body is not valid JSON: {e}") from None


class Attachment(TypedDict):
    """Context attached to a user message, e.g. a kernel variable named with ``@name``."""

    kind: str  # "variable"
    name: str
    summary: str  # the bounded text that was sent to the model


class MessageDict(TypedDict):
    id: str
    conversation_id: str
    seq: int
    role: Role
    content: str
    status: Status
    model: str | None
    author: str | None
    source: str | None  # "browser", "kernel" or "embedded": who made the call
    streaming_for: str | None  # kernel id of the panel/kernel that sent the prompt
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    attachments: list[Attachment]
    created_at: float
    updated_at: float
    revision: int
    parent_id: str | None  # the message this one follows (None: a first message)
    #: This message and its other versions (same parent: a regenerated reply, an edited
    #: prompt), oldest first; only when there are several. The panel's "‹ 2/3 ›".
    siblings: NotRequired[list[str]]


class SnapshotMessage(MessageDict, total=False):
    #: Present when the client named this message in ``from=MID:N``: ``content`` then
    #: holds only the text after code point N, and only the fields that change while a
    #: message streams are sent (merge them into the message held).
    offset: int


class ConversationDict(TypedDict):
    id: str
    title: str
    author: str | None
    created_at: float
    updated_at: float
    revision: int
    message_count: int
    model: str | None  # the model it last used or was set to (the picker follows it)
    system_prompt: str | None  # its own system prompt (None: its model's)
    head_id: str | None  # the last message of the current branch (None: empty, e.g. cleared)


class Snapshot(TypedDict):
    """``GET conversations/{cid}?since=REV``: what changed after REV."""

    conversation: ConversationDict | None  # None: unchanged since ``since``
    messages: list[SnapshotMessage]  # of the current branch only, in its order
    #: The ids of the current branch, in order, whenever ``conversation`` is given (the
    #: branch changes only with the header); None otherwise. A client drops held messages
    #: not in it, and loads again from ``since=0`` if it names one it holds nowhere.
    branch: list[str] | None
    revision: int  # pass back as ``since`` next time
    streaming: bool  # any message of the conversation still streaming


# --- SSE events (POST conversations/{cid}/messages, GET messages/{mid}/stream) ---


class StartEvent(TypedDict):
    user_message: MessageDict | None  # None on GET messages/{mid}/stream
    assistant_message: MessageDict


class DeltaEvent(TypedDict):
    message_id: str
    offset: int  # code point offset of ``text`` within the message content
    text: str


class DoneEvent(TypedDict):
    message: MessageDict  # final status, error, usage


SseEventName = Literal["start", "delta", "done", "error"]


def sse_frame(event: str, data: Any) -> bytes:
    """One server-sent event. ``json.dumps`` escapes newlines, so ``data`` is one line."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


#: Sent when a stream has been quiet this long, so clients can tell "slow" from "dead"
#: (through JupyterHub's proxy a dead server leaves the connection open and silent).
SSE_HEARTBEAT_SECONDS = 10.0
SSE_HEARTBEAT = b": ping\n\n"

# --- Comm relay between the widget and its kernel (embedded mode, or no direct route) ---


class CommRequest(TypedDict):
    """JS → Python. Mirrors an HTTP call on the API, relative to ``api/``."""

    type: Literal["request"]
    id: str
    method: Literal["GET", "POST", "PATCH", "DELETE"]
    path: str  # e.g. "conversations/abc/messages?x=1"
    body: Any


class CommResponse(TypedDict):
    """Python → JS: the reply to a request that is not a stream."""

    type: Literal["response"]
    id: str
    status: int
    body: Any


class CommEvent(TypedDict):
    """Python → JS: one SSE event of a streaming request; ``end`` closes it."""

    type: Literal["event"]
    id: str
    event: str
    data: Any


class CommEnd(TypedDict):
    type: Literal["end"]
    id: str
