"""Trying to break a real ``jupyter server``: store faults, kill -9 loops, hostile clients,
secrets, injection-shaped input."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from tests.provider import FakeProvider
from tests.servers import JupyterServer, provider_settled

KEY = "sk-test-hardening-key-9876543210"


def _config(provider: FakeProvider, db: Path, **extra: Any) -> dict[str, Any]:
    return {
        "db_path": str(db),
        "snapshot_interval": 0.2,
        "cleanup_interval": 0.3,
        "rate_limit_per_minute": 100000,
        "max_concurrent_streams": 1000,
        # The default stream path for openai/ models (r3nb's lean reader); explicit prices
        # so that no reply waits for litellm's price list.
        "models": {
            "fake": {
                "model": "openai/fake",
                "api_base": provider.url,
                "api_key": KEY,
                "input_cost_per_token": 1e-6,
                "output_cost_per_token": 2e-6,
            }
        },
        "default_model": "fake",
        **extra,
    }


def _client(server: JupyterServer, **kw: Any) -> httpx.Client:
    return httpx.Client(base_url=server.api, headers=server.headers, timeout=30, **kw)


def _send(client: httpx.Client, cid: str, content: str) -> str:
    with client.stream("POST", f"conversations/{cid}/messages", json={"content": content}) as r:
        assert r.status_code == 200, r.read()
        return r.read().decode()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def server(tmp_path: Path, provider: FakeProvider) -> Iterator[JupyterServer]:
    s = JupyterServer(tmp_path / "srv", _config(provider, tmp_path / "r3nb.duckdb"))
    try:
        yield s.start()
    finally:
        s.stop()


# --- store faults ----------------------------------------------------------------------


def _hold_lock(db: Path) -> subprocess.Popen[bytes]:
    code = (
        "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
        "print('locked', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == b"locked"
    return holder


def test_locked_db_file_is_reported_then_recovered(tmp_path: Path, provider: FakeProvider) -> None:
    db = tmp_path / "locked.duckdb"
    holder = _hold_lock(db)
    # (Also: with freeze_gc_at_start off, start-up's objects stay in full collections.)
    server = JupyterServer(tmp_path / "srv", _config(provider, db, freeze_gc_at_start=False))
    try:
        server.start()
        with _client(server) as client:
            health = client.get("health").json()
            assert health["ok"] is False
            assert str(db) in health["store_error"]
            assert "lock" in health["store_error"].lower()
            assert health["gc"]["frozen_objects"] == 0
            r = client.get("conversations")
            assert r.status_code == 503
            assert str(db) in r.json()["error"]
            holder.kill()
            holder.wait()
            deadline = time.monotonic() + 10
            while client.get("health").json()["ok"] is False:  # the sweeper reopens it
                assert time.monotonic() < deadline, "store never recovered"
                time.sleep(0.1)
            assert client.post("conversations", json={}).status_code == 201
        assert str(db) in server.log()
        assert "Traceback" not in server.log()
    finally:
        holder.kill()
        server.stop()


@pytest.mark.parametrize("fault", ["unwritable", "corrupt"])
def test_unusable_db_path_is_reported_clearly(
    tmp_path: Path, provider: FakeProvider, fault: str
) -> None:
    if fault == "unwritable":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        db = blocker / "r3nb.duckdb"
    else:
        db = tmp_path / "corrupt.duckdb"
        db.write_bytes(os.urandom(64 * 1024))
    server = JupyterServer(tmp_path / "srv", _config(provider, db))
    try:
        server.start()
        with _client(server) as client:
            health = client.get("health").json()
            assert health["ok"] is False
            assert str(db.parent if fault == "unwritable" else db) in health["store_error"]
            r = client.post("conversations", json={})
            assert r.status_code == 503
            assert r.json()["error"].startswith("r3nb's DuckDB store is unavailable")
        log = server.log()
        assert "r3nb's DuckDB store is unavailable" in log
        assert "Traceback" not in log
    finally:
        server.stop()


# --- crashes ---------------------------------------------------------------------------


def test_kill_9_loop_loses_no_completed_message(tmp_path: Path, provider: FakeProvider) -> None:
    """Four crashes at random moments, each with three replies in flight (one per
    conversation: a conversation writes one reply at a time), every round starting on
    the file the last crash left. (It was twenty rounds, then six: the suite's longest
    test, for the same kinds of crash moment; each round is a server start, and the
    random moments fall anywhere from the admissions to mid-stream in any round.)"""
    db = tmp_path / "loop.duckdb"
    rng = random.Random(7)
    completed: dict[str, dict[str, Any]] = {}
    cids: list[str] = []
    rounds = 4
    for round_no in range(rounds):
        server = JupyterServer(tmp_path / f"r{round_no}", _config(provider, db))
        try:
            server.start()
            with _client(server) as client:
                if not cids:
                    cids = [
                        client.post("conversations", json={"title": f"loop {i}"}).json()[
                            "conversation"
                        ]["id"]
                        for i in range(3)
                    ]
                for cid in cids:
                    by_id = {
                        m["id"]: m for m in client.get(f"conversations/{cid}").json()["messages"]
                    }
                    assert all(m["status"] != "streaming" for m in by_id.values())
                    for mid, message in completed.items():
                        if message["conversation_id"] == cid:
                            assert by_id[mid] == message, f"round {round_no}: {mid} changed"
                _send(client, cids[0], "!tokens=5")  # one that completes
                for m in client.get(f"conversations/{cids[0]}").json()["messages"]:
                    if m["status"] == "complete":
                        completed[m["id"]] = m
                # several in flight, then the kill at a random moment
                requests = [
                    client.send(
                        client.build_request(
                            "POST",
                            f"conversations/{cid}/messages",
                            json={"content": f"!tokens=200 !delay=0.01 r{round_no}s{i}"},
                        ),
                        stream=True,
                    )
                    for i, cid in enumerate(cids)
                ]
                time.sleep(rng.uniform(0.0, 0.6))  # the random moment of the crash
                server.kill()
                for r in requests:
                    r.close()
        finally:
            server.kill()
    final = JupyterServer(tmp_path / "final", _config(provider, db)).start()
    try:
        with _client(final) as client:
            messages = [
                m for cid in cids for m in client.get(f"conversations/{cid}").json()["messages"]
            ]
            health = client.get("health").json()
    finally:
        final.stop()
    by_id = {m["id"]: m for m in messages}
    assert all(by_id[mid] == m for mid, m in completed.items())
    assert len(completed) >= 2 * rounds  # a prompt and its reply per round
    assert health["store"]["streaming_rows"] == 0
    # Start-up's objects (~100,000) are out of the full collections that pause the loop.
    assert health["gc"]["frozen_objects"] > 20_000, health["gc"]


# --- hostile clients -------------------------------------------------------------------


def test_a_client_that_never_reads_does_not_grow_server_memory(
    server: JupyterServer, provider: FakeProvider
) -> None:
    assert server.proc is not None
    with _client(server) as client:
        cid = client.post("conversations", json={}).json()["conversation"]["id"]
        _send(client, cid, "!tokens=2000")  # warm up: caches filled, buffers sized
        deadline = time.monotonic() + 60
        while not provider_settled(client.get("health").json()):  # litellm's import adds
            assert time.monotonic() < deadline  # ~150 MB in the background: not ours
            time.sleep(0.1)
    before = _rss_kb(server.proc.pid)
    body = json.dumps({"content": "!tokens=100000"}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        f"POST /r3nb/api/conversations/{cid}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: token {server.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    try:
        provider.wait_for(lambda: provider.outcomes[-1] is not None, timeout=120, what="end")
        with _client(server) as client:
            deadline = time.monotonic() + 60
            while True:
                reply = client.get(f"conversations/{cid}").json()["messages"][-1]
                if reply["status"] != "streaming" or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        after = _rss_kb(server.proc.pid)
    finally:
        sock.close()
    assert reply["status"] == "complete"
    assert reply["completion_tokens"] == 100000
    assert len(reply["content"]) == len(provider.replies[-1])
    # The reply itself is ~0.6 MB; a per-reader buffer of every delta, or litellm's
    # habit of keeping every chunk object (~270 MB for this reply), would be far more.
    assert after - before < 30_000, (before, after)


def test_hundreds_of_dropped_connections_leak_nothing(
    server: JupyterServer, provider: FakeProvider
) -> None:
    with _client(server) as client:
        # One conversation per connection: a conversation writes one reply at a time.
        cids = [
            client.post("conversations", json={}).json()["conversation"]["id"] for _ in range(300)
        ]
        baseline = client.get("health").json()["tasks"]
    body = json.dumps({"content": "!tokens=20 !delay=0.01"}).encode()
    for i, cid in enumerate(cids):
        sock = socket.create_connection(("127.0.0.1", server.port))
        head = (
            f"POST /r3nb/api/conversations/{cid}/messages HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: token {server.token}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        # drop at different points: mid-headers, mid-body, right after sending
        cut = [len(head) // 2, len(head) + len(body) // 2, len(head) + len(body)][i % 3]
        sock.sendall((head + body)[:cut])
        sock.close()
    with _client(server) as client:
        deadline = time.monotonic() + 30
        while True:
            health = client.get("health").json()
            if health["active_streams"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        messages = [m for c in cids for m in client.get(f"conversations/{c}").json()["messages"]]
    assert health["active_streams"] == 0
    assert health["tasks"] <= baseline + 2, (baseline, health["tasks"])
    assert all(m["status"] == "complete" for m in messages)
    assert len(messages) == 2 * health["counters"]["streams_started"]


# --- secrets and injection -------------------------------------------------------------


def _kernel_secret(server: JupyterServer) -> bytes:
    """The secret as a kernel of this server inherits it (read from the kernel's env)."""
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as client:
        kid = client.post("api/kernels", json={"name": "python3"}).json()["id"]
        try:
            for pid in Path("/proc").iterdir():
                try:
                    cmdline = (pid / "cmdline").read_bytes()
                    if kid.encode() in cmdline:
                        env = (pid / "environ").read_bytes().split(b"\0")
                        return next(e for e in env if e.startswith(b"R3NB_SECRET=")).split(b"=", 1)[
                            1
                        ]
                except (OSError, StopIteration):
                    continue
            raise AssertionError("kernel process not found")
        finally:
            client.delete(f"api/kernels/{kid}")


def test_secrets_never_leave_the_server(
    server: JupyterServer, provider: FakeProvider, tmp_path: Path
) -> None:
    with _client(server) as client:
        secret = client.get("health").json()  # the kernel secret is in the server's env
        cid = client.post("conversations", json={}).json()["conversation"]["id"]
        bodies = [_send(client, cid, f"!fault={fault} !tokens=3") for fault in ("401", "500")]
        bodies.append(_send(client, cid, "!tokens=3"))
        bodies += [client.get(p).text for p in ("models", "health", "usage", "conversations")]
        bodies.append(client.get(f"conversations/{cid}").text)
        bodies.append(client.post("conversations/x/messages", json={}).text)
    kernel_secret = _kernel_secret(server)
    server.stop()
    db_bytes = Path(server.r3nb["db_path"]).read_bytes()
    everything = "\n".join(bodies).encode() + server.log().encode()
    for needle in (KEY.encode(), kernel_secret):
        assert needle not in everything
        assert needle not in db_bytes
    assert secret["ok"] is True


def test_injection_shaped_ids_and_bodies_are_inert(server: JupyterServer) -> None:
    hostile = [
        "'; DROP TABLE messages; --",
        "0123456789abcdef' OR '1'='1",
        '"); DELETE FROM conversations; --',
        "%27%3B%20DROP%20TABLE",
        "../../etc/passwd",
    ]
    with _client(server) as client:
        cid = client.post("conversations", json={"title": hostile[0]}).json()["conversation"]["id"]
        _send(client, cid, hostile[1] + " !tokens=2")
        for h in hostile:
            assert client.get(f"conversations/{h}").status_code in (400, 404)
            assert client.post(f"messages/{h}/cancel").status_code in (400, 404)
            assert client.get("conversations/" + cid, params={"since": h}).status_code == 400
            assert client.get("conversations/" + cid, params={"from": h}).status_code == 400
        snap = client.get(f"conversations/{cid}").json()
    assert snap["conversation"]["title"] == hostile[0]
    assert snap["messages"][0]["content"].startswith(hostile[1])
    server.stop()
    con = duckdb.connect(server.r3nb["db_path"], read_only=True)
    try:
        rows = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        tables = {r[0] for r in rows}
        assert {"conversations", "messages", "schema_migrations"} <= tables
        assert con.execute("SELECT count(*) FROM messages").fetchone() == (2,)
    finally:
        con.close()


def test_first_schema_file_upgrades_itself(tmp_path: Path) -> None:
    """A file written by the first released schema opens with the current code."""
    from r3nb.engine.store import MIGRATIONS, Store

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (name VARCHAR PRIMARY KEY, applied_at DOUBLE)")
    name, statements = MIGRATIONS[0]
    for statement in statements:
        con.execute(statement)
    con.execute("INSERT INTO schema_migrations VALUES (?, 0)", [name])
    con.execute("INSERT INTO conversations VALUES ('00000000000000aa', 'old', 'me', 1, 1, 7)")
    con.execute(
        "INSERT INTO messages (id, conversation_id, seq, role, content, status, created_at,"
        " updated_at, revision) VALUES ('00000000000000bb', '00000000000000aa', 1, 'user',"
        " 'hello from the past', 'complete', 1, 1, 8)"
    )
    con.close()
    store = Store(path)
    store.open()
    try:
        assert store.applied_migrations() == [n for n, _ in MIGRATIONS]
        assert store.revision == 8
        message = asyncio.run(store.get_message("00000000000000bb"))
    finally:
        store.close()
    assert message is not None
    assert message["content"] == "hello from the past"
