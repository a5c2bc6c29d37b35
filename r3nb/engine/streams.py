"""StreamHub: one asyncio task per assistant message, its live text, flushes and end.

Subscribers never get pushed copies of deltas: each one *pulls* the text after its own
offset when the stream signals a change. A slow or stalled reader therefore costs one
integer, not a growing queue, and a fast one sees every delta at once. The DB sees the
text once per ``snapshot_interval`` (batched across streams, per-stream phase) and once
at the end; never per token.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from r3nb.errors import NotFound, ProviderError
from r3nb.protocol import MessageDict, Status

from . import failures, lifecycle, redact
from .adapters import Requested, Usage
from .models import ModelConfig
from .store import Final, StoreInterface

log = logging.getLogger("r3nb.streams")

#: The provider call: (model, messages) → text deltas then one Usage. Injectable so the
#: hub can be driven by any source; the server always passes ``provider.stream_reply``.
ReplySource = Callable[
    [ModelConfig, list[dict[str, Any]]], AsyncIterator["str | Usage | Requested"]
]

Event = tuple[str, Any]  # ("delta" | "done" | "heartbeat", payload)


def judge_ending(length: int, finish_reason: str | None) -> tuple[str, str | None]:
    """See ``lifecycle.ending`` (kept here for the callers that import it from here)."""
    return lifecycle.ending(length, finish_reason)


class LiveStream:
    """The in-memory state of one streaming assistant message."""

    def __init__(self, message: MessageDict, model: ModelConfig, snapshot_interval: float):
        self.message_id = message["id"]
        self.conversation_id = message["conversation_id"]
        self.author = message["author"]
        self.model = model
        self.message = message
        # Text as appended pieces plus cumulative end offsets: ``text_from`` is a bisect,
        # so a follower costs O(new text), never O(whole reply), per change.
        self._parts: list[str] = []
        self._ends: list[int] = []
        self.length = 0
        self.final: MessageDict | None = None
        self.done = asyncio.Event()
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None
        self.started = time.monotonic()
        self.last_activity = self.started
        self.requested = False  # deadlines run from the provider call, not from our set-up
        self.flushed_length = 0
        # Per-stream phase: streams started together still flush at different moments.
        self.next_flush_at = self.started + snapshot_interval * (0.5 + random.random() / 2)
        self.end_reason: str | None = None  # set before cancelling: why it ended as error
        self.left_out = 0  # earlier turns not sent to the model (its context window)
        self.pinned_over_budget = False  # the pinned turns alone exceed that window
        self.on_end: Callable[[MessageDict], None] | None = None  # told the final message
        self.cancelled_by: str | None = None

    def abort(self, reason: str) -> None:
        """End this reply early as ``error`` with ``reason`` (its text is kept): the one
        way a timeout, a shutdown or a failed write ends a live reply (lifecycle.py)."""
        self.end_reason = self.end_reason or reason
        if self.task is not None:
            self.task.cancel()

    def append(self, text: str) -> None:
        self._parts.append(text)
        self.length += len(text)
        self._ends.append(self.length)
        self.last_activity = time.monotonic()
        self.notify()

    def notify(self) -> None:
        """Wake every follower: new text, or the end."""
        changed, self._changed = self._changed, asyncio.get_running_loop().create_future()
        changed.set_result(None)

    def text(self) -> str:
        """The whole text so far; compacts the pieces into one (called per flush)."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
            self._ends = [self.length]
        return self._parts[0] if self._parts else ""

    def text_from(self, offset: int) -> str:
        if offset >= self.length:
            return ""
        i = bisect.bisect_right(self._ends, offset)
        start = self._ends[i - 1] if i else 0
        head = self._parts[i][offset - start :]
        return head + "".join(self._parts[i + 1 :]) if i + 1 < len(self._parts) else head

    def changed(self) -> asyncio.Future[None]:
        return self._changed


