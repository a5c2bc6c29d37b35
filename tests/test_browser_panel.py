"""The panel's own controls in a real headless Chromium against a real JupyterLab.

Issues 12.7 and 13: the conversation picker pages and searches instead of stopping at a
fixed count; the message list follows a reply only while the reader is at the bottom;
typing in the input is plain text editing inside JupyterLab and Notebook 7 (no notebook
shortcut fires from it); "New" puts the caret in the input; a "Live stream lost" banner
goes away once the reply has been recovered by polling.

One JupyterLab, one local provider and one browser serve the module (see
tests/test_browser.py for the same pattern and tests/lab.py for the helpers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

# This module's own browser fixtures (see tests/browsers.py for why they are imported).
from tests.browsers import _browser, _guard, _no_cleanup, _no_loop, require_chromium  # noqa: F401
from tests.lab import (
    Guard,
    JupyterLab,
    open_notebook,
    panel_notebook,
    run_all_and_wait_for_panel,
    send,
    wait_status,
)
from tests.provider import FakeProvider, Scenario

require_chromium()

SNAPSHOT_INTERVAL = 0.3
ROOT = ".r3nb-root"
PICKER = f"{ROOT} .r3nb-conversations"
SEARCH = f"{ROOT} .r3nb-search"
INPUT = f"{ROOT} .r3nb-input"
LIST = f"{ROOT} .r3nb-list"
JUMP = f"{ROOT} .r3nb-jump"

#: How far the list is from its bottom, in CSS pixels.
DISTANCE_FROM_BOTTOM = """() => {
  const l = document.querySelector('.r3nb-root .r3nb-list');
  return l.scrollHeight - l.scrollTop - l.clientHeight;
}"""

#: What a notebook shortcut would change: the cells, the active cell, the mode.
NOTEBOOK_STATE = """() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  return [nb.model.cells.length, nb.activeCellIndex, nb.mode,
          nb.widgets.map((c) => c.model.sharedModel.getSource()).join('\\u0000')];
}"""


# --- module-wide real parts -------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_provider() -> Iterator[FakeProvider]:
    with FakeProvider() as p:
        yield p


@pytest.fixture(autouse=True)
def _fresh_scenario(lab_provider: FakeProvider) -> Iterator[None]:
    lab_provider.scenario = Scenario()
    yield
    lab_provider.scenario = Scenario()
    lab_provider.release()  # never leave a gated stream hanging for the next test


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, lab_provider: FakeProvider
) -> Iterator[JupyterLab]:
    workdir = tmp_path_factory.mktemp("lab")
    server = JupyterLab(
        workdir,
        {
            "db_path": str(workdir / "r3nb.duckdb"),
            "models": {
                "fake": {"model": "openai/fake", "api_base": lab_provider.url, "api_key": "sk-x"}
            },
            "default_model": "fake",
            "snapshot_interval": SNAPSHOT_INTERVAL,
            "rate_limit_per_minute": 0,
        },
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(lab: JupyterLab, browser: Any, guard: Guard) -> Iterator[Any]:
    """One JupyterLab notebook showing the panel, shared by the module's tests."""
    cid = lab.create_conversation("panel tests")
    panel_notebook(lab.root / "panel.ipynb", cid)
    page = guard.new_page(browser)
    open_notebook(page, lab.lab_url("panel.ipynb", "wspanel"))
    run_all_and_wait_for_panel(page)
    yield page
    page.context.close()


def new_conversation(page: Any) -> str:
    """Click New and return the id of the conversation it opened."""
    old = page.locator(PICKER).input_value()
    page.locator(f"{ROOT} .r3nb-new").click()
    handle = page.wait_for_function(
        "(old) => { const s = document.querySelector('.r3nb-root .r3nb-conversations');"
        " return s.value && s.value !== old ? s.value : null; }",
        arg=old,
    )
    return str(handle.json_value())


def picker_options(page: Any) -> list[tuple[str, str]]:
    return [
        (str(value), str(text))
        for value, text in page.eval_on_selector_all(
            f"{PICKER} option", "els => els.map((o) => [o.value, o.textContent])"
        )
    ]


