"""Group commit of admissions: the sends that arrive together share one transaction.

Every reply's time to first token waits for its rows to be durable (``begin_exchange``).
Committed one by one, a burst of sends queues on the one DB thread behind a commit (and
an fsync) each: 50 sends in one instant put the last one's first token ~0.7 s late. Here
each ``begin_exchange`` joins a queue; one job on the DB thread takes everything queued
when it starts and writes it in ONE transaction (rows and headers), so a burst costs a
few commits, not fifty. Nothing waits to fill a batch: a send alone is written at once,
and those that arrive during a commit form the next one. Each caller is answered when
its own transaction has committed.

Order with the stream's own writes holds: a ``begin_exchange`` is queued, and a job that
will take it is already on the thread's queue, before its stream can submit a flush or
its end, so the rows always land first.

Replies' ends (``finalize``) join the same job, after its admissions: in a burst the
first replies end while later sends still wait for their rows, and fifty ends written
one transaction each (~3 ms of the thread apiece) queued those admissions ~100 ms. Now
the ends that arrive together are one transaction too, and an admission never waits
behind more than the one batch of ends already being written. (A flush queued before an
end may now land after it: flushes touch only rows that still stream, so it is a no-op.)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import duckdb

import r3nb.engine.store.duckdb_sql as sql
from r3nb.errors import StoreUnavailable
from r3nb.protocol import ConversationDict, MessageDict

from .duckdb_ops import DuckDBOperations, Exchange
from .duckdb_thread import DuckDBThread
from .values import Final, NewMessage, Parent

#: While sends keep arriving less than this apart (a class pressing Send together), the
#: drain waits for the pause before it takes its batch ...
PAUSE_S = 0.006
#: ... but never longer than this: a send's rows wait at most this for company. Longer
#: than a burst of 50 takes to reach the store on a loaded 2-core machine (~50 ms).
GATHER_MAX_S = 0.06

#: One exchange to admit: (conversation id, messages, title hint, parent).
Admission = tuple[str, Sequence[NewMessage], str | None, Parent]
#: An admitted exchange (its rows, decorated, and the conversation's header), or None
#: where its conversation or parent is gone.
Admitted = tuple[list[MessageDict], ConversationDict] | None
Pending = tuple[Admission, "Waiter[Admitted]"]
#: A reply's end to write: (message id, its end state), and who waits for the row.
Ending = tuple[tuple[str, Final], "Waiter[MessageDict | None]"]
T = TypeVar("T")


class Waiter(Generic[T]):
    """A caller on its event loop, waiting for an answer from the DB thread."""

    __slots__ = ("future", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[T] = self.loop.create_future()


def settle(answers: Sequence[tuple[Waiter[Any], Any]]) -> None:
    """From the DB thread: each waiter's answer (a result, or an exception to raise),
    in ONE wake-up of each event loop. A future per caller set from the thread
    (``asyncio.wrap_future``) wakes the loop once per caller: 50 writes to its
    self-pipe and 50 callbacks after a burst's commit, while those sends wait."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Waiter[Any], Any]]] = {}
    for waiter, answer in answers:
        by_loop.setdefault(waiter.loop, []).append((waiter, answer))
    for loop, these in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_answer, these)


def _answer(answers: Sequence[tuple[Waiter[Any], Any]]) -> None:
    """On a waiter's loop: set each answer, unless its caller gave up (cancelled)."""
    for waiter, answer in answers:
        if waiter.future.done():
            continue
        if isinstance(answer, BaseException):
            waiter.future.set_exception(answer)
        else:
            waiter.future.set_result(answer)


