"""Issue 12's server-side promises: keys stay with the server, bad input is a 400, error
texts carry no part of a key, the DB is private, conversation floods are limited and the
list is paged, a stopped server keeps every character a page showed, and a reply a
provider withheld says so."""

from __future__ import annotations

import json
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from r3nb.engine.store import Store
from tests.client import Api
from tests.conftest import PROVIDER_KEY
from tests.provider import FakeProvider, Scenario
from tests.servers import JupyterServer

ENV_KEY_NAME = "TRUST_TEST_PROVIDER_KEY"
ENV_KEY = "env-key-0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # no well-known prefix on purpose
FILE_KEY = "file-key-8c7b6a5948372615a4b3c2d1e0f9e8d7"


def _kernel_environ(server: JupyterServer) -> bytes:
    """The environment a kernel started by ``server`` inherited, as the OS holds it."""
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
        kid = client.post("api/kernels", json={"name": "python3"}).json()["id"]
        try:
            for pid in Path("/proc").iterdir():
                try:
                    if kid.encode() in (pid / "cmdline").read_bytes():
                        return (pid / "environ").read_bytes()
                except OSError:
                    continue
            raise AssertionError("kernel process not found")
        finally:
            client.delete(f"api/kernels/{kid}")


def _send(server: JupyterServer, model: str, content: str = "!tokens=3") -> dict[str, Any]:
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=60) as client:
        cid = client.post("conversations", json={}).json()["conversation"]["id"]
        body = {"content": content, "model": model}
        with client.stream("POST", f"conversations/{cid}/messages", json=body) as r:
            r.read()
        return client.get(f"conversations/{cid}").json()["messages"][-1]


# --- keys ------------------------------------------------------------------------------


@pytest.fixture
def keyed_server(tmp_path: Path, provider: FakeProvider) -> Iterator[JupyterServer]:
    key_file = tmp_path / "provider.key"
    key_file.write_text(FILE_KEY + "\n")
    key_file.chmod(0o600)
    open_file = tmp_path / "open.key"
    open_file.write_text(FILE_KEY)
    open_file.chmod(0o644)
    base = {"model": "openai/fake", "api_base": provider.url}
    models = {
        "env": {**base, "api_key_env": ENV_KEY_NAME},
        "file": {**base, "api_key_file": str(key_file)},
        "open": {**base, "api_key_file": str(open_file)},
    }
    server = JupyterServer(
        tmp_path / "srv",
        {"db_path": str(tmp_path / "r3nb.duckdb"), "models": models, "default_model": "env"},
        extra_env={ENV_KEY_NAME: ENV_KEY, "R3NB_MODELS": json.dumps({"x": {**base}})},
    )
    try:
        yield server.start()
    finally:
        server.stop()


def test_kernels_do_not_inherit_keys_and_key_files_stay_out_of_every_environment(
    keyed_server: JupyterServer, provider: FakeProvider
) -> None:
    kernel_env = _kernel_environ(keyed_server)
    assert ENV_KEY.encode() not in kernel_env
    assert ENV_KEY_NAME.encode() not in kernel_env
    assert b"R3NB_MODELS=" not in kernel_env  # embedded-mode config is no kernel's business
    assert b"R3NB_URL=" in kernel_env
    assert b"R3NB_SECRET=" in kernel_env
    assert keyed_server.proc is not None
    server_env = Path(f"/proc/{keyed_server.proc.pid}/environ").read_bytes()
    assert FILE_KEY.encode() not in server_env + kernel_env

    # Both keys still reach the provider.
    assert _send(keyed_server, "env")["status"] == "complete"
    assert _send(keyed_server, "file")["status"] == "complete"
    refused = _send(keyed_server, "open")
    assert refused["status"] == "error"
    assert "readable by others" in refused["error"]
    assert "chmod 600" in refused["error"]
    assert provider.authorizations[:2] == [f"Bearer {ENV_KEY}", f"Bearer {FILE_KEY}"]
    assert len(provider.requests) == 2  # the open key file was never used


# --- errors carry no part of a key -----------------------------------------------------


@pytest.mark.parametrize("cut_at", [200, 236, 239, 245])
async def test_provider_error_text_never_carries_part_of_a_key(
    api: Api, provider: FakeProvider, model: str, cut_at: int
) -> None:
    # The provider echoes the key (as some do, quoting the request) just where a
    # 240-character cut used to fall.
    words = "x" * cut_at
    provider.scenario = Scenario(error_message=f"{words} {PROVIDER_KEY} and {PROVIDER_KEY}")
    cid = await api.conversation()
    message = (await api.send(cid, "!fault=400", model=model))["done"]["message"]
    assert message["status"] == "error"
    error = message["error"]
    for start in range(len(PROVIDER_KEY) - 10):  # no 10 characters of it, anywhere
        assert PROVIDER_KEY[start : start + 10] not in error, error
    assert len(error) <= 260


# --- bad input -------------------------------------------------------------------------


