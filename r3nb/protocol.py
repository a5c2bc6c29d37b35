"""Wire shapes shared by the server, the kernel clients and (mirrored in JSDoc) the widget.

Everything that crosses a process boundary is declared here once, so the Python ends
cannot drift apart; ``tests/test_wire_contract.py`` fails when ``js/src/protocol.js``, the
README's API table or the real server's replies disagree with it. Timestamps are float
seconds since the epoch (UTC); text offsets count Unicode code points (Python ``str``
indices), not UTF-16 units or bytes.

No ``from __future__ import annotations`` in this module: with it, Python 3.11 counts
every ``NotRequired`` key as required at run time (``__required_keys__``), and the
contract test reads them there.
"""

import json
import re
from typing import Any, Literal, NotRequired, TypedDict

#: Every message status. User messages are born ``complete``; an assistant message
#: starts ``streaming`` and ends in exactly one of the three others.
Status = Literal["streaming", "complete", "error", "cancelled"]
FINAL_STATUSES: frozenset[str] = frozenset({"complete", "error", "cancelled"})
Role = Literal["user", "assistant", "system"]

#: Who made the call that wrote a message: a person through the HTTP API (the panel, any
#: API client), a kernel with the kernel secret (``%%chat``, ``r3nb.chat()``), or the
#: engine inside a kernel (embedded mode).
Source = Literal["user", "kernel", "embedded"]
#: A person's mark on a message: always sent to the model, or never.
ContextMark = Literal["pinned", "excluded"]

#: Ids are random hex. Validating their shape up front turns junk into a clean 404
#: before any SQL runs.
ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")

# --- Names the processes must spell alike --------------------------------------------

#: Set by the server extension in its own environment, inherited by the kernels it
#: starts: where the API is (``{connection_url}r3nb/api/``) and the secret that
#: authenticates a kernel (sent in ``SECRET_HEADER``).
ENV_URL = "R3NB_URL"
ENV_SECRET = "R3NB_SECRET"  # noqa: S105 (a variable's name, not a secret)
SECRET_HEADER = "X-R3nb-Secret"  # noqa: S105
#: Embedded mode's settings (a kernel with no server extension): its DuckDB file, its
#: models (JSON, the shape of ``c.R3nbApp.models``) and their default.
ENV_DB = "R3NB_DB"
ENV_MODELS = "R3NB_MODELS"
ENV_DEFAULT_MODEL = "R3NB_DEFAULT_MODEL"
#: Seconds between the offline demo model's tokens (a test and demo knob).
ENV_DEMO_DELAY = "R3NB_DEMO_DELAY"
#: Every 429 and 503 says when to try again twice: this header (HTTP clients) and a
#: ``retry_after`` field of its body (``ErrorBody``; the comm relay carries no headers).
RETRY_AFTER_HEADER = "Retry-After"


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
    """Context attached to a user message: a kernel variable named with ``@name``, a cell,
    an error output (text, in ``summary``), or an image (its bytes in an attachment row,
    ``GET attachments/{id}``; never inline)."""

    kind: str  # "variable", "cell", "output", "image"
    name: str
    summary: NotRequired[str]  # text kinds: the bounded text that was sent to the model
    id: NotRequired[str]  # image: the attachment row
    mime: NotRequired[str]  # image: image/png, image/jpeg, image/gif or image/webp
    size: NotRequired[int]  # image: bytes


#: Images a model is sent (``r3nb/engine/images.py``): the types accepted (recognised by
#: their bytes; never SVG), the decoded bytes one may have, how many one message may carry.
IMAGE_MIMES: frozenset[str] = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_IMAGES = 4


class ImageUpload(TypedDict):
    """An image in a request's ``attachments`` (``POST …/messages``): what the panel
    sends; the message stores it as an ``Attachment`` of kind "image" instead."""

    kind: Literal["image"]
    name: str
    mime: str  # as the page read it; the server sniffs the bytes and must agree
    data: str  # base64 of the image's bytes


class MessageDict(TypedDict):
    id: str
    conversation_id: str
    seq: int
    role: Role
    content: str
    status: Status
    model: str | None
    author: str | None
    source: Source | None  # who made the call (see ``Source``)
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
    context: ContextMark | None  # pinned: always sent to the model; excluded: never
    #: On a reply: how many earlier messages its prompt left out to fit the model's
    #: context window (None: not a reply, or written before this was recorded).
    context_left_out: int | None
    #: This message and its other versions (same parent: a regenerated reply, an edited
    #: prompt), oldest first; only when there are several. The panel's "‹ 2/3 ›".
    siblings: NotRequired[list[str]]


class SnapshotMessage(MessageDict, total=False):
    #: Present when the client named this message in ``from=MID:N``: ``content`` then
    #: holds only the text after code point N, and only the fields that change while a
    #: message streams are sent (merge them into the message held).
    offset: int


class MessageUpdate(TypedDict):
    """What a ``SnapshotMessage`` with ``offset`` holds: the fields that change while a
    message streams, and ``content`` from code point ``offset`` on."""

    id: str
    status: Status
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    updated_at: float
    revision: int
    context: ContextMark | None
    content: str
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


class ConversationPage(TypedDict):
    """``GET conversations?limit=N&cursor=C&q=TEXT``: one page, most recently active first."""

    conversations: list[ConversationDict]
    next_cursor: str | None  # pass back as ``cursor``; None on the last page


