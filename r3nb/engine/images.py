"""Images sent to a model with a prompt: what is accepted, and how a model receives them.

A person attaches a cell's image output (a matplotlib PNG) or pastes an image into the
panel; the request carries its bytes as base64 (``protocol.ImageUpload``). Only bytes
the page sent are ever stored or sent: nothing here opens a file or a URL.

- **Accepted**: PNG, JPEG, GIF and WebP, recognised by their first bytes (the type the
  page claims must agree); never SVG (a script-bearing document, not pixels).
- **Bounded**: at most ``MAX_IMAGE_BYTES`` decoded per image and ``MAX_IMAGES`` per
  message (413 over the size, 400 over the count), before anything is stored.
- **Only for models that take images** (``supports_images``): the model entry's
  ``vision`` when it says, else litellm's model info (``supports_vision`` in its price
  list, read without importing litellm: ``prices.py``). Another model is refused with a
  reason before anything is stored or sent.
- **Stored as rows** (``Store.add_attachments``), named on the message by id, kind, name,
  mime and size; the model receives OpenAI content parts with a ``data:`` URL
  (``with_images``), on the lean reader and through litellm alike.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from r3nb.errors import BadRequest, NotFound, PayloadTooLarge
from r3nb.protocol import MAX_IMAGE_BYTES, MAX_IMAGES

from . import prices
from .context import IMAGES_KEY
from .store.values import StoredAttachment, new_id

if TYPE_CHECKING:
    from .models import ModelConfig
    from .store.interface import Store

# The caps live in protocol.py (the panel checks them too): 5 MB decoded per image, as
# providers take ~5 MB (Anthropic's limit) to 20 MB (OpenAI) and a matplotlib figure is
# 20-200 KB; 4 images per message.

#: Request-body characters the images of one message may take (base64, with slack for
#: their names): what a body may hold beyond its text.
MAX_UPLOAD_CHARS = MAX_IMAGES * ((MAX_IMAGE_BYTES + 2) // 3 * 4 + 1024)

_MAGIC: tuple[tuple[str, bytes, int], ...] = (
    ("image/png", b"\x89PNG\r\n\x1a\n", 0),
    ("image/jpeg", b"\xff\xd8\xff", 0),
    ("image/gif", b"GIF87a", 0),
    ("image/gif", b"GIF89a", 0),
    ("image/webp", b"WEBP", 8),  # after "RIFF" and a length
)


def sniff(data: bytes) -> str | None:
    """The image type ``data`` starts like, or None (SVG, HTML, anything else)."""
    for mime, magic, at in _MAGIC:
        if data[at : at + len(magic)] == magic and (at == 0 or data[:4] == b"RIFF"):
            return mime
    return None


def supports_images(model: ModelConfig) -> bool:
    """The entry's ``vision`` when set, else litellm's ``supports_vision`` for the model."""
    if model.vision is not None:
        return model.vision
    info = prices.entry(model.litellm_model) or {}
    return info.get("supports_vision") is True


def is_upload(item: Any) -> bool:
    return isinstance(item, dict) and item.get("kind") == "image"


#: An image as the request gave it, checked: (name, mime, bytes).
Image = tuple[str, str, bytes]


def decode(item: dict[str, Any]) -> Image:
    """(name, mime, bytes) of one ``ImageUpload``; ``BadRequest``/``PayloadTooLarge``
    saying what is wrong with it."""
    name, data = item.get("name"), item.get("data")
    if not isinstance(name, str) or not isinstance(data, str):
        raise BadRequest("an image attachment needs string fields 'name' and 'data' (base64)")
    if len(data) > (MAX_IMAGE_BYTES + 2) // 3 * 4 + 4:  # before decoding it
        raise PayloadTooLarge(_too_large(name))
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"image {name[:80]!r}: 'data' is not base64") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise PayloadTooLarge(_too_large(name))
    mime = sniff(raw)
    if mime is None:
        raise BadRequest(
            f"image {name[:80]!r} is not a PNG, JPEG, GIF or WebP image (SVG is not accepted)"
        )
    claimed = item.get("mime")
    if claimed is not None and claimed != mime:
        raise BadRequest(f"image {name[:80]!r} says it is {str(claimed)[:40]} but is {mime}")
    return name[:200], mime, raw


def _too_large(name: str) -> str:
    return f"image {name[:80]!r} is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB"


def check_count(uploads: Sequence[object]) -> None:
    if len(uploads) > MAX_IMAGES:
        raise BadRequest(f"at most {MAX_IMAGES} images per message ({len(uploads)} attached)")


def refuse_unless_supported(model: ModelConfig) -> None:
    if not supports_images(model):
        raise BadRequest(
            f"model {model.name!r} does not take images: choose a model that does "
            '(its entry says "vision": true, or litellm lists it as supporting vision), '
            "or send the text without the image"
        )


def rows_for(cid: str, mid: str, decoded: Sequence[Image]) -> list[StoredAttachment]:
    now = time.time()
    return [
        StoredAttachment(new_id(), mid, cid, "image", mime, name, data, now)
        for name, mime, data in decoded
    ]


def described(row: StoredAttachment) -> dict[str, Any]:
    """The row as the message's ``attachments`` names it (``protocol.Attachment``)."""
    return {"kind": "image", "name": row.name, "id": row.id, "mime": row.mime, "size": row.size}


def image_ids(attachments: Sequence[dict[str, Any]]) -> list[str]:
    return [str(a["id"]) for a in attachments if a.get("kind") == "image" and a.get("id")]


async def with_images(
    messages: list[dict[str, Any]], store: Store, model: ModelConfig
) -> list[dict[str, Any]]:
    """``messages`` with each ``IMAGES_KEY`` replaced by OpenAI content parts: the text,
    then one ``image_url`` part (a ``data:`` URL) per stored image; an image whose row
    is gone is left out. A model that takes no images (asked again, say, about an earlier
    turn's plot) gets the text and a note instead."""
    wanted = [aid for m in messages for aid in m.get(IMAGES_KEY, ())]
    if not wanted:
        return messages
    if not supports_images(model):
        return [_without_images(m) for m in messages]
    rows = await store.get_attachments(wanted)
    out = []
    for message in messages:
        ids = message.get(IMAGES_KEY)
        if not ids:
            out.append(message)
            continue
        parts: list[dict[str, Any]] = [{"type": "text", "text": message["content"]}]
        for aid in ids:
            if (row := rows.get(aid)) is not None:
                url = f"data:{row.mime};base64,{base64.b64encode(row.data).decode('ascii')}"
                parts.append({"type": "image_url", "image_url": {"url": url}})
        out.append({"role": message["role"], "content": parts})
    return out


async def stored(store: Store, cid: str, aid: str) -> StoredAttachment:
    """The row ``aid`` of conversation ``cid``, while its message exists; else NotFound."""
    row = (await store.get_attachments([aid])).get(aid)
    message = await store.get_message(row.message_id) if row is not None else None
    if row is None or message is None or row.conversation_id != cid:
        raise NotFound(f"no attachment {aid} in conversation {cid}")
    return row


def _without_images(message: dict[str, Any]) -> dict[str, Any]:
    ids = message.get(IMAGES_KEY)
    if not ids:
        return message
    note = f"[{len(ids)} image(s) attached here, not shown: this model takes no images]"
    return {"role": message["role"], "content": f"{message['content']}\n\n{note}"}
