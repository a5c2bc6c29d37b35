"""The PostgreSQL backend's one writing connection and the one thread that uses it.

The ``Store`` protocol has blocking methods (``open``, ``fail_streaming_blocking``) and
the engine must never wait on the database from the tornado loop, so, as DuckDB's
backend does, one thread owns one sync psycopg connection and everything that touches
it is submitted there (``run`` from async code, ``run_blocking`` from sync code).
Writes from this process are thus one at a time, which keeps this process's view of
the revision counter and of the text it wrote (``pg_ops``) in commit order.

When PostgreSQL goes away (restart, network), the call fails with ``ConnectionLost``
(a ``StoreUnavailable``: HTTP 503, ``Retry-After: 5``) and the connection is dropped;
the next call (or ``try_reopen``, which the sweeper runs) connects again, so the store
recovers as soon as the server is back, without anyone restarting r3nb. (The end of a
reply is kept and tried again meanwhile: ``PostgresStore.finalize``.) ``on_open`` runs
after every (re)connection: the operations forget what they assumed about the database
while it was out of reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import select
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

import r3nb.engine.store.pg_schema as pg_schema
from r3nb.errors import StoreUnavailable

log = logging.getLogger("r3nb.store")
T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

#: Seconds to wait for PostgreSQL to accept a connection: an unreachable host must not
#: hold the DB thread (and every poll behind it) for the OS's TCP timeout.
CONNECT_TIMEOUT = 5

#: What a 503 says about trying again while PostgreSQL is out of reach: every call tries
#: to connect again, so a restart (seconds) is over long before the sweeper's minute.
RETRY_SECONDS = 5.0


class ConnectionLost(StoreUnavailable):
    """PostgreSQL cannot be reached (down, restarting, unreachable), as opposed to one
    statement failing on a good connection: waiting and trying again can help."""


def redact(url: str) -> str:
    """``url`` without its password (in the netloc or as a ``password`` parameter):
    what logs, health and error messages may show."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        credentials, host = netloc.rsplit("@", 1)
        netloc = f"{credentials.split(':', 1)[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    shown = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    if not netloc:  # "postgresql:///db" (the local socket): keep its empty authority
        shown = f"{parts.scheme}://{shown.removeprefix(parts.scheme + ':')}"
    return shown