# --- typing in the input ------------------------------------------------------------------


def assert_input_edits_like_a_text_box(page: Any) -> None:
    """Shift+Enter, undo, select-all and arrows act on the text; the notebook is untouched."""
    box = page.locator(INPUT)
    box.fill("")
    box.click()
    before = page.evaluate(NOTEBOOK_STATE)
    page.keyboard.type("first")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second")
    assert box.input_value() == "first\nsecond"
    page.keyboard.press("Control+z")
    undone = box.input_value()
    assert undone != "first\nsecond", "Ctrl+Z undid nothing"
    assert "first\nsecond".startswith(undone), undone
    page.keyboard.press("Control+Shift+z")
    assert box.input_value() == "first\nsecond"
    page.keyboard.press("Control+a")
    selection = page.evaluate(
        "(sel) => { const b = document.querySelector(sel);"
        " return [b.selectionStart, b.selectionEnd]; }",
        INPUT,
    )
    assert selection == [0, len("first\nsecond")]
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("End")
    page.keyboard.type("!")
    assert box.input_value() == "first\nsecond!"
    # Keys that are notebook shortcuts in command mode type text here.
    page.keyboard.type(" abdxyz")
    assert box.input_value() == "first\nsecond! abdxyz"
    assert page.evaluate("(sel) => document.activeElement === document.querySelector(sel)", INPUT)
    assert page.evaluate(NOTEBOOK_STATE) == before
    box.fill("")


def test_input_edits_like_a_text_box_in_jupyterlab(page: Any) -> None:
    assert_input_edits_like_a_text_box(page)


def test_input_edits_like_a_text_box_in_notebook7(
    lab: JupyterLab, browser: Any, guard: Guard
) -> None:
    cid = lab.create_conversation("notebook 7 keys")
    panel_notebook(lab.root / "nb7.ipynb", cid)
    page7 = guard.new_page(browser)
    try:
        open_notebook(page7, lab.notebook7_url("nb7.ipynb"))
        run_all_and_wait_for_panel(page7)
        assert_input_edits_like_a_text_box(page7)
    finally:
        page7.context.close()


# --- following the reply ------------------------------------------------------------------


def at_bottom(page: Any) -> bool:
    return bool(page.evaluate(DISTANCE_FROM_BOTTOM) <= 2)


def test_reply_is_followed_at_the_bottom_and_a_reader_who_scrolled_up_stays(
    lab_provider: FakeProvider, page: Any
) -> None:
    new_conversation(page)
    # Fill the list past its height.
    for _ in range(2):
        wait_status(page, send(page, "Fill the list !tokens=240"), "complete")
    page.wait_for_function(
        "() => { const l = document.querySelector('.r3nb-root .r3nb-list');"
        " return l.scrollHeight > l.clientHeight * 1.5; }"
    )
    assert at_bottom(page)

    # At the bottom, a new reply is followed to its end (issue 13: it was written below
    # the visible area, every time).
    for _ in range(2):
        mid = send(page, "Follow me !tokens=120 !delay=0.005")
        wait_status(page, mid, "complete")
        page.wait_for_function(f"() => ({DISTANCE_FROM_BOTTOM})() <= 2", timeout=5_000)
        assert page.locator(JUMP).is_hidden()

    # A reader who scrolls up while a reply streams is never pulled back down ...
    n = len(lab_provider.requests)
    mid = send(page, "Long one !tokens=200 !delay=0.005 !gate=20")
    lab_provider.wait_sent(n, 20)
    page.locator(LIST).hover()
    page.mouse.wheel(0, -600)
    page.wait_for_function(f"() => ({DISTANCE_FROM_BOTTOM})() > 100")
    page.locator(JUMP).wait_for(state="visible")
    top = page.evaluate("(sel) => document.querySelector(sel).scrollTop", LIST)
    lab_provider.release()
    wait_status(page, mid, "complete")
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert page.evaluate("(sel) => document.querySelector(sel).scrollTop", LIST) == top
    # ... and "jump to latest" takes them to the end and resumes following.
    page.locator(JUMP).click()
    page.wait_for_function(f"() => ({DISTANCE_FROM_BOTTOM})() <= 2", timeout=5_000)
    page.locator(JUMP).wait_for(state="hidden")
    mid = send(page, "Follow me again !tokens=120 !delay=0.005")
    wait_status(page, mid, "complete")
    page.wait_for_function(f"() => ({DISTANCE_FROM_BOTTOM})() <= 2", timeout=5_000)


