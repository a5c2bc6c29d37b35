"""Hub mode (issue 18): one r3nb service per hub, single-user servers as relays.

A real JupyterHub with the npm proxy, the r3nb service registered as an external hub
service (the only process with the provider key), and alice's, bob's (two) and carol's
servers in relay mode. People call their own server through the proxy with their own hub
token, as a panel does; kernels call their server with the inherited secret. One hub for
the whole file; the last test stops the service.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gzip
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from r3nb.service.wire import PERSON_HEADER, UNAVAILABLE
from tests import hub as hub_module
from tests.client import Api, ApiError, RawStream
from tests.hub import Hub, ServicePlan
from tests.pg import PostgresCluster
from tests.provider import FakeProvider
from tests.test_hub import _execute_over_websocket

hub_module.require_hub()

#: The provider key: only the service's environment holds it.
KEY = "sk-hub-only-" + secrets.token_hex(12)
KEY_ENV = "R3NB_HUB_TEST_KEY"
#: Tokens a person may use a day, hub-wide (bob spends more than this on one server).
BUDGET_TOKENS = 1000


@pytest.fixture(scope="module")
def hub_provider() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def service_db(pg_cluster: PostgresCluster) -> str:
    """Where the service keeps everything: a database of the worker's PostgreSQL cluster,
    as on a real hub (a DuckDB path works the same: ``db_path`` picks the backend)."""
    return pg_cluster.create_database()


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, hub_provider: FakeProvider, service_db: str
) -> Iterator[Hub]:
    plan = ServicePlan(
        db_path=service_db,
        engine={
            "models": {
                "fake": {
                    "model": "openai/fake",
                    "api_base": hub_provider.url,
                    "api_key_env": KEY_ENV,
                },
                "physics-only": {
                    "model": "openai/fake",
                    "api_base": hub_provider.url,
                    "api_key_env": KEY_ENV,
                },
                "eyes": {  # takes images (issue 17)
                    "model": "openai/fake",
                    "api_base": hub_provider.url,
                    "api_key_env": KEY_ENV,
                    "vision": True,
                },
            },
            "default_model": "fake",
            "model_groups": {"physics-only": ["physics"]},
            "snapshot_interval": 0.3,
            "rate_limit_per_minute": 1000,
            "max_concurrent_streams": 100,
            "budgets": {"tokens_per_day": BUDGET_TOKENS},
        },
        env={KEY_ENV: KEY},
        groups={"physics": ["bob"]},
        managed="r3nb-managed",
    )
    h = Hub(tmp_path_factory.mktemp("hub"), hub_provider.url, service=plan)
    h.configure("alice", "managed", service_url=h.managed_service_url)
    try:
        t0 = time.monotonic()
        h.start_service()  # first: the hub waits up to 30 s for an external service
        h.start()
        t1 = time.monotonic()
        h.start_servers(
            ("alice", ""), ("alice", "managed"), ("bob", ""), ("bob", "second"), ("carol", "")
        )
        print(f"service + hub up in {t1 - t0:.1f} s, five relays {time.monotonic() - t1:.1f} s")
        yield h
    finally:
        h.stop()
    assert h.leftover_pids() == [], "processes of the hub run left behind"


@pytest.fixture(scope="module")
def tokens(hub: Hub) -> dict[str, str]:
    return {user: hub.token(user) for user in ("alice", "bob", "carol")}


@contextlib.asynccontextmanager
async def api_as(
    hub: Hub, user: str, token: str | None, server: str = "", **headers: str
) -> AsyncIterator[Api]:
    """``user``'s own server ``server``, called with ``token`` (None: anonymous)."""
    api = Api(hub.r3nb_api(user, server), headers={**(hub.auth(token) if token else {}), **headers})
    try:
        yield api
    finally:
        await api.aclose()


def _server_pid(hub: Hub, user: str, server: str = "") -> int:
    """The pid of ``user``'s single-user server ``server`` (found by its environment)."""
    wanted = {f"JUPYTERHUB_USER={user}".encode(), f"JUPYTERHUB_SERVER_NAME={server}".encode()}
    for pid in hub.leftover_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if b"jupyterhub-singleuser" in cmdline and wanted <= environ:
            return pid
    raise LookupError(f"no server process for {user}/{server}")


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


