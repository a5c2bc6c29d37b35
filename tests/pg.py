"""A real PostgreSQL cluster for tests: Debian's ``postgresql`` (apt, ``make system-deps``).

As root (CI, containers), ``initdb`` refuses to run: the cluster's directory is owned by
the ``postgres`` user and ``initdb``/``pg_ctl`` run as that user (``runuser``). It listens
on 127.0.0.1 and a socket in its own directory, with trust auth for the local test role;
``fsync=off``, fine for tests and never used for the benchmark's durability figures.
The cluster is stopped by ``pg_ctl stop -m fast`` and then by its postmaster's pid, even
when a test fails (see ../shared/TESTING.md, "PostgreSQL in tests").
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import psycopg
import pytest

from tests.servers import free_port

#: Where Debian puts the server binaries (the major version is found at run time).
PG_ROOT = Path("/usr/lib/postgresql")


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    versions = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


class PostgresCluster:
    """``initdb`` + ``pg_ctl start`` in ``workdir``; ``dsn`` for clients; ``stop()``."""

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        found = pg_bin()
        if found is None:
            raise RuntimeError(
                "PostgreSQL is not installed here: run `make system-deps`"
                " (it apt-installs Debian's postgresql)"
            )
        self.bin = found
        self.workdir = workdir
        self.data = workdir / "data"
        self.sockets = workdir / "sockets"
        self.port = port or free_port()
        self.user = "postgres"
        self.database = "postgres"
        self.pid: int | None = None
        #: The server's log (inside the data directory: the ``postgres`` user writes it).
        self.log = self.data / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _as_owner(self) -> list[str]:
        """Run as the ``postgres`` OS user when we are root (initdb refuses root)."""
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self._as_owner(), *args], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr[-2000:]}{log}"
            )

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for path in (self.data, self.sockets):
            path.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(path, "postgres", "postgres")
        if os.geteuid() == 0:
            # runuser must be able to reach the directories on the way down.
            for parent in [self.workdir, *self.workdir.parents]:
                if parent == Path("/"):
                    break
                parent.chmod(parent.stat().st_mode | 0o011)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user,
            "-A", "trust", "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-w", "-D", str(self.data), "-o", options,
            "-l", str(self.log), "start",
        )  # fmt: skip
        self.pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def stop(self) -> None:
        pidfile = self.data / "postmaster.pid"
        if self.pid is None and pidfile.exists():  # a start that failed half-way
            with contextlib.suppress(OSError, ValueError):
                self.pid = int(pidfile.read_text().split("\n", 1)[0])
        if self.pid is None:
            return
        with contextlib.suppress(RuntimeError, subprocess.SubprocessError, OSError):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(self.pid):
            time.sleep(0.05)  # the postmaster's exit: a pid has nothing to await
        if _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None

    def restart(self) -> None:
        """Stop and start the same cluster (the same data, port and socket)."""
        self.stop()
        self._pg_ctl_start()

    def start_again(self) -> None:
        """Start the cluster ``stop()`` stopped (an outage's end)."""
        self._pg_ctl_start()

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database (a copy of ``template1``: ~0.1 s); returns its URL."""
        name = f"r3nb_{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn, autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url`` (its sessions too: FORCE)."""
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    """One cluster per test process (per xdist worker), started the first time a test
    asks for it and stopped by pid at the end of the session, even after failures.
    Missing PostgreSQL is an error, never a skip: ``make system-deps`` installs it."""
    # Not under pytest's default temp root: a pytest session starting meanwhile (another
    # run on the machine) makes ``/tmp/pytest-of-<user>`` 0700 again, and the
    # ``postgres`` user then cannot reach its data (seen: "pg_control: Permission
    # denied"). An explicit ``--basetemp`` (make test) is left alone: it is used.
    base = tmp_path_factory.getbasetemp()
    workdir = Path(
        tempfile.mkdtemp(prefix="r3nb-pg-", dir=None if "pytest-of-" in str(base) else base)
    )
    cluster = PostgresCluster(workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database of the session's cluster, dropped after the test."""
    url = pg_cluster.create_database()
    yield url
    with contextlib.suppress(psycopg.Error):
        pg_cluster.drop_database(url)