# --- a lost live stream -------------------------------------------------------------------

#: Makes the next reply's live stream (POST .../messages) break after its first chunk, as
#: a dropped connection would, while the server goes on writing the reply.
BREAK_NEXT_STREAM = """() => {
  const realFetch = window.fetch;
  window.fetch = async (input, init) => {
    const response = await realFetch(input, init);
    const url = String(input instanceof Request ? input.url : input);
    const post = init && init.method === 'POST';
    if (!post || !/\\/conversations\\/[^/]+\\/messages$/.test(url)) return response;
    window.fetch = realFetch;
    const reader = response.body.getReader();
    let chunks = 0;
    const body = new ReadableStream({
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done || ++chunks > 1) {
          reader.cancel();
          controller.error(new TypeError('network error (test)'));
        } else controller.enqueue(value);
      },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
}"""


def test_new_focuses_the_input_and_a_lost_stream_banner_clears_once_recovered(
    lab_provider: FakeProvider, page: Any
) -> None:
    new_conversation(page)
    # "New" leaves the caret in the input, ready for typing.
    page.wait_for_function(
        "(sel) => document.activeElement === document.querySelector(sel)", arg=INPUT, timeout=5_000
    )
    page.evaluate(BREAK_NEXT_STREAM)
    mid = send(page, "Keep going !tokens=60 !delay=0.02")
    status = page.locator(f"{ROOT} .r3nb-status")
    status.wait_for(state="visible")
    assert "Live stream lost" in (status.text_content() or "")
    wait_status(page, mid, "complete")  # recovered by snapshot polls
    status.wait_for(state="hidden", timeout=5_000)


# --- the conversation picker --------------------------------------------------------------


def test_picker_pages_searches_and_keeps_the_open_conversation(lab: JupyterLab, page: Any) -> None:
    needle = lab.create_conversation("needle in an old conversation")
    with httpx.Client(headers=lab.headers, timeout=30) as client:
        fillers = [
            client.post(lab.api + "conversations", json={"title": f"filler {i:03d}"}).json()[
                "conversation"
            ]["id"]
            for i in range(130)
        ]
    picker = page.locator(PICKER)
    search = page.locator(SEARCH)

    # Search (debounced, by title or message text) finds the old one; choosing it opens it.
    search.fill("NEEDLE")
    page.wait_for_function(
        "([sel, id]) => [...document.querySelector(sel).options].some((o) => o.value === id)",
        arg=[PICKER, needle],
    )
    picker.select_option(needle)
    page.wait_for_function(
        "([sel, id]) => document.querySelector(sel).value === id", arg=[PICKER, needle]
    )

    # Escape clears the search: the first page of the whole list (the newest 100), which
    # does not hold the open conversation, yet it stays shown and selected.
    search.press("Escape")
    page.wait_for_function(
        "([sel, id]) => [...document.querySelector(sel).options].some((o) => o.value === id)",
        arg=[PICKER, fillers[-1]],
    )
    options = picker_options(page)
    values = [v for v, _ in options]
    assert options[0] == (needle, "needle in an old conversation")
    assert fillers[0] not in values, "only the first page is loaded"
    assert options[-1][1] == "Load more…"
    assert picker.input_value() == needle

    # "Load more…" from the keyboard: on a closed native select, End picks the last
    # option (firing "change"), as the arrow keys do.
    picker.focus()
    page.keyboard.press("End")
    page.wait_for_function(
        "([sel, id]) => [...document.querySelector(sel).options].some((o) => o.value === id)"
        " && !document.querySelector(sel + ' .r3nb-more')",
        arg=[PICKER, fillers[0]],
    )
    assert picker.input_value() == needle, "loading more keeps the open conversation"
    values = [v for v, _ in picker_options(page)]
    assert values.count(needle) == 1
    assert set(fillers) <= set(values)
