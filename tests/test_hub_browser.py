"""Two people in real browsers on a real JupyterHub, watching one conversation.

alice and bob log in through the hub's login page (DummyAuthenticator) in headless
Chromium, each in a browser context of their own (their own cookies, their own window).
alice shares her server with bob; both open a notebook in alice's server that shows the
panel on ONE conversation (two notebook files, two kernels, two JupyterLab workspaces).
alice sends from her panel; bob's panel, idling, notices the reply, labels it "AI is
responding…", shows the text grow at the snapshot cadence, then the final message, whose
question is authored by alice. Every page runs behind a guard that blocks (and counts)
requests to any host but 127.0.0.1 and counts dialogs.

A hub of its own (not test_hub.py's), stopped process by process at the end.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests import hub as hub_module

# This module's own browser fixtures (see tests/browsers.py for why they are imported).
from tests.browsers import _browser, _guard, _no_cleanup, _no_loop, require_chromium  # noqa: F401
from tests.hub import Hub
from tests.lab import (
    KERNEL_IDLE,
    MESSAGES,
    NOTIFICATION_SETTINGS,
    Guard,
    content_text,
    message,
    run_all_and_wait_for_panel,
    sampled_lengths,
    saw_responding,
    send,
    start_sampler,
    wait_status,
    words,
    write_notebook,
)
from tests.provider import FakeProvider
from tests.servers import provider_settled

require_chromium()
hub_module.require_hub()

TOKENS = 60
DELAY = 0.05


# --- module-wide real parts -------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_provider() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def _prepare_lab(hub: Hub, user: str, server: str = "") -> None:
    """Before the spawn: ``window.jupyterapp`` exposed, no news or update checks, no
    news toast (the server reads its fresh ``JUPYTER_CONFIG_DIR``)."""
    config = hub.jupyter_dir(user, server, "config")
    settings = config / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps(NOTIFICATION_SETTINGS))
    (config / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "LabApp": {
                    "expose_app_in_browser": True,
                    "news_url": None,
                    "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
                }
            }
        )
    )


def _wait_for_provider(hub: Hub, timeout: float = 60) -> None:
    """Until alice's server has imported litellm (a background thread at start-up): while
    that import holds the GIL the server's loop stalls, and a first send waits on it."""
    url, headers = hub.r3nb_api("alice") + "health", hub.auth(hub.token("alice", "health"))
    deadline = time.monotonic() + timeout
    while not provider_settled(httpx.get(url, headers=headers, timeout=10).json()):
        assert time.monotonic() < deadline, "alice's server never loaded its provider"
        time.sleep(0.1)  # polling a state the server does not announce


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, hub_provider: FakeProvider) -> Iterator[Hub]:
    """A hub with alice's default server running and shared with bob."""
    h = Hub(
        tmp_path_factory.mktemp("hubweb"),
        hub_provider.url,
        lab=True,
        users=("alice", "bob"),
        r3nb={"rate_limit_per_minute": 1000, "max_concurrent_streams": 100},
    )
    try:
        t0 = time.monotonic()
        h.start()
        _prepare_lab(h, "alice")
        h.start_servers(("alice", ""))
        h.share("alice", "bob")
        print(f"hub and alice's server up in {time.monotonic() - t0:.1f} s")
        yield h
    finally:
        h.stop()
    assert h.leftover_pids() == [], "processes of the hub run left behind"


@pytest.fixture(scope="module")
def alice_token(hub: Hub) -> str:
    return hub.token("alice")


# --- helpers ----------------------------------------------------------------------------


def _call(hub: Hub, token: str, method: str, url: str, body: Any = None) -> Any:
    r = httpx.request(method, url, json=body, headers=hub.auth(token), timeout=30)
    assert 200 <= r.status_code < 300, (method, url, r.status_code, r.text)
    return r.json()


def _upload_panel_notebook(hub: Hub, token: str, folder: Path, name: str, cid: str) -> None:
    """A notebook in alice's server root (Contents API) whose panel idles at 1 s, so a
    reply started elsewhere is noticed quickly."""
    path = write_notebook(
        folder / name,
        ["%load_ext r3nb", f"panel = %r3nb --conversation {cid}\npanel.idle_interval = 1.0\npanel"],
    )
    _call(
        hub,
        token,
        "PUT",
        hub.server_url("alice") + f"api/contents/{name}",
        {"type": "notebook", "format": "json", "content": json.loads(path.read_text())},
    )


def _login(page: Any, hub: Hub, user: str, next_path: str) -> None:
    """Log in on the hub's login page and land on ``next_path`` (a JupyterLab URL),
    granting access on the hub's OAuth page when the server is someone else's."""
    page.goto(f"{hub.url}/hub/login?next={quote(next_path)}")
    page.locator("#username_input").fill(user)
    page.locator("#password_input").fill(hub.password)
    page.locator("#login_submit").click()
    page.wait_for_url(lambda url: "/oauth2/authorize" in url or "/lab/" in url, timeout=60_000)
    if "/oauth2/authorize" in page.url:  # bob, on alice's shared server
        page.get_by_role("button", name="Authorize").click()
        page.wait_for_url(lambda url: "/lab/" in url, timeout=60_000)
    assert page.url.startswith(hub.url + next_path), page.url


def _hub_user(page: Any) -> str:
    return str(
        page.evaluate(
            "() => JSON.parse(document.getElementById('jupyter-config-data').textContent).hubUser"
        )
    )


