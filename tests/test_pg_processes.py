"""Two r3nb server processes on one PostgreSQL database (what several hub-service
processes are): an observer on one sees a reply streaming on the other, a process
starting does not end the replies the other is streaming (its start-up recovery ends
only replies no other live process streams), and Stop works from either.

Real parts: two ``jupyter server`` subprocesses with the r3nb extension, ``db_path`` a
``postgresql://`` URL of the worker's cluster (tests/pg.py), the fake provider."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.provider import FakeProvider
from tests.servers import JupyterServer


def _config(provider: FakeProvider, db: str) -> dict[str, Any]:
    return {
        "db_path": db,
        "snapshot_interval": 0.2,
        "models": {"fake": {"model": "openai/fake", "api_base": provider.url, "api_key": "k"}},
        "default_model": "fake",
    }


def _reply(client: httpx.Client, cid: str) -> dict[str, Any]:
    return dict(client.get(f"conversations/{cid}").json()["messages"][-1])


def _until(client: httpx.Client, cid: str, done: Any, what: str) -> dict[str, Any]:
    """Poll the other process (as an observer's panel does) until ``done(reply)``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        reply = _reply(client, cid)
        if done(reply):
            return reply
        time.sleep(0.05)
    raise AssertionError(f"the observer never saw {what}: {reply}")


def test_two_processes_share_replies_their_observers_and_their_stop_buttons(
    tmp_path: Path, provider: FakeProvider, pg_url: str
) -> None:
    """One pair of servers for both promises (each server start costs seconds):

    1. A reply streams on the first process; the second starts meanwhile (its start-up
       recovery runs before it answers) and does not end it; an observer on the second
       sees its partial text, then its end.
    2. Stop pressed on the second process, for a reply streaming on the first: it ends
       ``cancelled`` naming who stopped it, and the first process stops calling the
       provider (the provider sees the connection closed) without waiting for the gate.
    3. The first process killed (SIGKILL) mid-reply, a process started again: the reply
       is ``error`` with the text flushed before the kill, and nothing streams.
    """
    first = JupyterServer(tmp_path / "a", _config(provider, pg_url)).start()
    second: JupyterServer | None = None
    try:
        a = httpx.Client(base_url=first.api, headers=first.headers, timeout=30)
        cid = a.post("conversations", json={"title": "two processes"}).json()["conversation"]
        cid = cid["id"]
        sending = _send(a, cid, "!tokens=40 !gate=10")
        provider.wait_sent(0, 10)  # the reply streams on the first process, held there
        second = JupyterServer(tmp_path / "b", _config(provider, pg_url)).start()
        b = httpx.Client(base_url=second.api, headers=second.headers, timeout=30)
        seen = _until(b, cid, lambda r: r["content"], "partial text")
        assert seen["status"] == "streaming"  # not ended by the second process's start
        assert provider.replies[0].startswith(seen["content"])
        provider.release()
        assert "event: done" in sending.read().decode()
        sending.close()
        final = _until(b, cid, lambda r: r["status"] != "streaming", "the end")
        assert (final["status"], final["content"]) == ("complete", provider.replies[0])

        sending = _send(a, cid, "!tokens=40 !gate=5")
        provider.wait_sent(1, 5)
        reply = _until(b, cid, lambda r: r["id"] != final["id"] and r["content"], "a 2nd reply")
        stopped = b.post(f"messages/{reply['id']}/cancel").json()["message"]
        assert stopped["status"] == "cancelled"
        assert stopped["error"].startswith("stopped by")
        assert provider.wait_outcome(1) == "disconnected"  # the first process hung up
        assert "event: done" in sending.read().decode()
        sending.close()
        assert (_reply(a, cid)["status"], _reply(a, cid)["error"]) == (
            "cancelled",
            stopped["error"],
        )

        sending = _send(a, cid, "!tokens=40 !gate=5")
        provider.wait_sent(2, 5)
        held = _until(b, cid, lambda r: r["id"] != reply["id"] and r["content"], "a 3rd reply")
        first.kill()  # SIGKILL mid-reply: its connection, and so its writer id, are gone
        sending.close()
        third = JupyterServer(tmp_path / "c", _config(provider, pg_url)).start()
        try:
            c = httpx.Client(base_url=third.api, headers=third.headers, timeout=30)
            left = _reply(c, cid)  # recovered before the restarted process answered
            assert (left["id"], left["status"]) == (held["id"], "error")
            assert left["content"].startswith(held["content"])  # nothing flushed is lost
            assert c.get("health").json()["store"]["streaming_rows"] == 0
            c.close()
        finally:
            third.kill()
        a.close()
        b.close()
    finally:
        provider.release()
        first.kill()
        if second is not None:
            second.kill()


def _send(client: httpx.Client, cid: str, content: str) -> httpx.Response:
    """A send whose event stream is read later (the reply streams meanwhile)."""
    request = client.build_request(
        "POST", f"conversations/{cid}/messages", json={"content": content}
    )
    return client.send(request, stream=True)