# --- keys stay in the service ----------------------------------------------------------

#: Runs in a kernel of alice's server: look for the key everywhere a student can, then
#: use r3nb as a kernel does. The key is searched for reversed, so this code (which may
#: be kept in history files) never holds it.
_KERNEL_CODE = """
import json as _json, os as _os, pathlib as _pl, urllib.request as _rq

_needle = %r[::-1].encode()
_server = _os.getppid()
_hits = [k for k, v in _os.environ.items() if _needle in v.encode()]
for _name in ("environ", "cmdline"):
    if _needle in _pl.Path("/proc/%%d/%%s" %% (_server, _name)).read_bytes():
        _hits.append("/proc/server/" + _name)
_roots = [_os.environ["HOME"]] + [_os.environ["JUPYTER_%%s_DIR" %% k]
                                  for k in ("CONFIG", "DATA", "RUNTIME")]
_files = 0
for _root in _roots:
    for _path in _pl.Path(_root).rglob("*"):
        if _path.is_file():
            _files += 1
            if _needle in _path.read_bytes():
                _hits.append(str(_path))

def _r3nb(method, path, body=None):
    request = _rq.Request(
        _os.environ["R3NB_URL"] + path,
        method=method,
        data=None if body is None else _json.dumps(body).encode(),
        headers={"X-R3nb-Secret": _os.environ["R3NB_SECRET"],
                 "Content-Type": "application/json"},
    )
    with _rq.urlopen(request, timeout=60) as response:
        return response.status, response.read().decode()

_status, _body = _r3nb("POST", "conversations", {"title": "from a kernel"})
_cid = _json.loads(_body)["conversation"]["id"]
_mstatus, _stream = _r3nb("POST", "conversations/" + _cid + "/messages",
                         {"content": "a kernel says hi !tokens=4"})
_r3nb_result = _json.dumps({
    "hits": _hits, "files": _files, "cid": _cid, "stream": _stream,
    "server_cmd": _pl.Path("/proc/%%d/cmdline" %% _server).read_bytes().decode(errors="replace"),
})
"""


async def test_a_kernel_finds_no_key_and_its_calls_act_as_the_owner(
    hub: Hub, tokens: dict[str, str], hub_provider: FakeProvider
) -> None:
    # The control: the key is really there, in the service's own environment only.
    assert hub.service_proc is not None
    assert _environ(hub.service_proc.pid)[KEY_ENV] == KEY
    assert "R3NB_SERVICE_URL" in _environ(_server_pid(hub, "alice"))

    headers = hub.auth(tokens["alice"])
    async with httpx.AsyncClient(timeout=60, headers=headers) as client:
        r = await client.post(hub.server_url("alice") + "api/kernels", json={"name": "python3"})
        assert r.status_code == 201, r.text
        kernel_id = r.json()["id"]
        try:
            ws_url = hub.server_url("alice").replace("http://", "ws://", 1)
            index = len(hub_provider.requests)
            reply = await _execute_over_websocket(
                f"{ws_url}api/kernels/{kernel_id}/channels",
                headers,
                _KERNEL_CODE % KEY[::-1],
                {"result": "_r3nb_result"},
                timeout=60,
            )
        finally:
            await client.delete(hub.server_url("alice") + f"api/kernels/{kernel_id}")
    assert reply["status"] == "ok", reply
    expression = reply["user_expressions"]["result"]
    assert expression["status"] == "ok", expression
    result = json.loads(ast.literal_eval(expression["data"]["text/plain"]))
    assert result["hits"] == []
    assert result["files"] > 0  # the scan did look at the server's files
    assert "jupyterhub-singleuser" in result["server_cmd"]
    assert not hub.db_path("alice").exists(), "a relay must keep no local DB"

    # The kernel's call went through the relay to the service, as alice, source kernel,
    # and the service (only) used the key with the provider.
    assert "event: done" in result["stream"]
    assert hub_provider.authorizations[index] == f"Bearer {KEY}"
    async with api_as(hub, "alice", tokens["alice"]) as alice:
        snapshot = await alice.ok("GET", f"conversations/{result['cid']}")
    messages = {m["role"]: m for m in snapshot["messages"]}
    assert (messages["user"]["author"], messages["user"]["source"]) == ("alice", "kernel")
    assert messages["assistant"]["status"] == "complete"
    assert snapshot["access"] == {"owner": "alice", "server": "alice/", "shares": []}


