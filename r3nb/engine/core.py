"""The engine: store, stream hub, models, limits and sweeper wired together.

Transport-free. The Jupyter server extension is one transport over it; embedded mode
(no server extension reachable) runs the same ``Engine`` inside the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

from tornado.ioloop import IOLoop

from r3nb import __version__
from r3nb.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    StoreUnavailable,
)
from r3nb.protocol import (
    SSE_HEARTBEAT_SECONDS,
    ConversationDict,
    MessageDict,
    MessageUpdate,
    Snapshot,
    SnapshotMessage,
    Source,
)

from . import lifecycle, limits, provider, usage
from .context import EXCLUDED, PINNED, fit
from .metrics import LoopLag
from .model_file import ModelsFile
from .models import ModelConfig, ModelRegistry
from .settings import Settings as Settings  # re-exported: apps import it from here
from .store import DEFAULT_TITLE, Final, NewMessage, StoreInterface, make_store, new_id
from .store.rows import MESSAGE_FIELDS
from .streams import Event, LiveStream, ReplySource, StreamHub
from .sweeper import Sweeper
from .watch import WatchHub

log = logging.getLogger("r3nb")

#: Fields of a message that change while it streams (see ``Engine.snapshot``): those
#: the wire declares for an update (``protocol.MessageUpdate``), but the text and offset.
_CHANGING = tuple(k for k in MessageUpdate.__annotations__ if k not in ("content", "offset"))


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the transport authenticated them (never from a request body)."""

    name: str
    source: Source  # "user" (browser or API client), "kernel" (kernel secret), "embedded"
    is_admin: bool = False  # may see everyone's usage, use every model
    groups: frozenset[str] = frozenset()  # JupyterHub groups (hub mode), for model_groups