class ConversationReply(TypedDict):
    """``POST conversations`` (201), ``PATCH conversations/{cid}``, ``POST …/head``, ``…/clear``."""

    conversation: ConversationDict


class ConversationUpdate(TypedDict, total=False):
    """The body of ``PATCH conversations/{cid}``: at least one of these."""

    title: str
    model: str  # the model its next replies use (400 for an unknown one)
    system_prompt: str  # its own system prompt; "" clears it


class HeadRequest(TypedDict):
    """The body of ``POST conversations/{cid}/head``: the branch through this message."""

    message_id: str


class DeleteTurnReply(TypedDict):
    """``DELETE conversations/{cid}/messages/{mid}``."""

    conversation: ConversationDict
    deleted: list[str]  # the prompt and every version of its reply


class MessageReply(TypedDict):
    """``POST messages/{mid}/cancel``: the message as it ended."""

    message: MessageDict


class ModelInfo(TypedDict):
    name: str
    model: str  # the provider's model id, e.g. "openai/gpt-4o-mini"
    description: str
    ready: bool  # False: ``reason`` says why it cannot answer now (no key, loading…)
    reason: str | None
    images: bool  # takes images (attached plots, pasted images): ``engine/images.py``


class ModelsReply(TypedDict):
    """``GET models``: never a key."""

    models: list[ModelInfo]
    default: str
    #: Grows by one each time a reload of the models file changes the models or the
    #: default (0: as the server started); ``GET health`` says it too.
    revision: int


class ModelsFileState(TypedDict):
    """The models file (``c.R3nbApp.models_file``) as last read: ``models_file`` of
    ``GET health`` (null without a file) and of ``POST models/reload``."""

    path: str
    loaded_at: float | None  # when its content was last applied (None: never)
    error: str | None  # why the file as it is now is not applied (None: it is)


class ModelsReloadReply(ModelsReply):
    """``POST models/reload``: the file was read again and applied (a file that cannot
    be used is a 422 ``ErrorBody`` instead, and the models stay as they were)."""

    changed: bool  # the models or the default differ from before the reload
    models_file: ModelsFileState


class ErrorBody(TypedDict):
    """Every 4xx/5xx body (never HTML, never a traceback)."""

    error: str  # for a person to act on
    message_id: NotRequired[str]  # 409: the reply still being written (follow or stop it)
    retry_after: NotRequired[int]  # 429, 503: seconds, also in the Retry-After header


# --- SSE events (POST conversations/{cid}/messages, GET messages/{mid}/stream) ---


class StartEvent(TypedDict):
    user_message: MessageDict | None  # None on GET messages/{mid}/stream and on regenerate
    assistant_message: MessageDict
    #: How many earlier turns were left out to fit the model's context window (0: all
    #: sent). Only on a new reply (post, edit, regenerate), not on GET messages/{mid}/stream.
    context_left_out: NotRequired[int]
    #: The pinned messages alone exceed the context window (they were sent anyway).
    context_pinned_over_budget: NotRequired[bool]


class DeltaEvent(TypedDict):
    message_id: str
    offset: int  # code point offset of ``text`` within the message content
    text: str


class DoneEvent(TypedDict):
    message: MessageDict  # final status, error, usage


class StreamError(TypedDict):
    """The ``error`` event: a failure after the stream's headers were sent (before
    them, the request gets an ``ErrorBody`` with its status instead)."""

    error: str


#: ``snapshot`` (a ``Snapshot``) comes only on ``GET conversations/{cid}/watch``, whose
#: stream is ``snapshot`` and ``delta`` events (and ``error`` when the conversation is
#: deleted): what a poll ``since=REV&from=…`` would return, pushed at the snapshot cadence.
SseEventName = Literal["start", "delta", "done", "error", "snapshot"]


def json_text(data: Any) -> str:
    """A JSON reply's or event's text: UTF-8 as is, and compact separators. A full
    message row's JSON is ~10% spaces, and what a polling or watching observer gets
    beyond the reply's text is mostly such rows (a poll's update: ~25 bytes of them)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def sse_frame(event: str, data: Any) -> bytes:
    """One server-sent event (``json.dumps`` escapes newlines, so ``data`` is one line)."""
    return f"event: {event}\ndata: {json_text(data)}\n\n".encode()


#: Sent when a stream has been quiet this long, so clients can tell "slow" from "dead"
#: (through JupyterHub's proxy a dead server leaves the connection open and silent).
SSE_HEARTBEAT_SECONDS = 10.0
SSE_HEARTBEAT = b": ping\n\n"
#: A client that receives no byte (not even a heartbeat) for this long takes the stream
#: for dead and follows the message by polling snapshots instead. Three heartbeats.
STALL_SECONDS = 30.0

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


class UsageRow(TypedDict):
    """``GET usage/report``: one person's replies from one model on one UTC day."""

    day: str  # YYYY-MM-DD, UTC
    person: str
    model: str
    replies: int
    prompt_tokens: int
    completion_tokens: int
    cost: float


class AuditRow(TypedDict):
    """``GET audit``: one prompt sent to a model — who, from where, to which model,
    and how the reply ended. ``prompt`` is the prompt's text, cut at 500 characters."""

    at: float  # when the reply was admitted (Unix seconds)
    person: str
    source: Source | None
    conversation_id: str
    message_id: str  # the reply
    model: str | None
    status: Status
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    prompt: str