async def test_a_hub_managed_service_serves_its_relays_the_same_way(
    hub: Hub, tokens: dict[str, str], hub_provider: FakeProvider
) -> None:
    """alice's server "managed" relays to the second service, which the hub started
    (``command``) and handed its own token and URL (its own DuckDB file, or the same
    PostgreSQL database as the external one)."""
    pid = _server_pid(hub, "alice", "managed")
    # c.R3nbApp.service_url wins over the spawner's R3NB_SERVICE_URL.
    assert f"--R3nbApp.service_url={hub.managed_service_url}".encode() in Path(
        f"/proc/{pid}/cmdline"
    ).read_bytes().split(b"\0")
    async with api_as(hub, "alice", tokens["alice"], "managed") as alice:
        cid = await alice.conversation("through the managed service")
        index = len(hub_provider.requests)
        done = (await alice.send(cid, "hi !tokens=3"))["done"]["message"]
        assert (done["status"], done["author"]) == ("complete", "alice")
        assert hub_provider.authorizations[index] == f"Bearer {KEY}"
        snapshot = await alice.ok("GET", f"conversations/{cid}")
    assert snapshot["access"] == {"owner": "alice", "server": "alice/managed", "shares": []}


async def test_a_watch_through_the_relay_is_gzip_for_a_browser_and_plain_for_others(
    hub: Hub, tokens: dict[str, str], hub_provider: FakeProvider
) -> None:
    """The relay asks the service for a plain stream (so it can add an ``error`` event
    of its own) and gzips a watch for a caller that accepts it; the decoded events are
    the plain caller's, each decoded on arrival, and the member ends with the stream."""
    async with api_as(hub, "alice", tokens["alice"]) as alice:
        cid = await alice.conversation("watched through the relay")
        start = (await alice.ok("GET", f"conversations/{cid}"))["revision"]
        path = f"conversations/{cid}/watch"
        streams = {"identity": RawStream(), "gzip, deflate, br": RawStream()}
        seen: dict[str, list[tuple[str, Any]]] = {enc: [] for enc in streams}
        joined = {enc: asyncio.Event() for enc in streams}

        async def watch(encoding: str) -> None:
            async for event in streams[encoding].events(alice.client, path, encoding, since=start):
                seen[encoding].append(event)
                joined[encoding].set()

        tasks = [asyncio.ensure_future(watch(enc)) for enc in streams]
        try:
            await asyncio.wait_for(asyncio.gather(*(j.wait() for j in joined.values())), 30)
            await alice.send(cid, "watched !tokens=30 !delay=0.01")
            await alice.ok("DELETE", f"conversations/{cid}")  # ends both watches
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    plain, packed = streams["identity"], streams["gzip, deflate, br"]
    assert packed.headers is not None
    assert plain.headers is not None
    assert packed.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert seen["gzip, deflate, br"] == seen["identity"]
    assert [e for e, _ in seen["identity"]][-1] == "error"  # the deletion ended it
    updates = [m for e, d in seen["identity"] if e == "snapshot" for m in d["messages"]]
    assert "complete" in [m["status"] for m in updates]  # the reply's end came through
    assert gzip.decompress(bytes(packed.wire)) == bytes(plain.wire)


# --- sharing by name -----------------------------------------------------------------