class Admissions:
    """The queue of exchanges waiting for their transaction, and the job that drains it."""

    def __init__(self, thread: DuckDBThread, ops: DuckDBOperations) -> None:
        self._thread = thread
        self._ops = ops
        self._lock = threading.Lock()
        self._pending: list[Pending] = []
        self._endings: list[Ending] = []
        self._scheduled = False  # a drain job is queued and has not taken its batch yet
        self._last_arrival = 0.0  # monotonic time of the last admission queued
        self._last_gap = float("inf")  # and how long after the one before it
        #: Transactions that admitted exchanges (tests and the bench count them).
        self.commits = 0
        #: Transactions that wrote replies' ends (the same).
        self.end_commits = 0

    async def admit(self, admission: Admission) -> Admitted:
        """Queue ``admission``; its rows and header once durable (None: see ``Admitted``)."""
        self._thread.require_open()
        done: Waiter[Admitted] = Waiter()
        now = time.monotonic()
        with self._lock:
            self._last_gap, self._last_arrival = now - self._last_arrival, now
            self._pending.append((admission, done))
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            self._schedule()
        return await done.future

    async def finalize(self, mid: str, final: Final) -> MessageDict | None:
        """Queue the end of reply ``mid``; its final row once durable (``finalize``)."""
        self._thread.require_open()
        done: Waiter[MessageDict | None] = Waiter()
        with self._lock:
            self._endings.append(((mid, final), done))
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            self._schedule()
        return await done.future

    def _schedule(self) -> None:
        try:
            self._thread.submit(self._drain)
        except RuntimeError:  # the thread was stopped (close)
            self._fail_all(StoreUnavailable(f"r3nb's store {self._thread.path} is closed"))

    def _drain(self) -> None:
        """On the DB thread: everything queued now, admissions first (a send's first
        token waits for them; an end's caller waits for nothing), one transaction per
        group of distinct conversations (two exchanges of one conversation must see each
        other's rows, so the second goes in the next group, still in this job and in
        order), then every end in one transaction."""
        self._gather()
        with self._lock:
            taken, self._pending = self._pending, []
            endings, self._endings = self._endings, []
            self._scheduled = False
        self._admit_taken(taken)
        if endings:
            self._end(endings)

    def _gather(self) -> None:
        """While a burst of sends is still arriving, wait for its pause (``PAUSE_S``,
        at most ``GATHER_MAX_S``), so the rest of the burst is one transaction, not a
        chain of growing ones. A commit costs the DB thread ~4-8 ms of CPU whatever its
        size (each statement's fixed cost), and 15-40 ms of wall time while the loop and
        the provider take the machine's two cores: each extra transaction in a burst
        adds that to its last sends' first token. Traced on 50 sends in one instant:
        they reach the store over 40-70 ms, mostly ~1 ms apart with gaps of 3-6 ms; with
        a 3 ms pause and a 15 ms cap, batches of 1, 15, 21 and 13, the last committed
        ~60 ms after the last arrival; with 6 ms and 60 ms, 1 and 49. Eight interleaved
        pairs (first-delta p99 minus direct): median difference 26 ms in favour of the
        longer wait, which won six. A lone send (none other within ``PAUSE_S`` before
        it) never waits: time to first token against an instant provider is a target
        too."""
        deadline = time.monotonic() + GATHER_MAX_S
        while True:
            with self._lock:
                lone = len(self._pending) < 2 and self._last_gap >= PAUSE_S
                quiet = time.monotonic() - self._last_arrival
            now = time.monotonic()
            if lone or quiet >= PAUSE_S or now >= deadline:
                return
            time.sleep(min(PAUSE_S - quiet, deadline - now))

    def _admit_taken(self, taken: Sequence[Pending]) -> None:
        for group in _groups(taken):
            try:
                answers = self._thread.guarded(self._commit, [a for a, _ in group])
            except BaseException as e:  # StoreUnavailable, or a bug: every caller hears it
                answers = [e] * len(group)
            # Its caller may have given up meanwhile: its rows stand, as a send's do.
            settle([(done, answer) for (_, done), answer in zip(group, answers, strict=True)])

    def _commit(self, batch: Sequence[Admission]) -> list[Admitted | BaseException]:
        """On the DB thread: the exchanges of ``batch`` (distinct conversations) in ONE
        transaction, rows and headers, then into memory. Should that transaction fail,
        each is retried alone, so one bad exchange cannot fail the others."""
        ops = self._ops
        answers: list[Admitted | BaseException] = [None] * len(batch)
        prepared: list[tuple[int, Exchange]] = []
        for i, admission in enumerate(batch):
            with contextlib.suppress(LookupError):  # deleted meanwhile: None
                prepared.append((i, ops.prepare(*admission)))
        if not prepared:
            return answers
        try:
            self.commits += 1
            sql.admit(
                ops.con, [v for _, e in prepared for v in e.values], [e.header for _, e in prepared]
            )
        except (duckdb.FatalException, duckdb.InternalException):
            raise  # the connection is gone: every caller is told (DuckDBThread reopens)
        except Exception:  # e.g. text DuckDB refuses (a lone surrogate): find whose
            for i, exchange in prepared:
                try:
                    self.commits += 1
                    sql.admit(ops.con, exchange.values, [exchange.header])
                except (duckdb.FatalException, duckdb.InternalException):
                    raise
                except Exception as e:
                    answers[i] = e
            prepared = [(i, e) for i, e in prepared if answers[i] is None]
        for i, exchange in prepared:
            answers[i] = (ops.apply(exchange), exchange.header)
        return answers

    def _end(self, endings: Sequence[Ending]) -> None:
        """On the DB thread: ``endings`` in one transaction; should it fail, each alone,
        so one bad end (e.g. text DuckDB refuses) cannot fail the others."""
        ends = [end for end, _ in endings]
        answers: list[MessageDict | BaseException | None]
        try:
            self.end_commits += 1
            answers = list(self._thread.guarded(self._ops.finalize_many, ends))
        except StoreUnavailable as e:  # the connection is gone: every caller is told
            answers = [e] * len(ends)
        except Exception:
            answers = []
            for end in ends:
                try:
                    self.end_commits += 1
                    answers.append(self._thread.guarded(self._ops.finalize, *end))
                except Exception as e:
                    answers.append(e)
        settle([(done, answer) for (_, done), answer in zip(endings, answers, strict=True)])

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            taken, self._pending = self._pending, []
            endings, self._endings = self._endings, []
            self._scheduled = False
        waiting: list[Waiter[Any]] = [done for _, done in taken]
        waiting += [done for _, done in endings]
        settle([(done, error) for done in waiting])


def _groups(taken: Sequence[Pending]) -> list[list[Pending]]:
    """``taken`` in order, cut wherever a conversation repeats."""
    groups: list[list[Pending]] = [[]]
    seen: set[str] = set()
    for pending in taken:
        cid = pending[0][0]
        if cid in seen:
            groups.append([])
            seen.clear()
        seen.add(cid)
        groups[-1].append(pending)
    return [g for g in groups if g]
