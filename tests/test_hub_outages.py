"""Hub mode through outages of what the r3nb service stands on (issue 18):

- PostgreSQL restarting mid-stream: the running reply keeps streaming to its client,
  the text it got meanwhile is flushed once PostgreSQL is back and its end is stored
  whole (also when the reply ended during the outage); a send meanwhile gets a 503
  saying the database is unavailable; sends work again after; the service's LISTEN
  connection is back (a Stop written by another process reaches it).
- one of two service processes on the database killed (SIGKILL) mid-stream: an
  observer on the other saw its replies stream and end; started again, it ends the
  orphaned reply ``error`` with exactly the text flushed before the kill, no row is
  left streaming, and every prompt it acknowledged is stored.
- the hub stopping: token pairs the service already resolved keep working, also once
  HubAuth's cache of them expired; a token it never saw gets 503 "cannot verify
  identity".

Real parts: JupyterHub (its proxy too) with the r3nb service registered, the worker's
PostgreSQL cluster (tests/pg.py, stopped and started here), the fake provider. No
single-user server is spawned: the test calls the service as a relay does, with a
server token (``Hub.relay_token``) and the person's own token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from r3nb.engine.store.pg_store import PostgresStore
from r3nb.engine.store.values import Final
from r3nb.engine.sweeper import RESTART_REASON
from r3nb.service.wire import PERSON_HEADER
from tests import hub as hub_module
from tests.client import Api
from tests.hub import Hub, ServicePlan, ServiceProcess
from tests.pg import PostgresCluster
from tests.provider import FakeProvider

hub_module.require_hub()

#: The service's HubAuth cache (seconds) in this file.
CACHE_SECONDS = 1


@pytest.fixture(scope="module")
def outage_provider() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def outage_db(pg_cluster: PostgresCluster) -> str:
    return pg_cluster.create_database()


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, outage_provider: FakeProvider, outage_db: str
) -> Iterator[Hub]:
    model = {"model": "openai/fake", "api_base": outage_provider.url, "api_key": "sk-x"}
    plan = ServicePlan(
        db_path=outage_db,
        engine={
            "models": {"fake": model},
            "default_model": "fake",
            "snapshot_interval": 0.2,
            # Sweeps often: the first tick after PostgreSQL is back must not end the
            # replies this process is still streaming (it did: recovery after a reopen).
            "cleanup_interval": 0.05,
        },
        # HubAuth's answers expire after 1 s here (300 s by default): the hub test below
        # then proves that expired answers still stand while the hub is away.
        env={"R3NB_SERVICE_TOKEN_CACHE_SECONDS": str(CACHE_SECONDS)},
    )
    h = Hub(tmp_path_factory.mktemp("hub-outages"), outage_provider.url, service=plan)
    try:
        h.start_service()
        h.start()
        yield h
    finally:
        h.stop()
    assert h.leftover_pids() == [], "processes of the hub run left behind"


@contextlib.asynccontextmanager
async def as_relay(hub: Hub, user: str, service_url: str | None = None) -> AsyncIterator[Api]:
    """The service (the process at ``service_url``, the first by default), called as
    ``user``'s server relays ``user``'s own panel."""
    headers = {**hub.auth(hub.relay_token(user)), PERSON_HEADER: hub.token(user)}
    api = Api((service_url or hub.service_url) + "r3nb/api/", headers=headers)
    try:
        yield api
    finally:
        await api.aclose()


@pytest.fixture(scope="module")
def elsewhere(hub: Hub, outage_db: str) -> Iterator[PostgresStore]:
    """The service's database as another process sees it (this one): reads what the
    service stored, and writes as a second service process would."""
    store = PostgresStore(outage_db)
    store.open()
    try:
        yield store
    finally:
        store.close()


class Reader:
    """One send's event stream, read in the background: its text as it arrives."""

    def __init__(self, api: Api, cid: str, content: str) -> None:
        self.text = ""
        self.events: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read(api, cid, content))

    async def _read(self, api: Api, cid: str, content: str) -> None:
        async for event, data in api.events(
            "POST", f"conversations/{cid}/messages", {"content": content}
        ):
            self.events.append((event, data))
            if event == "delta":
                self.text += data["text"]
            self.changed.set()

    async def until(self, check: Any, timeout: float = 20) -> None:
        """Wait for ``check()`` as events arrive (failing at once if the stream ends)."""
        async with asyncio.timeout(timeout):
            while not check():
                if self.task.done():
                    self.task.result()  # its failure, if that is why
                    raise AssertionError(f"the stream ended first: {self.events[-2:]}")
                self.changed.clear()
                waiter = asyncio.ensure_future(self.changed.wait())
                try:
                    await asyncio.wait({self.task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()

    @property
    def mid(self) -> str:
        return str(self.events[0][1]["assistant_message"]["id"])

    async def done(self, timeout: float = 30) -> dict[str, Any]:
        await asyncio.wait_for(self.task, timeout)
        name, data = self.events[-1]
        assert name == "done", self.events[-3:]
        return dict(data["message"])

    async def close(self) -> None:
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


class Watcher:
    """One watch stream (``GET conversations/{cid}/watch``), read in the background."""

    def __init__(self, api: Api, cid: str) -> None:
        self.events: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read(api, cid))

    async def _read(self, api: Api, cid: str) -> None:
        async for event, data in api.events("GET", f"conversations/{cid}/watch", since=0):
            self.events.append((event, data))
            self.changed.set()

    async def until(self, check: Any, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                assert not self.task.done(), f"the watch ended: {self.events[-2:]}"
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


async def _stored(store: PostgresStore, mid: str, wanted: Any, timeout: float = 20) -> Any:
    """Poll PostgreSQL until ``wanted((status, text))`` holds for ``mid``'s row."""
    row: tuple[str, str] = ("", "")
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while True:
                message = await store.get_message(mid)
                assert message is not None
                row = (message["status"], message["content"])
                if wanted(row):
                    return row
                await asyncio.sleep(0.05)  # a row another process writes: polled
    raise AssertionError(f"{mid} never became what was wanted: {row}")


async def test_postgresql_restarting_mid_stream_loses_nothing_and_refuses_sends_clearly(
    hub: Hub,
    outage_provider: FakeProvider,
    pg_cluster: PostgresCluster,
    elsewhere: PostgresStore,
) -> None:
    """One outage, two replies: the first runs through it (to its client) and is still
    running when PostgreSQL is back (its text is flushed then, its end stored whole);
    the second ends during it (its end is kept and stored once PostgreSQL is back:
    before, the row was left ``streaming`` with the text of its last flush)."""
    provider = outage_provider
    async with as_relay(hub, "alice") as alice:
        cid = await alice.conversation("through a restart")
        short = await alice.conversation("ends while PostgreSQL is down")
        other = await alice.conversation("sent to while PostgreSQL is down")
        first = Reader(alice, cid, "!tokens=80 !gate=5 !delay=0.08")
        watcher = Watcher(alice, cid)
        second: Reader | None = None
        try:
            await first.until(lambda: len(first.events) > 1)
            second = Reader(alice, short, "!tokens=10 !gate=4")
            await provider.await_sent(0, 5)
            await provider.await_sent(1, 4)
            await second.until(lambda: len(second.events) > 1)
            before = await _stored(elsewhere, first.mid, lambda row: row[1])  # a flush
            await watcher.until(lambda: any(e == "snapshot" for e, _ in watcher.events))
            await asyncio.to_thread(pg_cluster.stop)
            try:
                seen = len(watcher.events)
                provider.release()
                # Both stream on without PostgreSQL, to their clients; a watcher of the
                # first gets its text from memory (before: its watch ended in an error).
                await first.until(lambda: len(first.text) > len(before[1]) + 20)
                await watcher.until(lambda: any(e == "delta" for e, _ in watcher.events[seen:]))
                assert "error" not in [e for e, _ in watcher.events], watcher.events[-2:]
                await second.until(lambda: second.text == provider.replies[1])
                assert await provider.await_outcome(1) == "done"
                status, body = await alice.call(
                    "POST", f"conversations/{other}/messages", {"content": "now?"}
                )
                assert status == 503, body
                assert "PostgreSQL store is unavailable" in body["error"], body
                status, body = await alice.call("POST", "conversations", {"title": "x"})
                assert status == 503, body
                assert "unavailable" in body["error"], body
                assert provider.outcomes[0] is None  # the first is still running
            finally:
                await asyncio.to_thread(pg_cluster.start_again)
            ended = await second.done()
            assert (ended["status"], ended["content"]) == ("complete", provider.replies[1])
            stored = await _stored(elsewhere, second.mid, lambda row: row[0] != "streaming")
            assert stored == ("complete", provider.replies[1])
            # The first, still running: what it got during the outage is flushed now.
            flushed = await _stored(
                elsewhere, first.mid, lambda row: len(row[1]) > len(before[1]) + 20
            )
            assert flushed[0] == "streaming"
            assert provider.replies[0].startswith(flushed[1])
            final = await first.done()
            assert (final["status"], final["content"]) == ("complete", provider.replies[0])
            assert first.text == provider.replies[0]
            stored = await _stored(elsewhere, first.mid, lambda row: row[0] != "streaming")
            assert stored == ("complete", provider.replies[0])
            assert "error" not in [e for e, _ in watcher.events], watcher.events[-2:]
        finally:
            provider.release()
            await first.close()
            await watcher.close()
            if second is not None:
                await second.close()

        # Sends work again, and the service hears other processes again (its LISTEN
        # connection is back): a Stop written by this process ends its live reply there.
        third = Reader(alice, other, "!tokens=40 !gate=5")
        try:
            await provider.await_sent(2, 5)
            await third.until(lambda: len(third.events) > 1)
            note = "stopped by another process"
            await elsewhere.finalize(third.mid, Final(provider.sent[2], "cancelled", note))
            assert await provider.await_outcome(2, timeout=15) == "disconnected"
            final = await third.done()
            assert (final["status"], final["error"]) == ("cancelled", note)
        finally:
            provider.release()
            await third.close()


class Seen:
    """What a watcher holds of one message, event by event: (status, text) states."""

    def __init__(self, watcher: Watcher, mid: str) -> None:
        self.watcher = watcher
        self.mid = mid

    def states(self) -> list[tuple[str, str]]:
        status, text, out = "", "", []
        for event, data in self.watcher.events:
            if event == "snapshot":
                for m in data["messages"]:
                    if m["id"] == self.mid:
                        status = m["status"]
                        text = text[: m["offset"]] + m["content"] if "offset" in m else m["content"]
                        out.append((status, text))
            elif event == "delta" and data["message_id"] == self.mid:
                text = text[: data["offset"]] + data["text"]
                out.append((status, text))
        return out

    def now(self) -> tuple[str, str]:
        states = self.states()
        return states[-1] if states else ("", "")


async def test_a_killed_service_process_loses_nothing_acknowledged_and_its_peer_saw_it_all(
    hub: Hub, outage_provider: FakeProvider, elsewhere: PostgresStore
) -> None:
    """Two processes of the r3nb service on one database: ``a`` (started here, as an
    admin runs several) and the module's service ``b``; alice sends through ``a`` and
    watches on ``b``.

    1. A reply streaming on ``a``: ``b``'s watch shows it streaming, its text growing
       (held at the gate, then more), then complete.
    2. Another reply, held at its gate once its text is flushed; ``a`` is killed
       (SIGKILL) and started again on its port: its start-up recovery (before it
       answers) ends the orphan ``error`` with exactly the text flushed before the kill
       (``b``'s watcher sees that end), no row is left streaming, and both prompts ``a``
       acknowledged (``start``) are stored, with their replies.
    """
    provider = outage_provider
    a = await asyncio.to_thread(hub.start_service_process)
    try:
        async with as_relay(hub, "alice", a.url) as on_a, as_relay(hub, "alice") as on_b:
            cid = await on_a.conversation("two service processes")
            watcher = Watcher(on_b, cid)
            readers: list[Reader] = []
            try:
                await _kill_and_restart_mid_stream(
                    hub, a, provider, elsewhere, on_a, cid, watcher, readers
                )
            finally:
                provider.release()
                for reader in readers:
                    await reader.close()
                await watcher.close()
    finally:
        await asyncio.to_thread(hub.stop_service_processes)  # ``a``, and ``a`` started again


async def _kill_and_restart_mid_stream(
    hub: Hub,
    a: ServiceProcess,
    provider: FakeProvider,
    elsewhere: PostgresStore,
    on_a: Api,
    cid: str,
    watcher: Watcher,
    readers: list[Reader],
) -> None:
    """The two steps of the test above."""
    first_index = len(provider.requests)
    first = Reader(on_a, cid, "!tokens=30 !gate=10 !delay=0.06")
    readers.append(first)
    await provider.await_sent(first_index, 10)
    await first.until(lambda: len(first.events) > 1)
    seen = Seen(watcher, first.mid)
    held = provider.sent[first_index]
    await watcher.until(lambda: seen.now() == ("streaming", held))
    provider.release()
    await watcher.until(lambda: seen.now()[0] == "complete")
    assert seen.now()[1] == provider.replies[first_index]
    growing = [text for status, text in seen.states() if status == "streaming"]
    assert all(y.startswith(x) for x, y in itertools.pairwise(growing)), growing
    assert any(len(held) < len(t) < len(seen.now()[1]) for t in growing), growing
    assert (await first.done())["content"] == provider.replies[first_index]

    second_index = len(provider.requests)
    second = Reader(on_a, cid, "!tokens=40 !gate=8")
    readers.append(second)
    await provider.await_sent(second_index, 8)
    await second.until(lambda: len(second.events) > 1)
    flushed = provider.sent[second_index]
    kept = Seen(watcher, second.mid)
    await watcher.until(lambda: kept.now() == ("streaming", flushed))  # stored: b read it
    await asyncio.to_thread(a.kill)
    left = await elsewhere.get_message(second.mid)  # until a process starts
    assert left is not None
    assert (left["status"], left["content"]) == ("streaming", flushed)
    await asyncio.to_thread(hub.start_service_process, a.port)
    # Recovered before the restarted process answered: nothing to wait for.
    ended = await elsewhere.get_message(second.mid)
    assert ended is not None
    assert (ended["status"], ended["content"], ended["error"]) == (
        "error",
        flushed,
        RESTART_REASON,
    )
    await watcher.until(lambda: kept.now()[0] == "error")
    assert kept.now() == ("error", flushed)
    assert (await elsewhere.stats())["streaming_rows"] == 0
    for reader, status in ((first, "complete"), (second, "error")):
        start = reader.events[0][1]
        prompt = await elsewhere.get_message(start["user_message"]["id"])
        assert prompt is not None
        assert prompt["content"] == start["user_message"]["content"]
        reply = await elsewhere.get_message(reader.mid)
        assert reply is not None
        assert reply["status"] == status


async def test_with_the_hub_stopped_known_token_pairs_still_work_and_new_ones_get_503(
    hub: Hub, outage_provider: FakeProvider
) -> None:
    """Last in this file: it stops the hub (and with it the proxy)."""
    stranger = hub.token("bob", "never shown to the service")
    async with as_relay(hub, "bob") as bob:
        cid = await bob.conversation("before the hub stops")  # resolves both tokens
        await asyncio.to_thread(hub.stop_hub)
        # HubAuth's cache of bob's pair expires (a clock: nothing to await); the hub's
        # last answers stand in while it is away (before: 503 for everyone).
        await asyncio.sleep(CACHE_SECONDS + 0.2)
        sent = await bob.send(cid, "the hub is down !tokens=5")
        assert sent["done"]["message"]["status"] == "complete"
        assert (await bob.ok("GET", f"conversations/{cid}"))["conversation"]["id"] == cid
        r = await bob.client.get("conversations", headers={PERSON_HEADER: stranger})
        assert r.status_code == 503, r.text
        assert "cannot verify identity" in r.json()["error"]
        assert r.headers["Retry-After"] == "5"
