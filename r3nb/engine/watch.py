"""Observers pushed, not polled: ``GET conversations/{cid}/watch?since=REV`` as one
producer per conversation fanning out to any number of watchers.

Why this shape. A poll per observer every ``snapshot_interval`` is a request, a store
lookup and a JSON encoding per observer; a lecture with hundreds of them is hundreds of
requests a second. Here one producer per watched conversation wakes once per
``snapshot_interval``, reads the conversation's changes once (``Store.snapshot``, from
memory when the store can) and the live text from the ``StreamHub`` (memory, fresher
than the last flush), and encodes the result once as a ``Frame``. Watchers *pull*
frames, like the live stream's followers in ``streams.py``: a watcher that keeps up
writes the shared bytes and costs nothing else; one that fell behind by a few frames
writes them back to back; one that fell behind the ring catches up with one snapshot
of its own. A slow reader therefore costs a bounded amount, never a queue.

What a frame holds: a ``snapshot`` event (``protocol.Snapshot``, the shape of ``GET
conversations/{cid}?since=``) when anything but text changed — the header (and with
it the branch: deleted turns leave it), a new message, a status, tokens, a mark — and a
``delta`` event (``protocol.DeltaEvent``) per streaming message whose text grew. A
flush that only rewrote a streaming row's text sends nothing extra: its text already
went out as deltas. Offsets in both are exactly what the watcher holds, so a client
appends and never sees a gap or a duplicate.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

from r3nb.errors import NotFound, StoreUnavailable
from r3nb.protocol import MessageDict

from .snapshots import for_observer
from .store import StoreInterface
from .streams import Event, LiveStream
from .watch_frames import Encoded, Frame, Watcher, joined, news, sliced

#: Frames kept per conversation for watchers a little behind; one further behind
#: catches up with a snapshot of its own (a store read, from memory when recent).
RING = 8


class ConversationWatch:
    """The producer of one conversation's frames, alive while anyone watches it."""

    def __init__(self, cid: str, store: StoreInterface, live: dict[str, LiveStream]) -> None:
        self.cid = cid
        self.store = store
        self.live = live  # StreamHub.live: the text of every reply streaming here
        self.revision = 0  # read cursor: every change at or below it is in a frame
        self.offsets: dict[str, int] = {}  # text sent of each streaming message
        self.sent: dict[str, tuple[Any, ...]] = {}  # its news fields last sent
        self.frames: collections.deque[Frame] = collections.deque(maxlen=RING)
        self.gen = 0
        self.gone: str | None = None  # the conversation was deleted: why the stream ends
        self.watchers = 0
        #: Heartbeats published: the producer beats for all its watchers when it has
        #: been quiet ``heartbeat`` seconds (no timer per watcher).
        self.beats = 0
        self.quiet_since = asyncio.get_running_loop().time()
        self.task: asyncio.Task[None] | None = None
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def changed(self) -> asyncio.Future[None]:
        return self._changed

    def _publish(self, frame: Frame | None) -> None:
        if frame is not None:
            self.frames.append(frame)
        loop = asyncio.get_running_loop()
        self.quiet_since = loop.time()
        changed, self._changed = self._changed, loop.create_future()
        changed.set_result(None)

    def beat(self) -> None:
        """Wake every watcher to send its ``: ping`` (nothing happened for a while)."""
        self.beats += 1
        self._publish(None)

    def _text(self, message: MessageDict) -> tuple[LiveStream | None, str]:
        """The freshest text of ``message``: the hub's live text while it streams here."""
        stream = self.live.get(message["id"])
        if (
            message["status"] == "streaming"
            and stream is not None
            and stream.final is None
            and stream.length >= len(message["content"])
        ):
            return stream, stream.text()
        return None, message["content"]

    async def prime(self) -> None:
        """Start from now: the first frame carries what changes after this (a reply
        already streaming joins the frames whole, see ``_streaming_here``)."""
        parts = await self.store.snapshot(self.cid, self.store.revision)
        if parts is None:
            raise NotFound(f"no conversation {self.cid}")
        self.revision = parts[2]

    def _streaming_here(self, seen: set[str]) -> list[MessageDict]:
        """Replies streaming in this conversation whose rows are stored but which no
        frame carried yet (e.g. a quiet one, when the producer started): their rows,
        so the next frame brings them whole and their deltas follow."""
        rows = []
        for mid, stream in self.live.items():
            if stream.conversation_id == self.cid and mid not in self.offsets and mid not in seen:
                row = self.store.recent.get(mid)
                if row is not None and row["status"] == "streaming":
                    rows.append(row)
        return rows

    async def tick(self) -> None:
        """Read once, encode once, publish: the only per-tick work, whatever the watchers."""
        try:
            parts = await self.store.snapshot(self.cid, self.revision)
        except StoreUnavailable:
            # The database is away (PostgreSQL restarting): replies streaming here go
            # on, so their text still goes out from memory; the next tick reads again.
            self._publish_events(self._deltas(set()))
            return
        if parts is None:
            self.gone = f"no conversation {self.cid}: it was deleted"
            self._publish(None)
            return
        conversation, messages, revision, streaming, branch = parts
        header = conversation["revision"] > self.revision
        out: list[dict[str, Any]] = []
        touched: set[str] = set()
        messages = messages + self._streaming_here({m["id"] for m in messages})
        for message in messages:
            mid = message["id"]
            stream, text = self._text(message)
            held = self.offsets.get(mid)
            if held is not None and stream is not None and news(message) == self.sent.get(mid):
                continue  # only a flush: the deltas below carry its text
            touched.add(mid)
            out.append(for_observer(message, text, held))
            if message["status"] == "streaming":
                self.offsets[mid], self.sent[mid] = len(text), news(message)
            else:
                self.offsets.pop(mid, None)
                self.sent.pop(mid, None)
        events: list[tuple[str, Encoded]] = []
        if header or out:
            snapshot = {
                "conversation": conversation if header else None,
                "branch": branch if header else None,
                "messages": out,
                "revision": revision,
                "streaming": streaming,
            }
            events.append(("snapshot", Encoded("snapshot", snapshot)))
        events += self._deltas(touched)
        self.revision = max(self.revision, revision)
        self._publish_events(events)

    def _deltas(self, touched: set[str]) -> list[tuple[str, Encoded]]:
        """The text each held streaming message got since the last frame, from memory
        (``touched``: those this tick's snapshot already carries whole)."""
        events: list[tuple[str, Encoded]] = []
        for mid, held in list(self.offsets.items()):
            stream = self.live.get(mid)
            if mid in touched or stream is None or stream.length <= held:
                continue
            delta = {"message_id": mid, "offset": held, "text": stream.text_from(held)}
            events.append(("delta", Encoded("delta", delta)))
            self.offsets[mid] = stream.length
        return events

    def _publish_events(self, events: list[tuple[str, Encoded]]) -> None:
        if events:
            self.gen += 1
            self._publish(Frame(self.gen, self.revision, joined(events), dict(self.offsets)))

    async def catch_up(self, since: int, held: dict[str, int]) -> tuple[list[Event], Watcher]:
        """What a watcher holding ``since`` (and ``held`` of streaming messages) lacks
        to stand at the producer's current frame; the watcher, placed there."""
        parts = None
        for _ in range(3):  # a read that waited for the DB may predate the cursor: again
            parts = await self.store.snapshot(self.cid, since)
            if parts is None:
                raise NotFound(f"no conversation {self.cid}")
            if parts[2] >= self.revision:
                break  # read at or after the producer's cursor: nothing can fall between
        assert parts is not None
        conversation, messages, revision, streaming, branch = parts
        mine = dict(held)
        watcher = Watcher(self.gen, revision, mine)  # a since never past what it got
        out: list[dict[str, Any]] = []
        for message in messages:
            mid = message["id"]
            _, text = self._text(message)
            out.append(for_observer(message, text, held.get(mid)))
            mine[mid] = len(text)
        events: list[Event] = []
        header = since == 0 or conversation["revision"] > since
        snapshot = {
            "conversation": conversation if header else None,
            "branch": branch if header else None,
            "messages": out,
            "revision": revision,
            "streaming": streaming,
        }
        events.append(("snapshot", snapshot))
        seen = {m["id"] for m in messages}
        for mid, have in held.items():  # held, unchanged since ``since``, still growing
            stream = self.live.get(mid)
            if mid not in seen and stream is not None and stream.length > have:
                events.append(
                    ("delta", {"message_id": mid, "offset": have, "text": stream.text_from(have)})
                )
                mine[mid] = stream.length
        return events, watcher

    def frames_for(self, watcher: Watcher) -> list[Frame] | None:
        """The frames ``watcher`` has not written; None when it fell behind the ring."""
        if not self.frames or self.frames[-1].gen <= watcher.gen:
            return []
        if self.frames[0].gen > watcher.gen + 1:
            return None
        return [f for f in self.frames if f.gen > watcher.gen]


