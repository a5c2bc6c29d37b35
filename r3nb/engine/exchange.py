"""One exchange: what the model is sent, the rows written, the reply started.

The prompt for the model is built here (the branch ending at the parent, what the
person excluded left out and what they pinned kept, fitted to the context window), and
the rows are written while the provider is already being asked.
"""

from __future__ import annotations

import time
from typing import Any, cast

from r3nb.errors import NotFound
from r3nb.protocol import ConversationDict, MessageDict

from . import images, provider
from .admission import Admission
from .caller import Caller
from .context import EXCLUDED, IMAGES_KEY, PINNED, fit
from .model_access import ModelAccess
from .models import ModelConfig
from .store import DEFAULT_TITLE, NewMessage, StoreInterface, new_id
from .store.rows import MESSAGE_FIELDS
from .streams import LiveStream, StreamHub

#: One turn of a conversation as the model sees it: role, text, attachments, mark.
Turn = tuple[str, str, list[dict[str, Any]], str | None]


class Exchanges:
    """Starts replies: builds the model's prompt, writes the rows, starts the stream."""

    def __init__(
        self, store: StoreInterface, hub: StreamHub, admission: Admission, models: ModelAccess
    ) -> None:
        self.store = store
        self.hub = hub
        self.admission = admission
        self.models = models

    async def begin(
        self,
        caller: Caller,
        header: ConversationDict,
        model: ModelConfig,
        parent: str | None,
        prompt: NewMessage | None,
        turn: Turn | None,
        kernel_id: str | None,
    ) -> tuple[list[MessageDict], LiveStream]:
        """Write ``prompt`` (if any) and a streaming reply after ``parent`` and start the
        reply; the model sees the branch ending at ``parent`` (then ``turn``)."""
        cid = header["id"]
        context = self.store.cached_context(cid, parent)
        if context is None:
            context = await self.store.context_for(cid, parent)
        turns = [*context, turn] if turn is not None else context
        # What the person excluded is never sent; what they pinned always is.
        turns = [t for t in turns if t[3] != EXCLUDED]
        system = header.get("system_prompt") or model.system_prompt
        prompt_messages = [{"role": "system", "content": system}] if system else []
        pinned = [len(prompt_messages) + i for i, t in enumerate(turns) if t[3] == PINNED]
        prompt_messages += [_for_model(*t[:3]) for t in turns]
        fitted = fit(
            prompt_messages, provider.context_window(model), model.params.get("max_tokens"), pinned
        )
        messages = await images.with_images(fitted.messages, self.store, model)
        reply = NewMessage(
            "assistant", "", "streaming", model=model.name, author=caller.name,
            source=caller.source, streaming_for=kernel_id, id=new_id(),
            context_left_out=fitted.left_out,
        )  # fmt: skip
        # Checked again here, with no await between the check and ``hub.start``, so two
        # sends racing into one conversation cannot both pass.
        self.admission.one_reply_at_a_time(cid)
        # The rows are written while the provider is already being asked: the commit
        # (milliseconds) overlaps the provider's time to first token instead of adding
        # to it. ``start`` still waits for the commit, so nothing is acknowledged before
        # it is durable.
        rows = [prompt, reply] if prompt is not None else [reply]
        title = _title_from(prompt.content) if prompt is not None else ""
        stream = self.hub.start(_placeholder(cid, reply), model, messages)
        stream.left_out = fitted.left_out
        stream.pinned_over_budget = fitted.over_budget
        stream.on_end = lambda final: self.models.note_outcome(model.name, final)
        try:
            # Awaited at once, not wrapped in a task: the insert joins the store's queue
            # in this same step, before the stream's task has run at all, so it lands
            # before anything the stream writes (flushes, the end). A task would join
            # the queue a loop turn later, behind every request that arrived meanwhile
            # (measured in a burst of 50: ~13 ms later at the median).
            created = await self.store.begin_exchange(cid, rows, title, parent)
        except BaseException:
            stream.abort("the message could not be stored")
            raise
        if created is None:
            stream.abort("the conversation was deleted")
            raise NotFound(f"no conversation {cid}, or the message to follow was deleted")
        stream.message = created[-1]
        return created, stream


def _placeholder(cid: str, reply: NewMessage) -> MessageDict:
    """The reply as the stream knows it until its row is committed (seq etc. follow).
    Every stored field starts None (``MESSAGE_FIELDS``: a new column needs nothing here
    unless a streaming reply must show it)."""
    now = time.time()
    message: dict[str, Any] = dict.fromkeys(MESSAGE_FIELDS)
    message.update(
        id=reply.id or "", conversation_id=cid, seq=0, role="assistant", content="",
        status="streaming", model=reply.model, author=reply.author, source=reply.source,
        streaming_for=reply.streaming_for, attachments=[], created_at=now, updated_at=now,
        revision=0,
    )  # fmt: skip
    return cast(MessageDict, message)


def _title_from(content: str) -> str:
    line = " ".join(content.split())
    return line[:60] + ("…" if len(line) > 60 else "") if line else DEFAULT_TITLE


def _for_model(role: str, content: str, attachments: list[dict[str, Any]]) -> dict[str, Any]:
    """What a model sees of one turn: the prompt plus its attached text context, and the
    ids of its images (``IMAGES_KEY``: turned into content parts after fitting)."""
    texts = [a.get("summary", "") for a in attachments if a.get("kind") != "image"]
    if texts:
        context = "\n\n".join(texts)
        content = f"{content}\n\n---\nContext from the notebook:\n\n{context}"
    message: dict[str, Any] = {"role": role, "content": content}
    if ids := images.image_ids(attachments):
        message[IMAGES_KEY] = ids
    return message