def short(e: BaseException) -> str:
    """PostgreSQL's messages can span lines (DETAIL, HINT); the first says what happened."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def hung_up(con: Connection) -> bool:
    """Whether the server has spoken on an idle connection: it does so only to end it
    (a restart's "terminating connection", or EOF). Costs no round trip, so the first
    call after PostgreSQL restarted reconnects instead of failing."""
    try:
        readable, _, _ = select.select([con.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


#: The writing connection's ``application_name`` is this plus the process's writer id:
#: ``pg_stat_activity`` then says which writers are alive (see ``pg_sql.fail_orphans``).
WRITER_PREFIX = "r3nb:"


def connect(url: str, *, autocommit: bool = True, name: str = "r3nb") -> Connection:
    """A connection to ``url`` with r3nb's settings (raises ``psycopg.Error``)."""
    return psycopg.connect(
        url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT, application_name=name
    )


class PgThread:
    """Owns the writing connection to ``url``.

    ``on_open(con)`` runs on the thread after every successful (re)connection and
    migration."""

    def __init__(self, url: str, on_open: Callable[[Connection], None]) -> None:
        self.url = url
        self.path = redact(url)
        self._on_open = on_open
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r3nb-postgres")
        self._con: Connection | None = None
        self._opened = False  # opened once: a lost connection is then reconnected on use
        self._closed = False
        self.error: str | None = None
        #: The backend pid of the writing connection: notifications it sent are ours.
        self.backend_pid: int | None = None
        #: This process's writer id: the streaming rows it writes are recorded with it,
        #: and its connection is named after it, so another process can tell a reply
        #: this one is streaming from one a crashed process left behind.
        self.writer = secrets.token_hex(8)

    # --- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Connect and migrate. Blocks: call once at start-up. ``StoreUnavailable``
        with the (redacted) URL and PostgreSQL's reason when it cannot."""
        self._executor.submit(self._open_sync).result()

    async def try_reopen(self) -> bool:
        """Connect again after a failure; False (``error`` kept) while it still fails."""
        if self._closed:
            return False
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._open_sync)
        except StoreUnavailable:
            return False
        return True

    def close(self) -> None:
        """Close the connection, then stop the thread. Safe to call twice."""
        self._closed = True
        with contextlib.suppress(RuntimeError):  # executor already shut down
            self._executor.submit(self._drop).result(timeout=30)
        self._executor.shutdown(wait=True)

    def while_connected(self, fn: Callable[[Connection], object]) -> None:
        """``fn(con)`` on the thread if connected now; never reconnects, never raises
        (for what is worth doing only while PostgreSQL is there, e.g. on close)."""

        def attempt() -> None:
            if self._con is not None and not self._con.closed:
                with contextlib.suppress(psycopg.Error):
                    fn(self._con)

        with contextlib.suppress(RuntimeError):  # executor already shut down
            self._executor.submit(attempt).result(timeout=30)

    def _open_sync(self) -> None:
        self._drop()
        try:
            con = connect(self.url, name=WRITER_PREFIX + self.writer)
        except psycopg.Error as e:
            self._fail(f"cannot connect to {self.path}: {short(e)}")
        try:
            applied = pg_schema.migrate(con)
            self._on_open(con)
        except psycopg.Error as e:
            with contextlib.suppress(psycopg.Error):
                con.close()
            self._fail(f"cannot prepare {self.path}: {short(e)}")
        for name in applied:
            log.info("r3nb store %s: applied migration %s", self.path, name)
        self._con = con
        self.backend_pid = con.info.backend_pid
        self._opened = True
        self.error = None

    def _fail(self, reason: str) -> NoReturn:
        self.error = (
            f"r3nb's PostgreSQL store is unavailable: {reason}. Check that PostgreSQL is"
            " running and reachable from this machine with these credentials; r3nb"
            " reconnects by itself once it is."
        )
        raise ConnectionLost(self.error, retry_after=RETRY_SECONDS)

    @property
    def closed(self) -> bool:
        return self._closed

    def _drop(self) -> None:
        if self._con is not None:
            with contextlib.suppress(psycopg.Error):
                self._con.close()
            self._con = None

    # --- running on the thread -------------------------------------------------------

    @property
    def con(self) -> Connection:
        """The connection (on the thread only)."""
        assert self._con is not None
        return self._con

    def require_open(self) -> None:
        """``StoreUnavailable`` unless the store was opened and is not closed."""
        if self._closed or not self._opened:
            raise StoreUnavailable(self.error or f"r3nb's store {self.path} is not open")

    def applied_migrations(self) -> list[str]:
        return pg_schema.applied_migrations(self.con)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the thread, awaited from the loop."""
        self.require_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guarded, fn, *args)

    def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the thread, from sync code (the loop may already run)."""
        self.require_open()
        return self._executor.submit(self._guarded, fn, *args).result()

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        """Reconnect first when the last call lost the connection; when this one loses
        it, drop it and say so (``StoreUnavailable``): the next call tries again."""
        self.require_open()
        if self._con is None or self._con.closed or hung_up(self._con):
            self._open_sync()
        try:
            return fn(*args)
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            log.error("r3nb store %s: connection lost: %s", self.path, short(e))
            self._drop()
            self._fail(f"the connection to {self.path} failed: {short(e)}")
        except psycopg.Error as e:  # the statement failed; the connection is still good
            log.error("r3nb store %s: %s", self.path, short(e))
            raise StoreUnavailable(f"database error on {self.path}: {short(e)}") from e