def _diagnose(hub: Hub, pages: dict[str, Any]) -> None:
    """What each panel said and the hub's log tail, printed when the test fails."""
    for who, page in pages.items():
        try:
            print(f"--- {who}'s page {page.url}")
            print(page.locator(".r3nb-root").first.inner_text(timeout=2_000))
        except Exception as e:  # best effort: the real error follows
            print(f"(no panel text: {e})")
    print("--- hub log\n" + hub.log(3000))


def _tokens_in(text: str) -> list[int]:
    """Every count written before the word "tokens" ("12 → 60 tokens", "today: 72 tokens")."""
    return [int(n.replace(",", "")) for n in re.findall(r"(\d[\d,]*)\s*tokens", text)]


#: The usage text alice's panel shows once it counts tokens: a panel-wide element
#: (outside the messages) when the panel has one, else the reply's own footer.
USAGE_TEXT = """(mid) => {
  const all = [...document.querySelectorAll('.r3nb-root .r3nb-usage')];
  const wide = all.filter((el) => !el.closest('[data-r3nb-role=message]'));
  const el = wide.length ? wide[0]
    : document.querySelector(`[data-r3nb-role=message][data-message-id="${mid}"] .r3nb-usage`);
  const text = el ? el.textContent : '';
  return /[1-9][\\d,]*\\s*tokens/.test(text) ? text : null;
}"""


# --- the test ---------------------------------------------------------------------------


def test_alice_streams_and_bob_watches_in_his_own_browser(
    hub: Hub,
    hub_provider: FakeProvider,
    browser: Any,
    guard: Guard,
    alice_token: str,
    tmp_path: Path,
) -> None:
    t0 = time.monotonic()
    api = hub.r3nb_api("alice")
    cid = _call(hub, alice_token, "POST", api + "conversations", {"title": "watched together"})[
        "conversation"
    ]["id"]
    _upload_panel_notebook(hub, alice_token, tmp_path, "alice.ipynb", cid)
    _upload_panel_notebook(hub, alice_token, tmp_path, "bob.ipynb", cid)

    page_a = guard.new_page(browser)
    page_b = guard.new_page(browser)
    try:
        _login(page_a, hub, "alice", "/user/alice/lab/workspaces/alice/tree/alice.ipynb")
        _login(page_b, hub, "bob", "/user/alice/lab/workspaces/bob/tree/bob.ipynb")
        # Two people, each logged in as themselves, in alice's server.
        assert (_hub_user(page_a), _hub_user(page_b)) == ("alice", "bob")
        for page in (page_a, page_b):
            page.wait_for_function("() => !!window.jupyterapp", timeout=60_000)
            page.wait_for_function(KERNEL_IDLE, timeout=60_000)
        roots = [run_all_and_wait_for_panel(page) for page in (page_a, page_b)]
        assert [r.get_attribute("data-transport") for r in roots] == ["direct", "direct"]
        t_ready = time.monotonic()
        _wait_for_provider(hub)  # litellm's import went on while the pages loaded

        start_sampler(page_a)
        start_sampler(page_b)
        n = len(hub_provider.requests)
        mid = send(page_a, f"Tell bob a story !tokens={TOKENS} !delay={DELAY}")

        # bob's panel (another kernel, another person) notices the reply while it is
        # being written and labels it as someone else's.
        responding = message(page_b, mid).locator(".r3nb-responding")
        responding.wait_for(state="visible", timeout=15_000)
        assert responding.text_content() == "AI is responding…"
        assert message(page_a, mid).locator(".r3nb-responding").count() == 0

        wait_status(page_a, mid, "complete")
        wait_status(page_b, mid, "complete")
        t_done = time.monotonic()
        reply = hub_provider.replies[n]
        assert words(content_text(page_a, mid)) == words(reply)
        assert words(content_text(page_b, mid)) == words(reply)

        # bob saw the text grow in a few snapshot steps (0.3 s apart over a ~3 s reply).
        final_b = len(content_text(page_b, mid))
        partial_b = sorted({x for x in sampled_lengths(page_b, mid) if 0 < x < final_b})
        print(f"bob's partial lengths: {partial_b}")
        assert 2 <= len(partial_b) <= TOKENS // 2, partial_b
        assert saw_responding(page_b, mid)

        # The question is alice's, on bob's screen and in the store.
        snapshot = _call(hub, alice_token, "GET", api + f"conversations/{cid}")
        users = [m for m in snapshot["messages"] if m["role"] == "user"]
        assert len(users) == 1, users
        question = users[0]
        assert (question["author"], question["source"]) == ("alice", "user")
        assert question["content"].startswith("Tell bob a story")
        shown = page_b.locator(f"{MESSAGES}[data-message-id='{question['id']}']")
        assert shown.get_attribute("data-role") == "user"
        assert shown.get_attribute("data-author") == "alice"
        assert page_b.locator(f"{MESSAGES}[data-role=user]").count() == 1
        stored = next(m for m in snapshot["messages"] if m["id"] == mid)
        assert (stored["status"], stored["content"]) == ("complete", reply)

        # Usage, when the panel shows it: a panel-wide "today: N tokens" element if there
        # is one, else the reply's own footer; either way non-zero after alice's reply.
        if page_a.locator(".r3nb-usage").count():
            handle = page_a.wait_for_function(USAGE_TEXT, arg=mid, timeout=15_000)
            text = str(handle.json_value())
            print(f"alice's usage: {text!r}")
            assert any(count > 0 for count in _tokens_in(text)), text

        assert guard.blocked == []
        assert guard.dialogs == []
        print(
            f"pages ready in {t_ready - t0:.1f} s, reply seen complete on both"
            f" {t_done - t_ready:.1f} s later"
        )
    except BaseException:
        _diagnose(hub, {"alice": page_a, "bob": page_b})
        raise
    finally:
        page_a.context.close()
        page_b.context.close()
