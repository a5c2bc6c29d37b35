"""Auth on every route, clear 4xx errors for bad input, limits, health, migrations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from r3nb.engine.api import ROUTES
from tests.client import Api, ApiError
from tests.provider import FakeProvider

SAMPLE = {"cid": "0123456789abcdef", "mid": "fedcba9876543210", "aid": "00112233aabbccdd"}


def _paths() -> list[tuple[str, str]]:
    return [(r.method, r.pattern.format(**SAMPLE)) for r in ROUTES]


@pytest.fixture
def r3nb_config() -> dict[str, Any]:
    return {"rate_limit_per_minute": 3, "max_prompt_chars": 1000, "max_concurrent_streams": 2}


@pytest.fixture
def raw(api: Api) -> httpx.AsyncClient:
    """A client with no credentials at all."""
    return httpx.AsyncClient(base_url=api.base, timeout=10)


async def test_every_route_refuses_anonymous_callers(raw: httpx.AsyncClient) -> None:
    """Every route on one server (a server per route cost ~0.25 s each); every route
    that answers otherwise is reported at once."""
    wrong = []
    async with raw:
        for method, path in _paths():
            body = {"content": "x"} if method == "POST" else None
            r = await raw.request(method, path, json=body)
            if r.status_code not in (401, 403) or not r.json().get("error"):
                wrong.append((method, path, r.status_code, r.text[:200]))
    assert wrong == []


async def test_wrong_kernel_secret_is_refused(raw: httpx.AsyncClient) -> None:
    wrong = []
    async with raw:
        for method, path in _paths():
            r = await raw.request(method, path, headers={"X-R3nb-Secret": "not-the-secret"})
            if r.status_code != 403 or "secret" not in r.json().get("error", ""):
                wrong.append((method, path, r.status_code, r.text[:200]))
    assert wrong == []


async def test_kernel_secret_authenticates_as_the_owner(
    raw: httpx.AsyncClient, api: Api, provider: FakeProvider, jp_serverapp: Any
) -> None:
    secret = os.environ["R3NB_SECRET"]
    owner = jp_serverapp.web_app.settings["r3nb_owner"]
    async with raw:
        headers = {"X-R3nb-Secret": secret}
        # POST without XSRF cookie or token: the secret alone must pass.
        r = await raw.post("conversations", json={"title": "from a kernel"}, headers=headers)
        assert r.status_code == 201, r.text
        cid = r.json()["conversation"]["id"]
        r = await raw.post(f"conversations/{cid}/messages", json={"content": "!tokens=3"},
                           headers=headers)  # fmt: skip
        assert r.status_code == 200
        assert "event: done" in r.text
    snap = await api.ok("GET", f"conversations/{cid}")
    user = snap["messages"][0]
    assert (user["author"], user["source"]) == (owner, "kernel")


async def test_browser_post_without_xsrf_is_refused(api: Api, jp_serverapp: Any) -> None:
    # A cookie-less, token-less POST is what a cross-site form would send.
    async with httpx.AsyncClient(base_url=api.base) as client:
        r = await client.post("conversations", json={}, headers={"Cookie": "_xsrf=abc"})
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("POST", "conversations", b"{not json", 400, "not valid JSON"),
        ("POST", "conversations", b"[1, 2]", 400, "JSON object"),
        ("POST", "conversations", b'{"title": 5}', 400, "'title' must be a string"),
        ("POST", "conversations", b"\xff\xfe", 400, "UTF-8"),
        ("POST", "conversations/CID/messages", b"{}", 400, "'content'"),
        ("POST", "conversations/CID/messages", b'{"content": ""}', 400, "'content'"),
        ("POST", "conversations/CID/messages", b'{"content": 3}', 400, "'content'"),
        (
            "POST",
            "conversations/CID/messages",
            b'{"content": "hi", "model": "nope"}',
            400,
            "known models: demo, fake, lean",
        ),
        (
            "POST",
            "conversations/CID/messages",
            b'{"content": "' + b"x" * 1001 + b'"}',
            413,
            "limit is 1,000",
        ),
        (
            "POST",
            "conversations/0123456789abcdef/messages",
            b'{"content": "hi"}',
            404,
            "no conversation",
        ),
        ("GET", "conversations/'; DROP TABLE messages; --", None, 404, "no conversation"),
        ("GET", "conversations/CID?since=abc", None, 400, "'since'"),
        ("GET", "conversations/CID?since=-1", None, 400, "'since'"),
        ("GET", "conversations/CID?from=zzz", None, 400, "'from'"),
        ("GET", "messages/0123456789abcdef/stream", None, 404, "no message"),
        ("GET", "messages/CID/stream?offset=x", None, 400, "'offset'"),
        ("POST", "messages/0123456789abcdef/cancel", None, 404, "no message"),
        ("DELETE", "conversations/0123456789abcdef", None, 404, "no conversation"),
        ("GET", "nothing/here", None, 404, "no r3nb API route"),
        ("DELETE", "health", None, 405, "not allowed"),
    ],
)
async def test_bad_input_gets_a_clear_json_4xx(
    api: Api, method: str, path: str, body: bytes | None, status: int, words: str
) -> None:
    cid = await api.conversation()
    got, data = await api.call(method, path.replace("CID", cid), raw=body)
    assert got == status, data
    assert words in data["error"], data
    # Nothing was half-written: the conversation has no orphan message.
    snap = await api.ok("GET", f"conversations/{cid}")
    assert snap["messages"] == []


async def test_rate_limit_answers_429_with_retry_after(api: Api, engine: Any) -> None:
    cid = await api.conversation()
    for _ in range(3):
        await api.send(cid, "!tokens=2")
    with pytest.raises(ApiError) as caught:
        await api.send(cid, "!tokens=2")
    assert caught.value.status == 429
    assert int(caught.value.headers["Retry-After"]) >= 1
    assert "rate limit" in caught.value.body["error"]
    health = await api.ok("GET", "health")
    assert health["counters"]["rate_limited"] == 1
    assert len((await api.ok("GET", f"conversations/{cid}"))["messages"]) == 6


async def test_concurrent_stream_cap_per_person(api: Api, provider: FakeProvider) -> None:
    import asyncio

    cids = [await api.conversation() for _ in range(3)]  # one reply at a time in each
    first = [asyncio.ensure_future(api.send(cid, "!tokens=5 !gate=1")) for cid in cids[:2]]
    await provider.wait_requests(2)
    with pytest.raises(ApiError) as caught:
        await api.send(cids[2], "!tokens=2")
    assert caught.value.status == 429
    assert "already have 2 replies streaming" in caught.value.body["error"]
    provider.release()
    for task in first:
        assert (await task)["done"]["message"]["status"] == "complete"


async def test_models_and_health_keep_secrets_out(api: Api) -> None:
    from tests.conftest import PROVIDER_KEY

    models = await api.ok("GET", "models")
    assert models["default"] == "fake"
    assert {m["name"] for m in models["models"]} == {"demo", "fake", "lean"}
    health = await api.ok("GET", "health")
    assert health["ok"] is True
    assert health["store_error"] is None
    for key in ("streams_started", "streams_complete", "streams_error", "streams_cancelled",
                "flushes", "rate_limited"):  # fmt: skip
        assert key in health["counters"]
    assert PROVIDER_KEY not in str(models) + str(health)
    assert os.environ["R3NB_SECRET"] not in str(models) + str(health)


async def test_conversations_list_and_delete(api: Api) -> None:
    a = await api.conversation("first")
    b = await api.conversation("second")
    await api.send(a, "a question that becomes the title !tokens=2")
    listed = (await api.ok("GET", "conversations"))["conversations"]
    assert [c["id"] for c in listed][:2] == [a, b]  # most recently active first
    assert listed[0]["message_count"] == 2
    await api.ok("DELETE", f"conversations/{a}")
    status, _data = await api.call("GET", f"conversations/{a}")
    assert status == 404
    assert [c["id"] for c in (await api.ok("GET", "conversations"))["conversations"]] == [b]


async def test_new_conversation_takes_its_title_from_the_first_prompt(api: Api) -> None:
    data = await api.ok("POST", "conversations", {})
    cid = data["conversation"]["id"]
    assert data["conversation"]["title"] == "New conversation"
    await api.send(cid, "Why is the sky blue? !tokens=2")
    snap = await api.ok("GET", f"conversations/{cid}")
    assert snap["conversation"]["title"].startswith("Why is the sky blue?")


def test_store_migrations_are_recorded_and_idempotent(tmp_path: Path) -> None:
    from r3nb.engine.store import MIGRATIONS, Store

    path = tmp_path / "m.duckdb"
    for _ in range(2):
        store = Store(path)
        store.open()
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
        store.close()


def test_memory_store_and_unusable_path_say_what_is_wrong(tmp_path: Path) -> None:
    from r3nb.engine.store import Store
    from r3nb.errors import StoreUnavailable

    memory = Store(":memory:")
    memory.open()
    memory.close()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    bad = Store(blocker / "sub" / "r3nb.duckdb")
    with pytest.raises(StoreUnavailable) as caught:
        bad.open()
    assert str(blocker) in caught.value.message
    bad.close()