async def test_alice_shares_by_name_and_bob_watches_live_from_his_own_server(
    hub: Hub, tokens: dict[str, str], hub_provider: FakeProvider
) -> None:
    tokens_n, delay, gate = 40, 0.05, 10
    async with (
        api_as(hub, "alice", tokens["alice"]) as alice,
        api_as(hub, "bob", tokens["bob"]) as bob,
        api_as(hub, "carol", tokens["carol"]) as carol,
    ):
        cid = await alice.conversation("shared by name")
        assert (await bob.call("GET", f"conversations/{cid}"))[0] == 404
        assert (await bob.call("POST", f"conversations/{cid}/shares", {"user": "bob"}))[0] == 404

        status, listing = await alice.call("POST", f"conversations/{cid}/shares", {"user": "bob"})
        assert (status, listing) == (
            201,
            {"owner": "alice", "server": "alice/", "shares": [{"user": "bob"}]},
        )
        assert (await alice.call("POST", f"conversations/{cid}/shares", {"who": "x"}))[0] == 400

        index = len(hub_provider.requests)
        started = asyncio.Event()
        mid: dict[str, str] = {}

        async def alice_streams() -> None:
            async for event, data in alice.events(
                "POST",
                f"conversations/{cid}/messages",
                {"content": f"watch me !tokens={tokens_n} !delay={delay} !gate={gate}"},
            ):
                if event == "start":
                    mid["id"] = data["assistant_message"]["id"]
                    started.set()

        sender = asyncio.create_task(alice_streams())
        arrivals: list[tuple[float, str]] = []
        try:
            await asyncio.wait_for(started.wait(), 30)
            snapshot = await bob.ok("GET", f"conversations/{cid}")
            assert snapshot["access"]["shares"] == [{"user": "bob"}]
            assert cid in [c["id"] for c in (await bob.ok("GET", "conversations"))["conversations"]]
            # Read, not write: bob cannot send, delete or share alice's conversation.
            assert (await bob.call("POST", f"conversations/{cid}/messages", {"content": "x"}))[
                0
            ] == 403
            assert (await bob.call("DELETE", f"conversations/{cid}"))[0] == 403
            assert (await bob.call("POST", f"conversations/{cid}/shares", {"user": "carol"}))[
                0
            ] == 403
            # carol sees nothing of it, through her own server.
            assert (await carol.call("GET", f"conversations/{cid}"))[0] == 404
            assert (await carol.call("GET", f"messages/{mid['id']}/stream"))[0] == 404
            listed = (await carol.ok("GET", "conversations"))["conversations"]
            assert cid not in [c["id"] for c in listed]

            released_at = 0.0
            async for event, data in bob.events("GET", f"messages/{mid['id']}/stream"):
                if event == "delta":
                    arrivals.append((time.monotonic(), data["text"]))
                    if not released_at:
                        # Text reached bob while the provider still held the reply: live.
                        assert hub_provider.sent_chunks[index] <= gate
                        released_at = time.monotonic()
                        hub_provider.release()
                elif event == "done":
                    assert data["message"]["status"] == "complete"
                    break
            await asyncio.wait_for(sender, 30)
        finally:
            hub_provider.release()
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

        assert "".join(text for _, text in arrivals) == hub_provider.replies[index]
        after = [t for t, _ in arrivals if t > released_at]
        assert len(after) >= 5
        assert after[-1] - after[0] >= 0.5 * (tokens_n - gate - 1) * delay

        # Revoked: gone for bob again.
        status, listing = await alice.call("DELETE", f"conversations/{cid}/shares", {"user": "bob"})
        assert (status, listing["shares"]) == (200, [])
        assert (await bob.call("GET", f"conversations/{cid}"))[0] == 404


async def test_a_visitor_of_a_shared_server_has_that_servers_conversations_only(
    hub: Hub, tokens: dict[str, str]
) -> None:
    """JupyterHub sharing of alice's default server still gives bob what it gave before
    hub mode, the conversations created through that server, and nothing else of hers."""
    async with (
        api_as(hub, "alice", tokens["alice"]) as alice,
        api_as(hub, "alice", tokens["alice"], "managed") as alice_managed,
    ):
        here = await alice.conversation("on alice/")
        elsewhere = await alice_managed.conversation("on alice/managed")
    hub.share("alice", "bob")
    try:
        # A fresh token: the service caches what a token may do for 300 s.
        async with api_as(hub, "alice", hub.token("bob")) as bob_visiting:
            listed = [
                c["id"] for c in (await bob_visiting.ok("GET", "conversations"))["conversations"]
            ]
            assert here in listed
            assert elsewhere not in listed
            renamed = await bob_visiting.ok("PATCH", f"conversations/{here}", {"title": "by bob"})
            assert renamed["conversation"]["title"] == "by bob"
            assert (await bob_visiting.call("GET", f"conversations/{elsewhere}"))[0] == 404
            # Sharing a conversation stays its creator's decision.
            status, _ = await bob_visiting.call(
                "POST", f"conversations/{here}/shares", {"user": "carol"}
            )
            assert status == 403
    finally:
        hub.revoke("alice", "bob")