class StreamHub:
    def __init__(
        self,
        store: StoreInterface,
        reply_source: ReplySource,
        *,
        snapshot_interval: float = 2.0,
        first_token_timeout: float = 120.0,
        idle_timeout: float = 120.0,
        max_duration: float = 3600.0,
    ) -> None:
        self.store = store
        self.reply_source = reply_source
        self.snapshot_interval = snapshot_interval
        self.first_token_timeout = first_token_timeout
        self.idle_timeout = idle_timeout
        self.max_duration = max_duration
        self.live: dict[str, LiveStream] = {}
        self.counters: Counter[str] = Counter()
        self._ticker: asyncio.Task[None] | None = None

    # --- starting and running --------------------------------------------------------

    def start(
        self, message: MessageDict, model: ModelConfig, context: list[dict[str, Any]]
    ) -> LiveStream:
        stream = LiveStream(message, model, self.snapshot_interval)
        self.live[stream.message_id] = stream
        stream.task = asyncio.create_task(
            self._run(stream, context), name=f"r3nb-stream-{stream.message_id}"
        )
        self.counters["streams_started"] += 1
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick(), name="r3nb-stream-ticker")
        return stream

    async def _run(self, stream: LiveStream, context: list[dict[str, Any]]) -> None:
        usage = Usage(None, None, None)
        status, error = "complete", None
        model = stream.model.for_person(stream.author)
        try:
            async for item in self.reply_source(model, context):
                if isinstance(item, str):
                    stream.append(item)
                elif isinstance(item, Usage):
                    usage = item
                else:  # Requested: the provider call starts now, and so do deadlines
                    stream.requested = True
                    stream.started = stream.last_activity = time.monotonic()
        except asyncio.CancelledError:
            status, error = lifecycle.interrupted(stream.end_reason, stream.cancelled_by)
        except ProviderError as e:
            status, error = "error", e.reason
        except Exception as e:  # a bug of ours must still end the message, not leave it hanging
            log.exception("stream %s failed", stream.message_id)
            status, error = "error", redact.cut(f"internal error in r3nb: {type(e).__name__}: {e}")
        if status == "complete":
            status, error = lifecycle.ending(stream.length, usage.finish_reason)
        final = Final(
            content=stream.text(),
            status=status,
            error=error,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost=usage.cost,
        )
        await self._finish(stream, final)

    async def _finish(self, stream: LiveStream, final: Final) -> None:
        """Persist the end state even if this task is cancelled again meanwhile."""
        write = asyncio.ensure_future(self.store.finalize(stream.message_id, final))
        while not write.done():
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                continue
            except Exception:
                break
        message: MessageDict
        if write.exception() is None and write.result() is not None:
            message = write.result()  # type: ignore[assignment]
        else:
            log.error(
                "could not persist the end of message %s: %s",
                stream.message_id,
                write.exception(),
            )
            status = cast(Status, final.status)
            message = {**stream.message, "content": final.content, "status": status}
            message["error"] = final.error
        stream.final = message
        if stream.on_end is not None:
            stream.on_end(message)
        self.counters[f"streams_{final.status}"] += 1
        del self.live[stream.message_id]
        stream.done.set()
        stream.notify()

    # --- the ticker: batched flushes and deadlines -----------------------------------

    @property
    def tick_interval(self) -> float:
        return min(0.25, max(0.02, self.snapshot_interval / 8))

    async def _tick(self) -> None:
        while self.live:
            await asyncio.sleep(self.tick_interval)
            now = time.monotonic()
            self._enforce_deadlines(now)
            due = [
                s for s in self.live.values()
                if s.next_flush_at <= now and s.length > s.flushed_length and s.final is None
            ]  # fmt: skip
            if not due:
                continue
            batch = [(s.message_id, s.text()) for s in due]
            for s in due:
                s.flushed_length = s.length
                s.next_flush_at = now + self.snapshot_interval
            try:
                await self.store.flush_partials(batch)
                self.counters["flushes"] += len(batch)
                self.counters["flush_batches"] += 1
            except Exception:
                log.exception("flushing %d streams failed; will retry", len(batch))
                for s in due:
                    s.flushed_length = 0

    def _enforce_deadlines(self, now: float) -> None:
        for stream in list(self.live.values()):
            if (
                not stream.requested
                or stream.end_reason
                or stream.task is None
                or stream.task.done()
            ):
                continue
            quiet = now - stream.last_activity
            if stream.length == 0 and quiet > self.first_token_timeout:
                reason = f"timed out: {{who}} sent nothing for {self.first_token_timeout:g} s"
            elif stream.length and quiet > self.idle_timeout:
                reason = f"timed out: {{who}} went silent for {self.idle_timeout:g} s"
            elif now - stream.started > self.max_duration:
                reason = f"timed out: the reply exceeded {self.max_duration:g} s"
            else:
                continue
            model = stream.model
            reason = reason.replace(
                "{who}", failures.who(model.litellm_model, failures.api_base_of(model.params))
            )
            self.counters["streams_timed_out"] += 1
            stream.abort(reason)

    # --- control ---------------------------------------------------------------------

    async def cancel(self, mid: str, by: str | None = None) -> MessageDict | None:
        """Stop a live stream; returns its final message, or None if it is not live here."""
        stream = self.live.get(mid)
        if stream is None:
            return None
        stream.cancelled_by = stream.cancelled_by or by
        if stream.task is not None:
            stream.task.cancel()
        await stream.done.wait()
        return stream.final

    def active_for(self, author: str | None) -> int:
        return sum(1 for s in self.live.values() if s.author == author)

    async def shutdown(self, reason: str = "interrupted: the server shut down") -> None:
        """Flush and finalise every in-flight stream (status ``error``, text kept)."""
        streams = list(self.live.values())
        for stream in streams:
            stream.abort(reason)
        if streams:
            await asyncio.wait([asyncio.ensure_future(s.done.wait()) for s in streams], timeout=30)
        if self._ticker is not None:
            self._ticker.cancel()

    # --- following -------------------------------------------------------------------

    async def follow(self, mid: str, offset: int, heartbeat: float) -> AsyncIterator[Event]:
        """``delta`` events from code point ``offset`` until ``done``; ``heartbeat`` when
        nothing happened for ``heartbeat`` seconds. Works on ended messages too."""
        offset = max(0, offset)
        stream = self.live.get(mid)
        if stream is None:
            message = await self.store.get_message(mid)
            if message is None:
                raise NotFound(f"no message {mid}")
            text = message["content"][offset:]
            if text:
                yield "delta", {"message_id": mid, "offset": offset, "text": text}
            yield "done", {"message": message}
            return
        while True:
            text = stream.text_from(offset)
            if text:
                yield "delta", {"message_id": mid, "offset": offset, "text": text}
                offset += len(text)
                continue
            if stream.final is not None:
                yield "done", {"message": stream.final}
                return
            # asyncio.wait on a bare future creates no task: cheap per delta per follower.
            changed, _ = await asyncio.wait({stream.changed()}, timeout=heartbeat)
            if not changed:
                yield "heartbeat", None
