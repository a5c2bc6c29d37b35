"""The one DuckDB connection and the one thread that uses it.

A DuckDB connection is not thread-safe, and blocking the tornado loop on a write would
stall every kernel websocket on the server: so one dedicated thread owns the connection,
and everything that touches it is submitted there (``run`` from async code,
``run_blocking`` from sync code). Opening creates the file's folder privately, migrates
(``schema.MIGRATIONS``), and reopens after DuckDB's fatal errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import duckdb

from r3nb.engine import filemodes
from r3nb.errors import StoreUnavailable

from .schema import MIGRATIONS

log = logging.getLogger("r3nb.store")
T = TypeVar("T")

#: DuckDB's buffer cache may otherwise grow to 80% of the machine's memory: too much for
#: a process that shares a JupyterHub node with everyone's kernels.
MEMORY_LIMIT = "512MB"


class DuckDBThread:
    """Owns the connection to the file at ``path`` (``":memory:"`` works too).

    ``on_open`` runs on the thread after every successful open (at start-up, and after
    a reopen): the store reloads what it keeps in memory from the file there."""

    def __init__(self, path: str, on_open: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
        self.path = path
        self._on_open = on_open
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r3nb-duckdb")
        self._con: duckdb.DuckDBPyConnection | None = None
        self.error: str | None = None  # set when the file cannot be used; shown by health
        #: Parts of the store other users can read (existing modes are kept; health says).
        self.exposed: list[str] = []
        self._wal = filemodes.WalGuard(self.path)

    # --- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating and migrating as needed). Blocks: call once at start-up.

        Raises ``StoreUnavailable`` with the path and DuckDB's reason, e.g. when another
        process holds the file's lock.
        """
        self._executor.submit(self._open_sync).result()

    async def try_reopen(self) -> bool:
        """Open again after a failure; False (and ``error`` kept) while it still fails."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._open_sync)
        except StoreUnavailable:
            return False
        return True

    def close(self) -> None:
        """Checkpoint and close, then stop the thread. Safe to call twice."""
        with contextlib.suppress(RuntimeError):  # executor already shut down
            self._executor.submit(self._close_connection).result(timeout=30)
        self._executor.shutdown(wait=True)

    def _open_sync(self) -> None:
        on_disk = self.path != ":memory:"
        if on_disk:
            parent = Path(self.path).expanduser().resolve().parent
            try:
                filemodes.prepare_folder(parent)
            except OSError as e:
                self._fail(f"cannot create the folder {parent}: {e.strerror or e}")
            self.exposed = filemodes.open_to_others(self.path)
            for warning in self.exposed:
                log.warning("r3nb store: %s", warning)
            created = not os.path.exists(self.path)
        try:
            self._con = duckdb.connect(self.path, config={"memory_limit": MEMORY_LIMIT})
            if on_disk and created:
                filemodes.make_private(self.path)
            self._migrate(self._con)
            self._on_open(self._con)
            self.error = None
        except duckdb.Error as e:
            self._close_connection()
            self._fail(f"cannot open {self.path}: {short(e)}")

    def _fail(self, reason: str) -> NoReturn:
        self.error = f"r3nb's DuckDB store is unavailable: {reason}"
        raise StoreUnavailable(self.error)

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (name VARCHAR PRIMARY KEY, applied_at DOUBLE NOT NULL)"
        )
        applied = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
        for name, statements in MIGRATIONS:
            if name in applied:
                continue
            with transaction(con):
                for statement in statements:
                    con.execute(statement)
                con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [name, time.time()])
            log.info("r3nb store %s: applied migration %s", self.path, name)

    def applied_migrations(self) -> list[str]:
        return [
            r[0]
            for r in self.con.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()
        ]

    def _close_connection(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            finally:
                self._con = None

    # --- running on the thread -------------------------------------------------------

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection (on the thread only)."""
        assert self._con is not None
        return self._con

    def require_open(self) -> None:
        """``StoreUnavailable`` saying what is wrong unless the store is usable."""
        if self._con is None:
            raise StoreUnavailable(self.error or f"r3nb's store {self.path} is closed")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the thread, awaited from the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guarded, fn, *args)

    def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the thread, from sync code (the loop may already run)."""
        return self._executor.submit(self._guarded, fn, *args).result()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` on the thread and return at once. The job itself calls
        ``guarded`` for what touches the connection (``duckdb_admit``'s drain).
        ``RuntimeError`` once the thread is stopped."""
        self._executor.submit(job)

    def guarded(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` here, on the thread, with the reopen after a fatal error."""
        return self._guarded(fn, *args)

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        """After an internal error DuckDB refuses every further query until the
        connection is reopened, so reopen once and report the failure."""
        self.require_open()
        try:
            result = fn(*args)
            self._wal.check()
            return result
        except (duckdb.FatalException, duckdb.InternalException) as e:
            log.error("DuckDB internal error on %s: %s; reopening", self.path, short(e))
            self._close_connection()
            with contextlib.suppress(StoreUnavailable):
                self._open_sync()
            raise StoreUnavailable(f"database error on {self.path}: {short(e)}") from e


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One explicit transaction: committed when the block ends, rolled back if it raises."""
    con.begin()
    try:
        yield
        con.commit()
    except BaseException:
        con.rollback()
        raise


def short(e: BaseException) -> str:
    """DuckDB messages can span many lines; the first says what happened."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