async def test_a_conversation_shared_with_a_hub_group_reaches_its_members_only(
    hub: Hub, tokens: dict[str, str]
) -> None:
    async with (
        api_as(hub, "alice", tokens["alice"]) as alice,
        api_as(hub, "bob", tokens["bob"], "second") as bob,
        api_as(hub, "carol", tokens["carol"]) as carol,
    ):
        cid = await alice.conversation("for the physics group")
        assert (await bob.call("GET", f"conversations/{cid}"))[0] == 404
        await alice.ok("POST", f"conversations/{cid}/shares", {"group": "physics"})
        snapshot = await bob.ok("GET", f"conversations/{cid}")  # bob is in "physics"
        assert snapshot["access"]["shares"] == [{"group": "physics"}]
        assert (await carol.call("GET", f"conversations/{cid}"))[0] == 404
        await alice.ok("DELETE", f"conversations/{cid}/shares", {"group": "physics"})
        assert (await bob.call("GET", f"conversations/{cid}"))[0] == 404


async def test_an_attached_image_is_served_through_the_relays_to_readers_only(
    hub: Hub, tokens: dict[str, str], hub_provider: FakeProvider
) -> None:
    from tests.test_images import png, upload

    async with (
        api_as(hub, "alice", tokens["alice"]) as alice,
        api_as(hub, "bob", tokens["bob"]) as bob,
        api_as(hub, "carol", tokens["carol"]) as carol,
    ):
        cid = await alice.conversation("a plot for bob")
        sent = await alice.send(cid, "look !tokens=2", model="eyes", attachments=[upload(png())])
        aid = sent["start"]["user_message"]["attachments"][0]["id"]
        assert hub_provider.requests[-1]["messages"][-1]["content"][1]["type"] == "image_url"
        path = f"conversations/{cid}/attachments/{aid}"
        assert (await bob.call("GET", path))[0] == 404  # not shared yet
        await alice.ok("POST", f"conversations/{cid}/shares", {"user": "bob"})
        for reader in (alice, bob):
            r = await reader.client.get(path)
            assert (r.status_code, r.headers["content-type"]) == (200, "image/png")
            assert r.content == png()
        assert (await carol.call("GET", path))[0] == 404


# --- who may call at all -----------------------------------------------------------------


async def test_anonymous_replayed_and_forged_identities_are_refused(
    hub: Hub, tokens: dict[str, str]
) -> None:
    api = "r3nb/api/conversations"
    async with api_as(hub, "alice", tokens["alice"]) as alice:
        alices = await alice.conversation("alice's own")
    async with httpx.AsyncClient(timeout=30) as client:
        # Anonymous, through bob's server and straight to the service.
        r = await client.get(hub.r3nb_api("bob") + "conversations", follow_redirects=False)
        assert r.status_code in (302, 403), r.text
        r = await client.get(hub.service_url + api)
        assert (r.status_code, "error" in r.json()) == (401, True)
        # bob's own token sent straight to the service: not a server's token.
        r = await client.get(hub.service_url + api, headers=hub.auth(tokens["bob"]))
        assert r.status_code == 403, r.text
        r = await client.get(hub.service_url + api, headers={PERSON_HEADER: tokens["bob"]})
        assert r.status_code == 401, r.text
        # bob's server token (readable by bob's kernels) cannot carry alice's token.
        server_token = _environ(_server_pid(hub, "bob"))["JUPYTERHUB_API_TOKEN"]
        both = {**hub.auth(server_token), PERSON_HEADER: tokens["alice"]}
        r = await client.get(hub.service_url + api + f"/{alices}", headers=both)
        assert r.status_code == 403, r.text
        # ... and claims in headers are ignored: it speaks for bob's kernels only.
        forged = {**hub.auth(server_token), "X-Forwarded-User": "alice", "X-R3nb-User": "alice"}
        r = await client.post(hub.service_url + api, headers=forged, json={"title": "forged"})
        assert r.status_code == 201, r.text
        assert r.json()["conversation"]["author"] == "bob"
        assert (
            await client.get(hub.service_url + api + f"/{alices}", headers=forged)
        ).status_code == 404

    # Through bob's server, a person header of alice's is replaced by bob's own token.
    async with api_as(hub, "bob", tokens["bob"], **{PERSON_HEADER: tokens["alice"]}) as bob:
        assert (await bob.call("GET", f"conversations/{alices}"))[0] == 404
        created = await bob.ok("POST", "conversations", {"title": "mine"})
        assert created["conversation"]["author"] == "bob"


