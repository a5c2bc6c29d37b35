"""An observer panel in a real headless Chromium is pushed over the watch stream.

Issue 16.3: a panel watching a reply someone else asked for follows it over
``GET conversations/{cid}/watch`` instead of polling snapshots, and polls again when
the server answers that route with a 404 (an older r3nb). The shared JupyterLab,
provider and browser of the browser tests serve the module (tests/shared_lab.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browsers import _browser, _guard, _no_cleanup, _no_loop, require_chromium  # noqa: F401
from tests.lab import (
    Guard,
    JupyterLab,
    assistant_ids,
    content_text,
    new_conversation,
    open_notebook,
    run_all_and_wait_for_panel,
    wait_status,
    write_notebook,
)
from tests.provider import FakeProvider, Scenario
from tests.test_browser_panel import start_background_reply, wait_new_assistant

require_chromium()


@pytest.fixture(scope="module")
def lab_provider(shared_provider: FakeProvider) -> FakeProvider:
    return shared_provider


@pytest.fixture(autouse=True)
def _fresh_scenario(lab_provider: FakeProvider) -> Iterator[None]:
    lab_provider.scenario = Scenario()
    yield
    lab_provider.scenario = Scenario()
    lab_provider.release()  # never leave a gated stream hanging for the next test


@pytest.fixture(scope="module")
def lab(shared_lab: JupyterLab) -> Iterator[JupyterLab]:
    yield shared_lab
    shared_lab.shutdown_kernels()


class Requests:
    """The page's snapshot polls and watch streams, by URL."""

    def __init__(self, page: Any) -> None:
        self.urls: list[str] = []
        self.encodings: dict[str, str] = {}  # a watch's URL -> its Content-Encoding
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("response", self._response)

    def _response(self, response: Any) -> None:
        if "/watch" in response.url:
            self.encodings[response.url] = response.headers.get("content-encoding", "")

    def polls(self, cid: str) -> list[str]:
        return [u for u in self.urls if re.search(rf"/conversations/{cid}\?since=", u)]

    def watches(self, cid: str) -> list[str]:
        return [u for u in self.urls if f"/conversations/{cid}/watch" in u]


@pytest.fixture(scope="module")
def page(lab: JupyterLab, browser: Any, guard: Guard) -> Iterator[Any]:
    """One notebook page showing the panel (a page and its kernel take seconds to start;
    each test follows a new conversation in it)."""
    cid = lab.create_conversation("watcher")
    # Idle polls every second, not ten: a poller finds someone else's new reply sooner
    # (a watched panel does not poll while its watch is open).
    show = f"p = get_ipython().run_line_magic('r3nb', '--conversation {cid}')"
    write_notebook(
        lab.root / "watcher.ipynb", ["%load_ext r3nb", f"{show}\np.idle_interval = 1.0\np"]
    )
    page = guard.new_page(browser)
    open_notebook(page, lab.lab_url("watcher.ipynb", "wswatcher"))
    run_all_and_wait_for_panel(page)
    yield page
    page.context.close()


def answer_watch_with_404(page: Any) -> None:
    """The server as it was before the watch route existed (from now on, in this page)."""
    body = json.dumps({"error": "no r3nb API route 'conversations/…/watch'"})
    page.route(
        re.compile(r".*/conversations/[^/?]+/watch.*"),
        lambda route: route.fulfill(status=404, content_type="application/json", body=body),
    )


def _follow_someone_elses_reply(
    lab: JupyterLab, lab_provider: FakeProvider, page: Any, requests: Requests
) -> tuple[str, str]:
    cid = new_conversation(page)
    before = assistant_ids(page)
    prompt = start_background_reply(lab, lab_provider, cid, "Someone else asks !tokens=40 !gate=5")
    mid = wait_new_assistant(page, before)  # not streamed to this panel: watched or polled
    lab_provider.release()
    prompt.join()
    wait_status(page, mid, "complete")
    stored = str(lab.message(cid, mid)["content"])
    last_word = stored.split()[-1].strip(".,;:!?")
    assert last_word in content_text(page, mid)
    return cid, mid


def test_an_observer_panel_is_pushed_over_the_watch_stream_not_polled(
    lab: JupyterLab, lab_provider: FakeProvider, page: Any
) -> None:
    requests = Requests(page)
    cid, _ = _follow_someone_elses_reply(lab, lab_provider, page, requests)
    assert requests.watches(cid), requests.urls
    assert requests.polls(cid) == [], "the reply came by snapshot polls"
    # Gzip-encoded (issue 16.3: a watcher's bytes), and Chromium showed the reply while
    # the provider still held it: each frame decoded as it arrived.
    encodings = {requests.encodings.get(u) for u in requests.watches(cid)}
    assert encodings == {"gzip"}, encodings


def test_an_observer_panel_polls_when_the_watch_route_answers_404(
    lab: JupyterLab, lab_provider: FakeProvider, page: Any
) -> None:
    answer_watch_with_404(page)
    requests = Requests(page)
    cid, _ = _follow_someone_elses_reply(lab, lab_provider, page, requests)
    assert len(requests.watches(cid)) == 1, "one try, then polls for the whole session"
    assert requests.polls(cid), requests.urls