async def test_deeply_nested_json_is_a_400_not_a_500(api: Api, engine: Any) -> None:
    cid = await api.conversation()
    for body in ("[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
        status, reply = await api.call("POST", f"conversations/{cid}/messages", raw=body.encode())
        assert status == 400, reply
        assert "nested too deeply" in reply["error"]
    assert engine.counters["streams_started"] == 0


# --- the DB is private -----------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_new_store_is_private(tmp_path: Path, jp_serverapp: Any, api: Api) -> None:
    engine = jp_serverapp.web_app.settings["r3nb_engine"]
    db = Path(engine.store.path)
    cid = await api.conversation()
    await api.send(cid, "!tokens=3")
    assert _mode(db.parent) == 0o700
    assert _mode(db) == 0o600
    wal = Path(str(db) + ".wal")
    if wal.exists():
        assert _mode(wal) == 0o600
    assert (await api.ok("GET", "health"))["store_exposed"] == []


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A folder of its own, so the store creates it (and its mode is r3nb's)."""
    return tmp_path / "private" / "r3nb.duckdb"


def test_an_existing_store_open_to_others_is_reported(
    tmp_path: Path, provider: FakeProvider
) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    db = folder / "r3nb.duckdb"
    first = Store(db)
    first.open()
    first.close()
    assert _mode(db) == 0o600  # created by r3nb: private even in an open folder
    db.chmod(0o644)
    second = JupyterServer(tmp_path / "b", {"db_path": str(db)}).start()
    try:
        health = httpx.get(second.api + "health", headers=second.headers).json()
    finally:
        second.stop()
    exposed = " ".join(health["store_exposed"])
    assert str(db) in exposed
    assert "chmod 600" in exposed
    assert str(folder) in exposed
    assert "chmod 700" in exposed
    assert "open to other users" in second.log()


# --- conversation floods and the paged list --------------------------------------------


@pytest.fixture
def r3nb_config() -> dict[str, Any]:
    return {"rate_limit_per_minute": 30}


async def test_creating_conversations_is_rate_limited_per_person(api: Api) -> None:
    statuses = [(await api.call("POST", "conversations", {}))[0] for _ in range(30)]
    assert statuses == [201] * 30
    refused = await api.client.post("conversations", content="{}")
    assert refused.status_code == 429
    assert "new conversations" in refused.json()["error"]
    assert int(refused.headers["Retry-After"]) >= 1


async def test_conversation_list_is_paged_and_searchable(api: Api, engine: Any) -> None:
    engine.creation_limiter.per_minute = 0  # this test makes many on purpose
    made = [await api.conversation(f"topic {i}") for i in range(230)]
    await api.send(made[5], "!tokens=2 the word zanzibar appears here")
    seen: list[str] = []
    cursor = None
    while True:
        page = await api.ok(
            "GET", "conversations", limit=100, **({"cursor": cursor} if cursor else {})
        )
        seen += [c["id"] for c in page["conversations"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made)
    assert len(seen) == len(set(seen))
    assert seen[0] == made[5]  # most recently active first
    found = await api.ok("GET", "conversations", q="ZANZIBAR")
    assert [c["id"] for c in found["conversations"]] == [made[5]]
    titled = await api.ok("GET", "conversations", q="topic 22", limit=5)
    assert {c["title"] for c in titled["conversations"]} <= {f"topic 22{i}" for i in range(10)} | {
        "topic 22"
    }
    assert (await api.call("GET", "conversations", None, cursor="garbage!"))[0] == 400
    assert (await api.call("GET", "conversations", None, limit="0"))[0] == 400


async def test_conversations_can_be_renamed(api: Api) -> None:
    cid = await api.conversation("first")
    renamed = await api.ok("PATCH", f"conversations/{cid}", {"title": "  second  "})
    assert renamed["conversation"]["title"] == "second"
    snapshot = await api.ok("GET", f"conversations/{cid}")
    assert snapshot["conversation"]["title"] == "second"
    assert (await api.call("PATCH", f"conversations/{cid}", {"title": ""}))[0] == 400
    missing = await api.call("PATCH", "conversations/0123456789abcdef", {"title": "x"})
    assert missing[0] == 404


# --- a reply the provider withheld -----------------------------------------------------


@pytest.mark.parametrize(
    ("directives", "expected"),
    [
        ("!tokens=4 !finish=content_filter", "content filter"),
        ("!tokens=0", "empty reply"),
    ],
)
async def test_filtered_or_empty_replies_say_why(
    api: Api, model: str, directives: str, expected: str
) -> None:
    cid = await api.conversation()
    message = (await api.send(cid, directives, model=model))["done"]["message"]
    assert message["status"] == "error"
    assert expected in message["error"]
    stored = (await api.ok("GET", f"conversations/{cid}"))["messages"][-1]
    assert stored["status"] == "error"
    assert expected in stored["error"]


# --- a stopped server keeps what pages showed ------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_reply_keeps_every_character_already_shown(
    tmp_path: Path, provider: FakeProvider, sig: signal.Signals
) -> None:
    db = tmp_path / "r3nb.duckdb"
    config = {
        "db_path": str(db),
        "snapshot_interval": 30.0,  # no flush would happen before the signal
        "models": {"fake": {"model": "openai/fake", "api_base": provider.url,
                            "input_cost_per_token": 0, "output_cost_per_token": 0}},
    }  # fmt: skip
    server = JupyterServer(tmp_path / "srv", config).start()
    shown = ""
    try:
        with httpx.Client(base_url=server.api, headers=server.headers, timeout=60) as client:
            cid = client.post("conversations", json={}).json()["conversation"]["id"]
            body = {"content": "!tokens=400 !delay=0.02"}
            with client.stream("POST", f"conversations/{cid}/messages", json=body) as r:
                for line in r.iter_lines():
                    if line.startswith("data:") and '"text"' in line:
                        shown += json.loads(line[5:])["text"]
                    if len(shown) > 200:
                        break
        assert server.proc is not None
        server.proc.send_signal(sig)
        assert server.proc.wait(timeout=30) is not None
    finally:
        server.stop()
    # The file as the stopped server left it (no restart: start-up recovery would mark a
    # row left streaming too, and hide whether the signal did).
    with duckdb.connect(str(db), read_only=True) as con:
        content, status, error = con.execute(
            "SELECT content, status, error FROM messages WHERE role = 'assistant'"
        ).fetchone()
    assert status == "error"
    assert error == "interrupted: the server was stopped"
    assert content.startswith(shown), (len(content), len(shown))
