"""The values the store interface speaks, whatever the backend: what a caller hands in
(``NewMessage``, ``Final``, where a message goes), and the shapes of what some reads return.

Plain data, no SQL and no database import: the engine builds these without knowing
which backend stores them.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from typing import Literal

from r3nb.protocol import ConversationDict, MessageDict, Source

#: The title of a conversation nobody named; its first prompt replaces it.
DEFAULT_TITLE = "New conversation"

#: The turns a model may see: (role, content, attachments, mark), mark being the
#: person's "pinned"/"excluded" or None.
Context = list[tuple[str, str, list[dict[str, str]], str | None]]
#: A snapshot's parts: header, changed messages of the current branch, the revision they
#: are consistent with, whether anything streams, and the current branch's ids.
SnapshotParts = tuple[ConversationDict, list[MessageDict], int, bool, list[str]]


class _Head(enum.Enum):
    HEAD = "head"


#: "After the conversation's current head": where a new prompt goes by default.
HEAD = _Head.HEAD
#: Where a new message goes: after message id, first in the conversation (None), or HEAD.
Parent = str | None | Literal[_Head.HEAD]


def new_id() -> str:
    """16 hex chars: 64 random bits, unique enough for one server's lifetime of messages."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class NewMessage:
    """What a caller supplies for a row; the store assigns seq, times, revision (and the
    id, unless the caller needs it before the row exists).

    Each field is a message column of the same name (``rows.py`` copies them by name)."""

    role: str
    content: str
    status: str
    model: str | None = None
    author: str | None = None
    source: Source | None = None
    streaming_for: str | None = None
    attachments: tuple[dict[str, str], ...] = ()
    id: str | None = None
    context_left_out: int | None = None  # a reply: earlier turns not sent (context window)


@dataclass(frozen=True)
class Final:
    """The end state of an assistant message. Each field is the message column of the
    same name that ``finalize`` sets (``rows.FINAL_FIELDS``)."""

    content: str
    status: str
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None


@dataclass(frozen=True)
class StoredAttachment:
    """An attachment row (table ``attachments``): bytes a person sent with a prompt, e.g.
    an image for the model. Only what the page or the kernel sent: the store never reads
    a file for it. ``size`` is ``len(data)``."""

    id: str
    message_id: str
    conversation_id: str
    kind: str
    mime: str
    name: str
    data: bytes
    created_at: float

    @property
    def size(self) -> int:
        return len(self.data)
