"""The engine: store, stream hub, models, limits and sweeper wired together.

Transport-free. The Jupyter server extension is one transport over it; embedded mode
(no server extension reachable) runs the same ``Engine`` inside the kernel. ``Engine``
is the only thing routes call; each of its jobs beyond the conversation operations
here has a module of its own that it delegates to: ``admission.py`` (limits, one reply
at a time), ``exchange.py`` (what the model is sent, the rows written, the reply
started), ``elsewhere.py`` (Stop across processes on one store), ``model_access.py``
(models, who may use them, reloads), ``snapshots.py`` (polls) and ``health.py``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from r3nb.errors import BadRequest, NotFound, StoreUnavailable
from r3nb.protocol import SSE_HEARTBEAT_SECONDS, ConversationDict, MessageDict, Snapshot, UsageRow

from . import health, images, provider, reports, snapshots, usage
from .admission import Admission
from .caller import Caller as Caller  # re-exported: transports import it from here
from .elsewhere import Elsewhere
from .exchange import Exchanges
from .limits import RateLimiter
from .metrics import LoopLag
from .model_access import ModelAccess
from .model_file import ModelsFile
from .models import ModelRegistry
from .settings import Settings as Settings  # re-exported: apps import it from here
from .store import DEFAULT_TITLE, NewMessage, StoreInterface, make_store, new_id
from .store.values import StoredAttachment
from .streams import Event, LiveStream, ReplySource, StreamHub
from .sweeper import Sweeper
from .watch import WatchHub

log = logging.getLogger("r3nb")


class Engine:
    def __init__(
        self,
        settings: Settings,
        models: ModelRegistry,
        reply_source: ReplySource | None = None,
        models_file: ModelsFile | None = None,
    ) -> None:
        self.settings = settings
        self.model_access = ModelAccess(settings, models, models_file)
        # The engine knows the store only by its interface (store/interface.py); the
        # location picks the backend (store/factory.py: a path is DuckDB, a
        # postgresql:// URL is PostgreSQL for the hub service).
        self.store: StoreInterface = make_store(settings.db_path)
        self.hub = StreamHub(
            self.store,
            reply_source or provider.stream_reply,
            snapshot_interval=settings.snapshot_interval,
            first_token_timeout=settings.first_token_timeout,
            idle_timeout=settings.idle_timeout,
            max_duration=settings.max_duration,
        )
        # Observers' watch streams: one producer per watched conversation (watch.py).
        self.watches = WatchHub(
            self.store, self.hub.live, settings.snapshot_interval, SSE_HEARTBEAT_SECONDS
        )
        self.sweeper = Sweeper(
            self.store,
            self.hub,
            stale_after=settings.stale_after,
            interval=settings.cleanup_interval,
        )
        self.admission = Admission(settings, self.store, self.hub)
        self.exchanges = Exchanges(self.store, self.hub, self.admission, self.model_access)
        self.elsewhere = Elsewhere(self.store, self.hub)
        self.loop_lag = LoopLag()
        self.counters = self.hub.counters  # one place for every counter health reports
        self.started_at = time.time()

    @property
    def models(self) -> ModelRegistry:
        """The registry served now: swapped whole by a reload (``use_models``); a reply
        holds its own ModelConfig."""
        return self.model_access.registry

    @models.setter
    def models(self, registry: ModelRegistry) -> None:
        self.model_access.registry = registry

    @property
    def creation_limiter(self) -> RateLimiter:
        """New conversations per person per minute (``admission.py`` owns it)."""
        return self.admission.creation_limiter

    # --- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Open the store. On failure the engine still runs and says why (health, 503s)."""
        try:
            self.store.open()
        except StoreUnavailable as e:
            log.error("%s", e.message)

    def recover_now(self) -> None:
        """Settle rows an earlier process left ``streaming``. Blocks: call at start-up,
        before the first request, so no client ever sees a zombie stream."""
        if self.store.error is None:
            self.sweeper.recover_blocking()

    def start_timers(self) -> None:
        """The sweeper and the loop-lag probe: PeriodicCallbacks on the current loop."""
        self.sweeper.start()
        self.loop_lag.start()
        self.elsewhere.listen()
        models_file = self.model_access.models_file
        if models_file is not None:
            models_file.watch(self.use_models, self.settings.models_file_interval)

    async def start(self) -> None:
        """Recover, then start the timers (for callers already inside a loop)."""
        if self.store.error is None:
            await self.sweeper.recover()
        self.start_timers()

    async def interrupt(self, reason: str) -> None:
        """End every live reply now, its whole text kept, status ``error``: ``reason``."""
        await self.hub.shutdown(reason)

    async def stop(self) -> None:
        """In reverse order of start: timers, in-flight streams (flushed, finalised), DB."""
        if self.model_access.models_file is not None:
            self.model_access.models_file.stop()
        self.loop_lag.stop()
        self.sweeper.stop()
        await self.watches.stop()
        await self.hub.shutdown()
        await provider.aclose()
        self.store.close()

    # --- health and models (health.py, model_access.py) ------------------------------

    async def health(self) -> dict[str, Any]:
        return await health.report(self)

    def may_use(self, caller: Caller, name: str) -> bool:
        """Whether ``caller`` may send to model ``name`` (``settings.model_groups``)."""
        return self.model_access.may_use(caller, name)

    def models_report(self, caller: Caller | None = None) -> dict[str, Any]:
        """``GET models``: each model ``caller`` may use, and whether it can answer now."""
        return self.model_access.report(caller)

    def use_models(self, registry: ModelRegistry) -> bool:
        """Serve ``registry`` from now on; whether anything changed."""
        return self.model_access.use(registry)

    async def reload_models(self, caller: Caller | None = None) -> dict[str, Any]:
        """``POST models/reload``: read the models file now and apply it."""
        return await self.model_access.reload(caller)

    # --- conversations ---------------------------------------------------------------

    async def create_conversation(self, caller: Caller, title: str | None) -> ConversationDict:
        self.admission.admit_creation(caller)
        return await self.store.create_conversation(title or DEFAULT_TITLE, caller.name)

    async def list_conversations(
        self, limit: int, cursor: str | None, query: str | None
    ) -> tuple[list[ConversationDict], str | None]:
        return await self.store.list_conversations(limit, cursor, query)

    async def update_conversation(
        self, cid: str, title: str | None, model: str | None, system_prompt: str | None = None
    ) -> ConversationDict:
        """Rename, set the model the conversation's next replies use, set or clear
        (``""``) its own system prompt."""
        if model is not None:
            model = self.models.resolve(model).name  # 400 for an unknown model
        updated = await self.store.update_conversation(cid, title, model, system_prompt)
        if updated is None:
            raise NotFound(f"no conversation {cid}")
        return updated

    async def snapshot(self, cid: str, since: int, offsets: dict[str, int]) -> Snapshot:
        found = await self.store.snapshot(cid, since)
        if found is None:
            raise NotFound(f"no conversation {cid}")
        return snapshots.trimmed(found, since, offsets)

    def watch(self, cid: str, since: int, held: dict[str, int]) -> AsyncIterator[Event]:
        """``GET conversations/{cid}/watch``: what changes after ``since`` (``held``: the
        text the watcher has of streaming messages), pushed at the snapshot cadence."""
        return self.watches.watch(cid, since, held)

    async def send(
        self,
        caller: Caller,
        cid: str,
        content: str,
        *,
        model_name: str | None = None,
        kernel_id: str | None = None,
        attachments: list[dict[str, str]] | None = None,
        replaces: str | None = None,
        image_uploads: Sequence[images.Image] = (),
    ) -> tuple[MessageDict, MessageDict, LiveStream]:
        """Store the prompt and a ``streaming`` placeholder, then start the reply.

        The prompt follows the conversation's head; with ``replaces`` (edit and resend)
        it is a new version of that user message instead: it follows the same parent,
        on a new branch, and the old version stays. ``image_uploads`` (checked by
        ``images.decode``) are refused for a model that takes no images, before anything
        is stored; else stored as attachment rows first (``images.py``)."""
        self.admission.check_prompt_size(content, attachments)
        model = self.model_access.model_for(caller, model_name)
        if image_uploads:
            images.refuse_unless_supported(model)
        header = await self._conversation(cid)
        parent = header["head_id"]
        if replaces is not None:
            parent = (await self._message_in(cid, replaces, "user", "edit"))["parent_id"]
        self.admission.one_reply_at_a_time(cid)  # before spending a rate-limit token on it
        await self.admission.admit(caller)
        mid = new_id()
        rows = images.rows_for(cid, mid, image_uploads)
        described = [*(attachments or ()), *(images.described(r) for r in rows)]
        prompt = NewMessage(
            "user", content, "complete", author=caller.name, source=caller.source,
            attachments=tuple(described), id=mid,
        )  # fmt: skip
        turn = ("user", content, described, None)
        await self.store.add_attachments(rows)
        try:
            created, stream = await self.exchanges.begin(
                caller, header, model, parent, prompt, turn, kernel_id
            )
        except Exception:
            if rows:  # the prompt was not stored: its images go too
                with contextlib.suppress(Exception):
                    await self.store.delete_attachments(mid)
            raise
        user, assistant = created
        return user, assistant, stream

    async def regenerate(
        self,
        caller: Caller,
        cid: str,
        mid: str,
        *,
        model_name: str | None = None,
        kernel_id: str | None = None,
    ) -> tuple[MessageDict, LiveStream]:
        """A new version of reply ``mid``: the same prompt asked again (of ``model_name``,
        else the model of ``mid``), on a new branch; the old reply stays retrievable."""
        header = await self._conversation(cid)
        old = await self._message_in(cid, mid, "assistant", "regenerate")
        if old["parent_id"] is None:
            raise BadRequest(f"message {mid} follows no prompt: there is nothing to ask again")
        access = self.model_access
        model = access.model_for(caller, model_name or access.known(old["model"]))
        self.admission.one_reply_at_a_time(cid)
        await self.admission.admit(caller)
        created, stream = await self.exchanges.begin(
            caller, header, model, old["parent_id"], None, None, kernel_id
        )
        return created[0], stream

    async def _conversation(self, cid: str) -> ConversationDict:
        header = await self.store.get_conversation(cid)
        if header is None:
            raise NotFound(f"no conversation {cid}")
        return header

    async def _message_in(self, cid: str, mid: str, role: str, action: str) -> MessageDict:
        """Message ``mid`` of conversation ``cid``: 404 if it is not there, 400 if it is
        not a ``role`` message (what ``action`` applies to)."""
        message = self.store.recent.get(mid) or await self.store.get_message(mid)
        if message is None or message["conversation_id"] != cid:
            raise NotFound(f"no message {mid} in conversation {cid}")
        if message["role"] != role:
            raise BadRequest(
                f"message {mid} is a{'n' if message['role'][0] in 'aeiou' else ''}"
                f" {message['role']} message; {action} applies to {role} messages"
            )
        return message

    # --- branches --------------------------------------------------------------------

    async def move_head(self, cid: str, mid: str | None) -> ConversationDict:
        """Show the branch through message ``mid``, down to its most recently written
        message (the panel's ‹ › switcher); ``None`` clears: an empty branch whose next
        prompt starts afresh, every older message kept and reachable by switching."""
        await self._conversation(cid)
        self.admission.one_reply_at_a_time(cid)
        try:
            return await self.store.move_head(cid, mid, newest=True)
        except LookupError:
            raise NotFound(f"no message {mid} in conversation {cid}") from None

    async def delete_turn(self, cid: str, mid: str) -> tuple[ConversationDict, list[str]]:
        """Delete prompt ``mid`` and every reply to it; the turns after it stay."""
        await self._conversation(cid)
        await self._message_in(cid, mid, "user", "deleting a turn (give its prompt)")
        self.admission.one_reply_at_a_time(cid)
        try:
            return await self.store.delete_turn(cid, mid)
        except LookupError:
            raise NotFound(f"no message {mid} in conversation {cid}") from None

    async def mark_message(self, cid: str, mid: str, mark: str | None) -> MessageDict:
        """Pin message ``mid`` (always sent to the model), exclude it (never sent) or
        neither (``None``). Any message, any time: it applies from the next reply on."""
        await self._conversation(cid)
        try:
            return await self.store.set_context(cid, mid, mark)
        except LookupError:
            raise NotFound(f"no message {mid} in conversation {cid}") from None

    # --- ending replies --------------------------------------------------------------

    async def cancel(self, mid: str, caller: Caller) -> MessageDict:
        """Stop reply ``mid``: here if this process streams it, else its row, if another
        process streams it on a shared store (``elsewhere.py``). Idempotent."""
        final = await self.hub.cancel(mid, by=caller.name)
        if final is not None:
            return final
        message = await self.store.get_message(mid)
        if message is None:
            raise NotFound(f"no message {mid}")
        return await self.elsewhere.end_stored(message, caller.name) or message

    # --- what routes read: through ``Engine``, never its store or stream hub -----------

    async def message(self, mid: str) -> MessageDict:
        """Message ``mid``: live (fresher than its last flush) or stored."""
        live = self.hub.live.get(mid)
        message = live.message if live else await self.store.get_message(mid)
        if message is None:
            raise NotFound(f"no message {mid}")
        return message

    def follow(self, mid: str, offset: int) -> AsyncIterator[Event]:
        """Reply ``mid``'s events from code point ``offset`` on, to its end."""
        return self.hub.follow(mid, offset, SSE_HEARTBEAT_SECONDS)

    async def usage(self, caller: Caller) -> dict[str, Any]:
        return await usage.usage_report(self.store, caller.name, caller.is_admin)

    async def usage_report(self, query: Mapping[str, str]) -> tuple[dict[str, Any], list[UsageRow]]:
        return await reports.usage_report(self.store, query)

    async def audit(self, query: Mapping[str, str]) -> dict[str, Any]:
        return await reports.audit(self.store, query)

    async def attachment(self, cid: str, aid: str) -> StoredAttachment:
        """An image sent with a prompt of ``cid`` (its chip's thumbnail)."""
        return await images.stored(self.store, cid, aid)

    async def delete_conversation(self, cid: str) -> None:
        for stream in list(self.hub.live.values()):
            if stream.conversation_id == cid:
                await self.hub.cancel(stream.message_id)
        if not await self.store.delete_conversation(cid):
            raise NotFound(f"no conversation {cid}")
