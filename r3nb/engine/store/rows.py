"""Rows and dicts: the message and conversation columns, declared once.

The columns *are* the wire shapes' fields — ``MessageDict`` and ``ConversationDict`` in
``r3nb/protocol.py``, in their declared order — less what is not stored: a message's
``NotRequired`` fields (``siblings``, a decoration) and a conversation's ``COUNTED``
fields (``message_count``, computed by each SELECT). Every column list, INSERT,
RETURNING, row decoder and partial-update set of the store is derived here, by name, so a
new field is one declaration plus one migration (``schema.py`` says how).

Plain SQL column names and Python values; the one dialect-specific piece is the
``COUNTED`` expression, which is portable SQL.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from r3nb.protocol import Attachment, ConversationDict, MessageDict

from .values import Final, NewMessage, StoredAttachment


def _stored_fields(shape: Any) -> tuple[str, ...]:
    """A TypedDict's required keys, in declaration order."""
    required: frozenset[str] = shape.__required_keys__
    return tuple(name for name in shape.__annotations__ if name in required)


def _encode_json_list(value: Any) -> str:
    return json.dumps(list(value or ()))


def _decode_json_list(raw: Any) -> Any:
    return json.loads(raw or "[]")


#: Fields whose stored form differs from their Python value: (encode, decode).
CODECS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "attachments": (_encode_json_list, _decode_json_list),
}

#: A message's columns, in ``MessageDict`` order.
MESSAGE_FIELDS: tuple[str, ...] = _stored_fields(MessageDict)
#: The same, as a SQL column list (SELECT, RETURNING, INSERT).
MESSAGE_COLUMNS = ", ".join(MESSAGE_FIELDS)

#: Conversation fields computed by each SELECT rather than stored (alias ``c``).
COUNTED: dict[str, str] = {
    "message_count": "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)",
}
#: A conversation's fields, in ``ConversationDict`` order (``COUNTED`` ones included).
CONVERSATION_FIELDS: tuple[str, ...] = _stored_fields(ConversationDict)
#: The conversation columns actually stored.
CONVERSATION_COLUMNS: tuple[str, ...] = tuple(
    name for name in CONVERSATION_FIELDS if name not in COUNTED
)
#: The header fields that change after creation (``update_header``'s SET list).
HEADER_FIELDS: tuple[str, ...] = tuple(
    name for name in CONVERSATION_COLUMNS if name not in ("id", "author", "created_at")
)
#: Every conversation header, each with its computed fields (add WHERE/ORDER as needed).
SELECT_CONVERSATIONS = (
    "SELECT "
    + ", ".join(f"{COUNTED[n]} AS {n}" if n in COUNTED else f"c.{n}" for n in CONVERSATION_FIELDS)
    + " FROM conversations c"
)

#: The message columns ``finalize`` sets from a ``Final`` (besides times and revision).
FINAL_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Final))
#: The message columns a ``NewMessage`` supplies (the store assigns the others).
NEW_MESSAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(NewMessage))


def encode(name: str, value: Any) -> Any:
    codec = CODECS.get(name)
    return codec[0](value) if codec else value


def decode(name: str, raw: Any) -> Any:
    codec = CODECS.get(name)
    return codec[1](raw) if codec else raw


def message_from_row(row: Sequence[Any]) -> MessageDict:
    """A row selected (or returned) as ``MESSAGE_COLUMNS``."""
    return cast(
        MessageDict,
        {name: decode(name, raw) for name, raw in zip(MESSAGE_FIELDS, row, strict=True)},
    )


def conversation_from_row(row: Sequence[Any]) -> ConversationDict:
    """A row of ``SELECT_CONVERSATIONS``."""
    return cast(
        ConversationDict,
        {name: decode(name, raw) for name, raw in zip(CONVERSATION_FIELDS, row, strict=True)},
    )


def message_values(message: Mapping[str, Any]) -> list[Any]:
    """``message``'s stored values in ``MESSAGE_COLUMNS`` order (absent fields: NULL)."""
    return [encode(name, message.get(name)) for name in MESSAGE_FIELDS]


def conversation_values(header: Mapping[str, Any], names: Sequence[str]) -> list[Any]:
    """``header``'s stored values for the columns ``names``, in that order."""
    return [encode(name, header.get(name)) for name in names]


def new_message_row(message: NewMessage, **assigned: Any) -> list[Any]:
    """The INSERT values of ``message``: its own fields, then what the store ``assigned``
    (ids, seq, times, revision, parent); every other column NULL."""
    given = {name: getattr(message, name) for name in NEW_MESSAGE_FIELDS}
    return message_values(given | assigned)


def new_conversation(**given: Any) -> ConversationDict:
    """A new conversation's header: ``given`` fields, the rest NULL, no messages."""
    empty: dict[str, Any] = dict.fromkeys(CONVERSATION_FIELDS)
    return cast(ConversationDict, empty | {"message_count": 0} | given)


def plain_attachment(attachment: Attachment) -> dict[str, Any]:
    """What a model is sent of an attachment: its text, or an image's row id and type."""
    keys = (
        ("kind", "name", "id", "mime")
        if attachment["kind"] == "image"
        else ("kind", "name", "summary")
    )
    return {k: attachment.get(k, "") for k in keys}


#: The ``attachments`` columns a read returns, in ``attachment_from_row``'s order.
ATTACHMENT_COLUMNS = "id, message_id, conversation_id, kind, mime, name, bytes, created_at"


def attachment_from_row(row: Sequence[Any]) -> StoredAttachment:
    aid, mid, cid, kind, mime, name, data, at = row
    return StoredAttachment(
        str(aid), str(mid), str(cid), str(kind), str(mime), str(name), bytes(data), float(at)
    )