# --- budgets are per person, hub-wide ------------------------------------------------------


async def test_a_model_kept_for_a_hub_group_serves_its_members_only(
    hub: Hub, tokens: dict[str, str]
) -> None:
    """``model_groups`` on the service: bob (group physics) sees and uses the model,
    carol neither sees it nor can send to it, whatever her own server says."""
    async with (
        api_as(hub, "bob", tokens["bob"]) as bob,
        api_as(hub, "carol", tokens["carol"]) as carol,
    ):
        assert "physics-only" in [m["name"] for m in (await bob.ok("GET", "models"))["models"]]
        listed = [m["name"] for m in (await carol.ok("GET", "models"))["models"]]
        assert "physics-only" not in listed
        cid = await carol.conversation()
        status, body = await carol.call(
            "POST", f"conversations/{cid}/messages", {"content": "hi", "model": "physics-only"}
        )
        assert status == 403, body
        assert "physics" in body["error"]
        mine = await bob.conversation()
        done = await bob.send(mine, "!tokens=2 allowed", model="physics-only")
        assert done["done"]["message"]["model"] == "physics-only"


async def test_bobs_budget_holds_across_two_of_his_servers(
    hub: Hub, tokens: dict[str, str]
) -> None:
    async with (
        api_as(hub, "bob", tokens["bob"]) as first,
        api_as(hub, "bob", tokens["bob"], "second") as second,
        api_as(hub, "alice", tokens["alice"]) as alice,
    ):
        cid = await first.conversation("spend")
        spent = await first.send(cid, f"a long one !tokens={BUDGET_TOKENS + 50}")
        assert spent["done"]["message"]["status"] == "complete"
        other = await second.conversation("more")
        with pytest.raises(ApiError) as refused:
            await second.send(other, "one more")
        assert refused.value.status == 429
        assert "budget" in json.dumps(refused.value.body).lower()
        usage = await second.ok("GET", "usage")
        assert "bob" in json.dumps(usage)
        # alice's budget is her own.
        mine = await alice.conversation("alice is fine")
        assert (await alice.send(mine, "hi !tokens=3"))["done"]["message"]["status"] == "complete"


# --- the service down (last: it stops the service) ------------------------------------------


async def test_the_relay_says_the_service_is_unavailable_when_it_is_down(
    hub: Hub, tokens: dict[str, str], hub_provider: FakeProvider
) -> None:
    async with api_as(hub, "alice", tokens["alice"]) as alice:
        cid = await alice.conversation("the service stops under me")
        started = asyncio.Event()
        events: list[tuple[str, Any]] = []

        async def alice_streams() -> None:
            async for event, data in alice.events(
                "POST", f"conversations/{cid}/messages", {"content": "long !tokens=50 !gate=5"}
            ):
                events.append((event, data))
                if event == "delta":
                    started.set()

        sender = asyncio.create_task(alice_streams())
        try:
            await asyncio.wait_for(started.wait(), 30)
            # SIGTERM: the service ends live replies whole before it exits; the relay
            # passes that ending through.
            await asyncio.to_thread(hub.stop_service)
            await asyncio.wait_for(sender, 30)
        finally:
            hub_provider.release()
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
        name, done = events[-1]
        assert name == "done"
        assert done["message"]["status"] == "error"
        assert "interrupted" in done["message"]["error"]

        status, body = await alice.call("GET", "conversations")
        assert status == 503
        assert body["error"].startswith(UNAVAILABLE)
        status, body = await alice.call("POST", "conversations", {"title": "x"})
        assert (status, body["error"].startswith(UNAVAILABLE)) == (503, True)