class Engine:
    def __init__(
        self,
        settings: Settings,
        models: ModelRegistry,
        reply_source: ReplySource | None = None,
        models_file: ModelsFile | None = None,
    ) -> None:
        self.settings = settings
        #: Swapped whole by a reload (``use_models``); a reply holds its own ModelConfig.
        self.models = models
        self.models_file = models_file
        self.models_revision = 0  # +1 at each reload that changes the models
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
        self.rate_limiter = limits.RateLimiter(settings.rate_limit_per_minute)
        self.creation_limiter = limits.RateLimiter(
            settings.rate_limit_per_minute, what="new conversations"
        )
        self.loop_lag = LoopLag()
        self.counters = self.hub.counters  # one place for every counter health reports
        self.started_at = time.time()
        #: A store several processes share (PostgreSQL) says what the others wrote.
        self._shared_store = hasattr(self.store, "on_change")
        self._elsewhere: set[asyncio.Future[None]] = set()
        #: Models whose provider was unreachable on their last call (GET models says so).
        self.unreachable: dict[str, str] = {}

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
        self._listen_elsewhere()
        if self.models_file is not None:
            self.models_file.watch(self.use_models, self.settings.models_file_interval)

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
        if self.models_file is not None:
            self.models_file.stop()
        self.loop_lag.stop()
        self.sweeper.stop()
        await self.watches.stop()
        await self.hub.shutdown()
        await provider.aclose()
        self.store.close()

    # --- operations ------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        stats: dict[str, int] = {}
        if self.store.error is None:
            with contextlib.suppress(StoreUnavailable):
                stats = await self.store.stats()
        return {
            "version": __version__,
            "ok": self.store.error is None,
            "db_path": self.store.path,
            "store_error": self.store.error,
            "store_exposed": self.store.exposed,
            "provider_loaded": provider.is_loaded(),
            # Each stream adapter used so far (and r3nb's two): None when a reply would
            # start at once, else why it would wait (litellm importing in its worker).
            "adapters": provider.readiness(),
            "active_streams": len(self.hub.live),
            "loop_lag": self.loop_lag.report(),
            "tasks": len(asyncio.all_tasks()),  # a leak shows here first
            "snapshot_interval": self.settings.snapshot_interval,
            "revision": self.store.revision,
            "uptime": round(time.time() - self.started_at, 1),
            "counters": {
                key: self.counters.get(key, 0)
                for key in (
                    "streams_started",
                    "streams_complete",
                    "streams_error",
                    "streams_cancelled",
                    "streams_timed_out",
                    "flushes",
                    "flush_batches",
                    "rate_limited",
                )
            }
            | {"db_writes": self.store.writes, "swept": self.sweeper.swept},
            "store": stats,
            "watch": self.watches.report(),
            "models_revision": self.models_revision,
            "models_file": self.models_file.state() if self.models_file else None,
        }

    def may_use(self, caller: Caller, name: str) -> bool:
        """Whether ``caller`` may send to model ``name`` (``settings.model_groups``)."""
        groups = self.settings.model_groups.get(name)
        return groups is None or caller.is_admin or not caller.groups.isdisjoint(groups)

    def _model_for(self, caller: Caller, name: str | None) -> ModelConfig:
        """The model a reply for ``caller`` uses: 400 if unknown, 403 if not theirs."""
        model = self.models.resolve(name)
        if not self.may_use(caller, model.name):
            groups = ", ".join(self.settings.model_groups[model.name])
            raise Forbidden(
                f"the model {model.name!r} is for the groups {groups} only "
                "(c.R3nbApp.model_groups): pick another model, or ask an admin"
            )
        return model

    def models_report(self, caller: Caller | None = None) -> dict[str, Any]:
        """``GET models``: each model ``caller`` may use, with whether it can answer now
        and, if not, why (so the picker can say so instead of failing on Send)."""
        models = self.models  # one registry for the whole report, whatever a reload does
        report = models.public() | {"revision": self.models_revision}
        if caller is not None:
            report["models"] = [m for m in report["models"] if self.may_use(caller, m["name"])]
        for entry in report["models"]:
            model = models.resolve(entry["name"])
            reason = model.missing_key_reason()
            if reason is None:
                reason = provider.not_ready(model)
            if reason is None:
                reason = self.unreachable.get(model.name)
            entry["ready"] = reason is None
            entry["reason"] = reason
        return report

    def use_models(self, registry: ModelRegistry) -> bool:
        """Serve ``registry`` from now on (one assignment: a send resolves its model in
        one registry or the other, never a mix); whether anything changed."""
        old, self.models = self.models, registry
        if old.same_as(registry):
            return False
        self.models_revision += 1
        for name in list(self.unreachable):  # a changed entry deserves a fresh try
            if old.get(name) != registry.get(name):
                self.unreachable.pop(name, None)
        log.info(
            "r3nb: models reloaded (revision %d): %s (default %s)",
            self.models_revision, ", ".join(registry.names()), registry.default,
        )  # fmt: skip
        return True

    async def reload_models(self, caller: Caller | None = None) -> dict[str, Any]:
        """``POST models/reload``: read the models file now and apply it. 409 without a
        file; ``ModelsFileInvalid`` (422) when it cannot be used (nothing changes)."""
        if self.models_file is None:
            raise Conflict(
                "no models file is configured; set c.R3nbApp.models_file to a JSON file "
                "the server can reload"
            )
        changed = self.use_models(await self.models_file.reload())
        return self.models_report(caller) | {
            "changed": changed,
            "models_file": self.models_file.state(),
        }

    def _note_outcome(self, model_name: str, message: MessageDict) -> None:
        """Remember a model whose provider could not be reached (until it answers)."""
        error = message.get("error") or ""
        if message["status"] == "error" and error.startswith("cannot reach"):
            self.unreachable[model_name] = f"on the last try: {error}"
        elif message["status"] == "complete":
            self.unreachable.pop(model_name, None)

    async def create_conversation(self, caller: Caller, title: str | None) -> ConversationDict:
        # Creations count in the person's limits: an unlimited loop of them would bury
        # everyone's conversations in the picker.
        self._limit(lambda: self.creation_limiter.check(caller.name))
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
        conversation, messages, revision, streaming, branch = found
        out: list[SnapshotMessage] = []
        for message in messages:
            held = offsets.get(message["id"])
            if held is not None and 0 < held <= len(message["content"]):
                # The observer holds this message: send only what can change while it
                # streams, and only the text after what it holds. This is most polls'
                # whole payload, so it is what keeps an observer's bytes near the text's.
                update = {k: message[k] for k in _CHANGING}  # type: ignore[literal-required]
                update["content"] = message["content"][held:]
                update["offset"] = held
                out.append(update)  # type: ignore[arg-type]
            else:
                out.append(message)  # type: ignore[arg-type]
        # The header only when it changed (or on a first load): it is ~250 bytes. The
        # branch changes only with it (every branch change is a new header revision).
        changed = since == 0 or conversation["revision"] > since
        return {
            "conversation": conversation if changed else None,
            "branch": branch if changed else None,
            "messages": out,
            "revision": revision,
            "streaming": streaming,
        }

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
    ) -> tuple[MessageDict, MessageDict, LiveStream]:
        """Store the prompt and a ``streaming`` placeholder, then start the reply.

        The prompt follows the conversation's head; with ``replaces`` (edit and resend)
        it is a new version of that user message instead: it follows the same parent,
        on a new branch, and the old version stays."""
        size = len(content) + sum(len(a.get("summary", "")) for a in attachments or [])
        limits.check_prompt_size(size, self.settings.max_prompt_chars)
        model = self._model_for(caller, model_name)
        header = await self._conversation(cid)
        parent = header["head_id"]
        if replaces is not None:
            parent = (await self._message_in(cid, replaces, "user", "edit"))["parent_id"]
        self._one_reply_at_a_time(cid)  # before spending a rate-limit token on it
        await self._admit(caller)
        prompt = NewMessage(
            "user", content, "complete", author=caller.name, source=caller.source,
            attachments=tuple(attachments or ()), id=new_id(),
        )  # fmt: skip
        turn = ("user", content, list(attachments or []), None)
        created, stream = await self._exchange(
            caller, header, model, parent, prompt, turn, kernel_id
        )
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
        model = self._model_for(caller, model_name or _known(self.models, old["model"]))
        self._one_reply_at_a_time(cid)
        await self._admit(caller)
        created, stream = await self._exchange(
            caller, header, model, old["parent_id"], None, None, kernel_id
        )
        return created[0], stream

    async def _exchange(
        self,
        caller: Caller,
        header: ConversationDict,
        model: ModelConfig,
        parent: str | None,
        prompt: NewMessage | None,
        turn: tuple[str, str, list[dict[str, str]], str | None] | None,
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
        reply = NewMessage(
            "assistant", "", "streaming", model=model.name, author=caller.name,
            source=caller.source, streaming_for=kernel_id, id=new_id(),
            context_left_out=fitted.left_out,
        )  # fmt: skip
        # Checked again here, with no await between the check and ``hub.start``, so two
        # sends racing into one conversation cannot both pass.
        self._one_reply_at_a_time(cid)
        # The rows are written while the provider is already being asked: the commit
        # (milliseconds) overlaps the provider's time to first token instead of adding
        # to it. The insert is queued on the DB thread before anything the stream can
        # write (flushes, the end), so it always lands first; ``start`` still waits for
        # the commit, so nothing is acknowledged before it is durable.
        rows = [prompt, reply] if prompt is not None else [reply]
        title = _title_from(prompt.content) if prompt is not None else ""
        insert = asyncio.ensure_future(self.store.begin_exchange(cid, rows, title, parent))
        placeholder = _placeholder(cid, reply)
        stream = self.hub.start(placeholder, model, fitted.messages)
        stream.left_out = fitted.left_out
        stream.pinned_over_budget = fitted.over_budget
        stream.on_end = lambda final: self._note_outcome(model.name, final)
        try:
            created = await insert
        except BaseException:
            stream.abort("the message could not be stored")
            raise
        if created is None:
            stream.abort("the conversation was deleted")
            raise NotFound(f"no conversation {cid}, or the message to follow was deleted")
        stream.message = created[-1]
        return created, stream

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
        self._one_reply_at_a_time(cid)
        try:
            return await self.store.move_head(cid, mid, newest=True)
        except LookupError:
            raise NotFound(f"no message {mid} in conversation {cid}") from None

    async def delete_turn(self, cid: str, mid: str) -> tuple[ConversationDict, list[str]]:
        """Delete prompt ``mid`` and every reply to it; the turns after it stay."""
        await self._conversation(cid)
        await self._message_in(cid, mid, "user", "deleting a turn (give its prompt)")
        self._one_reply_at_a_time(cid)
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

    async def _admit(self, caller: Caller) -> None:
        """Per-person limits: rate, concurrent streams, daily budgets (429 each)."""
        self._limit(lambda: self.rate_limiter.check(caller.name))
        self._limit(
            lambda: limits.check_concurrent(
                self.hub.active_for(caller.name), self.settings.max_concurrent_streams
            )
        )
        try:
            await usage.check_budgets(self.store, caller.name, self.settings.budgets)
        except RateLimited:
            self.counters["rate_limited"] += 1
            raise

    def _one_reply_at_a_time(self, cid: str) -> None:
        """A second prompt while a reply is being written would interleave the turns
        (and the model would see a question without its answer): refuse it, saying why
        and who can end the wait."""
        for stream in self.hub.live.values():
            if stream.conversation_id == cid and stream.final is None:
                raise Conflict(
                    f"a reply is still being written in this conversation (asked by "
                    f"{stream.author or 'someone'}); wait for it to finish, or stop it",
                    message_id=stream.message_id,
                )

    def _limit(self, check: Callable[[], None]) -> None:
        """Run one limit check, counting refusals for health."""
        try:
            check()
        except RateLimited:
            self.counters["rate_limited"] += 1
            raise

    async def cancel(self, mid: str, caller: Caller) -> MessageDict:
        final = await self.hub.cancel(mid, by=caller.name)
        if final is not None:
            return final
        message = await self.store.get_message(mid)
        if message is None:
            raise NotFound(f"no message {mid}")
        if message["status"] == lifecycle.STREAMING and self._shared_store:
            # Streaming in another process on the same database (hub service processes):
            # end the row here, with the text that process last flushed; that process
            # hears of the change (``_changed_elsewhere``) and stops calling the provider.
            status, note = lifecycle.interrupted(None, caller.name)
            ended = await self.store.finalize(mid, Final(message["content"], status, note))
            return ended or message
        return message  # already ended: cancelling is idempotent

    # --- several processes on one store (PostgreSQL) ---------------------------------

    def _listen_elsewhere(self) -> None:
        """Hear what other processes write to a shared store (``on_change``, from its
        listener thread): a reply this process streams may have been stopped there."""
        hooks = getattr(self.store, "on_change", None)
        if hooks is None:
            return
        loop = IOLoop.current()  # the loop the timers run on (add_callback: any thread)

        def changed(cids: frozenset[str] | None) -> None:
            loop.add_callback(self._changed_elsewhere, cids)

        hooks.append(changed)

    def _changed_elsewhere(self, cids: frozenset[str] | None) -> None:
        streams = [s for s in self.hub.live.values() if cids is None or s.conversation_id in cids]
        for stream in streams:
            task = asyncio.ensure_future(self._stop_if_ended_elsewhere(stream))
            self._elsewhere.add(task)
            task.add_done_callback(self._elsewhere.discard)

    async def _stop_if_ended_elsewhere(self, stream: LiveStream) -> None:
        """Stop calling the provider for a reply whose row another process ended (a
        Stop there): its end is already stored, so this one's is a no-op (first wins)."""
        with contextlib.suppress(StoreUnavailable):
            stored = await self.store.get_message(stream.message_id)
            if stored is not None and stored["status"] != lifecycle.STREAMING:
                await self.hub.cancel(stream.message_id, by="another r3nb process")

    async def delete_conversation(self, cid: str) -> None:
        for stream in list(self.hub.live.values()):
            if stream.conversation_id == cid:
                await self.hub.cancel(stream.message_id)
        if not await self.store.delete_conversation(cid):
            raise NotFound(f"no conversation {cid}")


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


def _known(models: ModelRegistry, name: str | None) -> str | None:
    """``name`` if it is still configured, else None (the default model)."""
    return name if name in models.names() else None


def _title_from(content: str) -> str:
    line = " ".join(content.split())
    return line[:60] + ("…" if len(line) > 60 else "") if line else DEFAULT_TITLE


def _for_model(role: str, content: str, attachments: list[dict[str, str]]) -> dict[str, Any]:
    """The text a model sees for one turn: the prompt plus its attached context."""
    if attachments:
        context = "\n\n".join(a.get("summary", "") for a in attachments)
        content = f"{content}\n\n---\nContext from the notebook:\n\n{context}"
    return {"role": role, "content": content}
