"""Every route × every kind of caller → exactly the expected status, never a 5xx."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from r3nb.engine.api import ROUTES

UNKNOWN = "0123456789abcdef"
#: What an authenticated caller gets on each route with an unknown id / a fresh server.
AUTHENTICATED = {
    ("GET", "health"): 200,
    ("GET", "models"): 200,
    ("POST", "models/reload"): 409,  # the suite's server has no models file
    ("GET", "usage"): 200,
    ("GET", "usage/report"): 200,  # the caller is the owner: an admin
    ("GET", "audit"): 200,
    ("GET", "conversations"): 200,
    ("POST", "conversations"): 201,
    ("GET", "conversations/{cid}"): 404,
    ("GET", "conversations/{cid}/watch"): 404,
    ("PATCH", "conversations/{cid}"): 404,
    ("DELETE", "conversations/{cid}"): 404,
    ("POST", "conversations/{cid}/messages"): 404,
    ("POST", "conversations/{cid}/messages/{mid}/edit"): 404,
    ("POST", "conversations/{cid}/messages/{mid}/regenerate"): 404,
    ("PATCH", "conversations/{cid}/messages/{mid}"): 400,  # the body names no context
    ("DELETE", "conversations/{cid}/messages/{mid}"): 404,
    ("POST", "conversations/{cid}/head"): 400,  # the body names no message_id
    ("POST", "conversations/{cid}/clear"): 404,
    ("GET", "conversations/{cid}/attachments/{aid}"): 404,
    ("GET", "messages/{mid}/stream"): 404,
    ("POST", "messages/{mid}/cancel"): 404,
}
CALLERS = ["anonymous", "wrong token", "valid token", "kernel secret", "wrong secret",
           "cookie", "cookie without XSRF"]  # fmt: skip


def test_the_matrix_covers_every_route() -> None:
    assert {(r.method, r.pattern) for r in ROUTES} == set(AUTHENTICATED)


async def _login_cookies(base: str, token: str) -> httpx.Cookies:
    """Log in the way a browser does: the login form, with its _xsrf, and the token.
    (Async: the server under test runs on this very event loop.)"""
    async with httpx.AsyncClient(base_url=base) as browser:
        await browser.get("login")
        xsrf = browser.cookies.get("_xsrf")
        r = await browser.post("login", data={"_xsrf": xsrf, "password": token})
        assert r.status_code in (200, 302), r.text[:300]
        return browser.cookies


def _expected(caller: str, method: str, pattern: str) -> int:
    if caller in ("anonymous", "wrong token", "wrong secret"):
        return 403
    if caller == "cookie without XSRF" and method != "GET":
        return 403
    return AUTHENTICATED[(method, pattern)]


@pytest.mark.parametrize("caller", CALLERS)
async def test_auth_matrix(
    caller: str,
    jp_fetch: Any,  # serves the app on jp_http_port
    jp_http_port: int,
    jp_base_url: str,
    jp_serverapp: Any,
) -> None:
    """Every route for one kind of caller, on one server (one server per route and
    caller, 154 of them, took ~40 s of the suite); every mismatch is reported at once."""
    headers: dict[str, str] = {}
    jar = None
    if caller == "wrong token":
        headers["Authorization"] = "token not-the-token"
    elif caller == "valid token":
        headers["Authorization"] = f"token {jp_serverapp.identity_provider.token}"
    elif caller == "kernel secret":
        headers["X-R3nb-Secret"] = os.environ["R3NB_SECRET"]
    elif caller == "wrong secret":
        headers["X-R3nb-Secret"] = "not-the-secret"
    elif caller.startswith("cookie"):
        root = f"http://127.0.0.1:{jp_http_port}{jp_base_url}"
        cookies = await _login_cookies(root, jp_serverapp.identity_provider.token)
        jar = cookies
        if caller == "cookie":
            headers["X-XSRFToken"] = cookies["_xsrf"]
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}r3nb/api/"
    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=base, cookies=jar, timeout=30) as client:
        for route in ROUTES:
            path = route.pattern.format(cid=UNKNOWN, mid=UNKNOWN, aid=UNKNOWN)
            body = {"POST": {"content": "hi"}, "PATCH": {"title": "renamed"}}.get(route.method)
            r = await client.request(route.method, path, json=body, headers=headers)
            expected = _expected(caller, route.method, route.pattern)
            json_body_ok = r.headers.get("content-type", "").startswith("application/json") and (
                "error" in r.json() or r.status_code < 400
            )
            if r.status_code != expected or not json_body_ok:
                wrong.append(
                    f"{route.method} {route.pattern}: {r.status_code} (expected {expected}), "
                    f"{r.headers.get('content-type')}: {r.text[:200]}"
                )
    assert wrong == [], "\n".join(wrong)
