"""Telling the other processes on the same database what changed: LISTEN/NOTIFY.

Every writing transaction of the PostgreSQL store ends with one ``NOTIFY`` on
``CHANNEL`` naming the revision it reached and the conversations it touched (sent
inside the transaction, so it is delivered only if, and right after, the write
commits). Each store listens on ONE dedicated connection of its own and fans what it
hears out in memory: 1,000 LISTEN connections cost PostgreSQL 33.8 s of CPU per million
deliveries, one connection fanning out in-process 0.26 s (measured, DESIGN.md); and a
psycopg connection blocked in ``notifies()`` can do nothing else.

A payload must stay under 8,000 bytes: a write touching more conversations than fit
sends ``"c": null``, a hint to re-read everything, as a listener also assumes after it
lost its connection (what was sent meanwhile is gone).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable

import psycopg

from .pg_connection import Connection, connect, short

log = logging.getLogger("r3nb.store")

#: The channel every r3nb store on a database notifies and listens on.
CHANNEL = "r3nb_changes"
#: PostgreSQL refuses payloads of 8,000 bytes or more.
MAX_PAYLOAD = 7_999
#: How long ``notifies()`` waits before the thread looks at its stop flag again.
POLL_SECONDS = 1.0

#: ``(revision, conversation ids)`` another process wrote; ids None: maybe any.
Deliver = Callable[[int, "frozenset[str] | None"], None]


def payload(revision: int, cids: Iterable[str]) -> str:
    """The notification of a write that reached ``revision`` touching ``cids``."""
    text = json.dumps({"r": revision, "c": sorted(set(cids))}, separators=(",", ":"))
    if len(text.encode()) > MAX_PAYLOAD:
        text = json.dumps({"r": revision, "c": None}, separators=(",", ":"))
    return text


def parse(text: str) -> tuple[int, frozenset[str] | None] | None:
    """``payload``'s inverse; None for what r3nb did not send (a wake-up)."""
    try:
        found = json.loads(text)
        revision = int(found["r"])
        cids = found["c"]
    except (ValueError, TypeError, KeyError):
        return None
    return revision, (None if cids is None else frozenset(str(c) for c in cids))


class Listener:
    """One LISTEN connection on its own thread; ``deliver`` gets what other processes
    wrote (never what ``is_own(pid)`` says this store's writer sent)."""

    def __init__(
        self, url: str, path: str, is_own: Callable[[int], bool], deliver: Deliver
    ) -> None:
        self._url = url
        self._path = path
        self._is_own = is_own
        self._deliver = deliver
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="r3nb-postgres-listen", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Start listening; returns once LISTEN is in place (or after ``timeout``: the
        thread keeps trying to connect by itself)."""
        self._thread.start()
        self._listening.wait(timeout)

    def request_stop(self) -> None:
        """Ask the thread to stop: it does at the next notification (the store sends
        one on close), or within ``POLL_SECONDS``."""
        self._stop.set()

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=POLL_SECONDS * 3)

    def _run(self) -> None:
        lost = False
        while not self._stop.is_set():
            try:
                con = connect(self._url)
            except psycopg.Error as e:
                log.warning("r3nb store %s: cannot listen: %s", self._path, short(e))
                lost = True
                self._stop.wait(POLL_SECONDS)  # retry cadence while PostgreSQL is away
                continue
            try:
                con.execute(f"LISTEN {CHANNEL}")
                self._listening.set()
                if lost:  # notifications sent while we were away are gone
                    self._deliver(0, None)
                    lost = False
                self._listen(con)
            except psycopg.Error as e:
                if not self._stop.is_set():
                    log.warning("r3nb store %s: listening failed: %s", self._path, short(e))
                lost = True
            finally:
                with contextlib.suppress(psycopg.Error):
                    con.close()

    def _listen(self, con: Connection) -> None:
        while not self._stop.is_set():
            for note in con.notifies(timeout=POLL_SECONDS):
                if self._stop.is_set():
                    return
                if self._is_own(note.pid):
                    continue
                found = parse(note.payload)
                if found is not None:
                    try:
                        self._deliver(*found)
                    except Exception:
                        log.exception("r3nb store %s: a change listener failed", self._path)