class WatchHub:
    """Every conversation being watched on this server, and the ticker of each."""

    def __init__(
        self,
        store: StoreInterface,
        live: dict[str, LiveStream],
        interval: float,
        heartbeat: float,
    ) -> None:
        self.store = store
        self.live = live
        self.interval = interval
        self.heartbeat = heartbeat
        self.watches: dict[str, ConversationWatch] = {}
        #: ``store_reads``: Store.snapshot calls (one per watched conversation per tick,
        #: plus one per joining or far-behind watcher); ``ticks``; ``frames``; ``watchers``.
        self.counters: collections.Counter[str] = collections.Counter()

    def report(self) -> dict[str, int]:
        return {
            "conversations": len(self.watches),
            "watchers": sum(w.watchers for w in self.watches.values()),
        } | dict(self.counters)

    async def _producer(self, cid: str) -> ConversationWatch:
        watch = self.watches.get(cid)
        if watch is None:
            watch = ConversationWatch(cid, self.store, self.live)
            self.counters["store_reads"] += 1
            await watch.prime()
            existing = self.watches.get(cid)  # another watcher primed one meanwhile
            if existing is not None:
                return existing
            self.watches[cid] = watch
            watch.task = asyncio.create_task(self._run(watch), name=f"r3nb-watch-{cid}")
        return watch

    async def _run(self, watch: ConversationWatch) -> None:
        """Tick at the snapshot cadence while anyone watches (checked with no await
        between the check and the removal, so a joining watcher never finds a dead one)."""
        # Each conversation at its own phase: watchers that arrived together (a class
        # opening the same notebook) must not make every producer write at one instant.
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.interval * random.random()
        try:
            while watch.watchers and watch.gone is None:
                # Awake for the next tick, or sooner for the next heartbeat (the
                # producer's, for all its watchers: none of them keeps a timer).
                await asyncio.sleep(
                    max(0.0, min(next_tick, watch.quiet_since + self.heartbeat) - loop.time())
                )
                if loop.time() >= next_tick:
                    next_tick = loop.time() + self.interval
                    self.counters["store_reads"] += 1
                    self.counters["ticks"] += 1
                    gen = watch.gen
                    await watch.tick()
                    self.counters["frames"] += watch.gen - gen
                if loop.time() - watch.quiet_since >= self.heartbeat:
                    watch.beat()
        finally:
            if self.watches.get(watch.cid) is watch:
                del self.watches[watch.cid]
            watch.gone = watch.gone or "the server stopped watching"
            watch._publish(None)

    async def stop(self) -> None:
        for watch in list(self.watches.values()):
            if watch.task is not None:
                watch.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch.task

    async def watch(self, cid: str, since: int, held: dict[str, int]) -> AsyncIterator[Event]:
        """The event stream of one watcher: its catch-up, then every frame, with
        ``heartbeat`` events when nothing happened for ``self.heartbeat`` seconds."""
        producer = await self._producer(cid)
        producer.watchers += 1
        try:
            self.counters["store_reads"] += 1
            events, watcher = await producer.catch_up(since, held)
            for event in events:
                yield event
            async for event in self._follow(producer, watcher):
                yield event
        finally:
            producer.watchers -= 1

    async def _follow(self, producer: ConversationWatch, watcher: Watcher) -> AsyncIterator[Event]:
        beats = producer.beats
        while True:
            frames = producer.frames_for(watcher)
            if frames is None:  # fell behind the ring: one snapshot of its own
                self.counters["store_reads"] += 1
                self.counters["catch_ups"] += 1
                held = watcher.held if watcher.held is not None else producer.offsets
                events, watcher = await producer.catch_up(watcher.since, dict(held))
                for event in events:
                    yield event
                continue
            for frame in frames:
                if watcher.held is None:  # aligned: the shared bytes, nothing else
                    for event in frame.events:
                        yield event
                else:
                    for event in sliced(frame, watcher.held):
                        yield event
                    if all(watcher.held.get(m) == n for m, n in frame.after.items()):
                        watcher.held = None
                watcher.gen, watcher.since = frame.gen, frame.revision
            if frames:
                continue
            if producer.gone is not None:
                yield "error", {"error": producer.gone}
                return
            if producer.beats != beats:
                beats = producer.beats
                yield "heartbeat", None
                continue
            # No timeout: the producer beats for all its watchers. (``wait`` never cancels
            # the shared future when this watcher's request is cancelled.)
            await asyncio.wait({producer.changed()})
