"""The panel in a real headless Chromium against a real JupyterLab (and Notebook 7).

One JupyterLab process, one local provider and one browser serve the whole module; the
notebooks show the panel with ``%load_ext r3nb`` / ``%r3nb --conversation ID`` and run
their cells as a person would. Every page runs behind a route that blocks (and counts)
any request not to 127.0.0.1, and a dialog watcher that counts alerts.

Needs Debian's chromium at /usr/bin/chromium (``apt-get install chromium
fonts-dejavu-core``); the module is skipped when it is missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# This module's own browser fixtures (see tests/browsers.py for why they are imported).
from tests.browsers import _browser, _guard, _no_cleanup, _no_loop, require_chromium  # noqa: F401
from tests.hostile_corpus import HOSTILE, MATHML_ELEMENTS
from tests.lab import (
    ASSISTANT,
    KERNEL_IDLE,
    NEW_ASSISTANT,
    Guard,
    JupyterLab,
    assistant_ids,
    content_text,
    kernel_id,
    message,
    open_notebook,
    panel_notebook,
    run_all_and_wait_for_panel,
    sampled_lengths,
    save_notebook,
    saw_responding,
    send,
    start_sampler,
    wait_status,
    words,
    write_notebook,
)
from tests.provider import FakeProvider, Scenario

require_chromium()

REPO = Path(__file__).resolve().parent.parent
#: Where the README's screenshots live; test runs write there only when asked
#: (R3NB_SCREENSHOTS=1), so that running the suite leaves the checkout clean.
README_SCREENSHOTS = REPO / "docs" / "screenshots"


# --- module-wide real parts -------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_scenario(lab_provider: FakeProvider) -> Iterator[None]:
    lab_provider.scenario = Scenario()
    yield
    lab_provider.scenario = Scenario()
    lab_provider.release()  # never leave a gated stream hanging for the next test


@pytest.fixture(scope="module")
def conversation(lab: JupyterLab) -> str:
    return lab.create_conversation("browser tests")


@pytest.fixture(scope="module")
def page_a(lab: JupyterLab, browser: Any, guard: Guard, conversation: str) -> Iterator[Any]:
    """Notebook A: the sender. Saved once its panel shows, so a reload restores the
    widget output (the live kernel still holds the widget's model)."""
    panel_notebook(lab.root / "a.ipynb", conversation)
    page = guard.new_page(browser)
    open_notebook(page, lab.lab_url("a.ipynb", "wsa"))
    run_all_and_wait_for_panel(page)
    save_notebook(page)
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def page_b(lab: JupyterLab, browser: Any, guard: Guard, conversation: str) -> Iterator[Any]:
    """Notebook B: another notebook (its own kernel) on the same conversation. Its idle
    poll is shortened from 10 s to 1 s so it notices A's new reply quickly; while a reply
    streams it polls at the server's snapshot_interval, as every observer does."""
    write_notebook(
        lab.root / "b.ipynb",
        [
            "%load_ext r3nb",
            f"panel = %r3nb --conversation {conversation}\npanel.idle_interval = 1.0\npanel",
        ],
    )
    page = guard.new_page(browser)
    open_notebook(page, lab.lab_url("b.ipynb", "wsb"))
    run_all_and_wait_for_panel(page)
    yield page
    page.context.close()


def request_index(provider: FakeProvider, before: int) -> int:
    """Wait until the provider got request number `before` (0-based) and return it."""
    provider.wait_for(lambda: len(provider.requests) > before, 30, "the provider request")
    return before


def non_trivial(lengths: list[int], final: int) -> list[int]:
    """The partial lengths: neither empty nor final."""
    return sorted({n for n in lengths if 0 < n < final})


# --- tests ------------------------------------------------------------------------------


def test_sender_streams_live_and_observer_sees_snapshots(
    lab: JupyterLab, lab_provider: FakeProvider, page_a: Any, page_b: Any, conversation: str
) -> None:
    start_sampler(page_a)
    start_sampler(page_b)
    polls_before = int(page_b.locator(".r3nb-root").get_attribute("data-polls") or 0)
    n = len(lab_provider.requests)
    tokens = 80
    mid = send(page_a, f"Tell me a story !tokens={tokens} !delay=0.05")
    request_index(lab_provider, n)

    # B (another kernel) labels the reply as someone else's, while it is being written.
    responding = message(page_b, mid).locator(".r3nb-responding")
    responding.wait_for(state="visible", timeout=15_000)
    assert responding.text_content() == "AI is responding…"
    # A follows its own stream live: no "responding" label there.
    assert message(page_a, mid).locator(".r3nb-responding").count() == 0

    wait_status(page_a, mid, "complete")
    wait_status(page_b, mid, "complete")
    # The sender's header shows its usage (GET usage), refreshed when its reply ended.
    usage = page_a.wait_for_function(
        """() => {
          const el = document.querySelector('.r3nb-header .r3nb-usage');
          const shown = el && !el.hidden && /[1-9][\\d,]* tokens/.test(el.textContent);
          return shown ? el.textContent : null;
        }""",
        timeout=10_000,
    ).json_value()
    assert "tokens" in usage, usage
    reply = lab_provider.replies[n]
    assert words(content_text(page_a, mid)) == words(reply)
    assert words(content_text(page_b, mid)) == words(reply)
    assert lab.message(conversation, mid)["content"] == reply

    final_a = len(content_text(page_a, mid))
    final_b = len(content_text(page_b, mid))
    partial_a = non_trivial(sampled_lengths(page_a, mid), final_a)
    partial_b = non_trivial(sampled_lengths(page_b, mid), final_b)
    print(f"distinct partial lengths: sender {len(partial_a)}, observer {len(partial_b)}")
    # The sender sees the text grow token by token (at most once per animation frame) ...
    assert len(partial_a) >= tokens // 4, partial_a
    # ... an observer at the snapshot cadence: ~4 s of stream / 0.5 s, far fewer steps.
    assert 2 <= len(partial_b) <= tokens // 4, partial_b
    assert len(partial_b) * 3 < len(partial_a), (partial_a, partial_b)
    assert saw_responding(page_b, mid)
    # B polled at the snapshot cadence while the reply streamed (~4 s / 0.5 s), not faster.
    polls = int(page_b.locator(".r3nb-root").get_attribute("data-polls") or 0) - polls_before
    assert 2 <= polls <= 16, polls


def test_reload_mid_stream_resumes_without_loss_or_doubling(
    lab: JupyterLab, lab_provider: FakeProvider, page_a: Any, conversation: str
) -> None:
    n = len(lab_provider.requests)
    mid = send(page_a, "A reply you reload in the middle of !tokens=40 !delay=0.01 !gate=15")
    request_index(lab_provider, n)
    lab_provider.wait_sent(n, 15, timeout=30)
    page_a.wait_for_function(
        "(sel) => (document.querySelector(sel)?.textContent || '').length > 0",
        arg=f"[data-message-id='{mid}'] .r3nb-content",
    )
    # The server has flushed the partial text (snapshot cadence) before the page goes away.
    deadline = time.monotonic() + 10
    while not lab.message(conversation, mid)["content"]:
        assert time.monotonic() < deadline, "partial text never reached the DB"
        time.sleep(0.1)  # polling the HTTP API from the test: nothing to wait on

    # Reload: the saved notebook brings the widget output back, the widget manager
    # restores the model from the live kernel, and the panel follows its kernel's stream.
    page_a.reload()
    page_a.wait_for_function(KERNEL_IDLE, timeout=60_000)
    page_a.locator(".r3nb-root[data-r3nb-ready='1']").wait_for(state="visible", timeout=60_000)
    restored = message(page_a, mid)
    restored.wait_for(state="visible")
    assert restored.get_attribute("data-status") == "streaming"
    assert restored.locator(".r3nb-streaming").count() == 1  # live again, not "responding"
    assert lab_provider.outcomes[n] is None  # still gated: the reply is really mid-stream
    start_sampler(page_a)

    lab_provider.release()
    wait_status(page_a, mid, "complete")
    reply = lab_provider.replies[n]
    assert words(content_text(page_a, mid)) == words(reply)
    assert lab.message(conversation, mid)["content"] == reply
    assert lab_provider.outcomes[n] == "done"
    # It was followed live after the reload (several renders), not just loaded at the end.
    assert len(non_trivial(sampled_lengths(page_a, mid), len(content_text(page_a, mid)))) >= 1


def test_stop_while_the_kernel_sleeps(
    lab: JupyterLab, lab_provider: FakeProvider, page_a: Any, conversation: str
) -> None:
    n = len(lab_provider.requests)
    mid = send(page_a, "A long answer, please !tokens=600 !delay=0.05")
    request_index(lab_provider, n)
    lab_provider.wait_sent(n, 5)
    kid = kernel_id(page_a)
    page_a.evaluate(
        """() => {
      const nb = window.jupyterapp.shell.currentWidget.content;
      nb.model.sharedModel.insertCell(nb.model.cells.length,
        {cell_type: 'code', source: 'import time\\ntime.sleep(60)'});
      nb.activeCellIndex = nb.model.cells.length - 1;
      void window.jupyterapp.commands.execute('notebook:run-cell');
    }"""
    )
    busy = (
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
        " === 'busy'"
    )
    try:
        page_a.wait_for_function(busy)
        started = time.monotonic()
        page_a.locator(".r3nb-root .r3nb-stop").click()
        wait_status(page_a, mid, "cancelled", timeout=5_000)
        elapsed = time.monotonic() - started
        print(f"stop → cancelled in {elapsed:.2f} s while the kernel sleeps")
        assert elapsed < 3, elapsed
        assert page_a.evaluate(busy), "the kernel should still be sleeping"
        shown = content_text(page_a, mid)
        assert shown.strip(), "the partial text must stay on screen"
        assert message(page_a, mid).locator(".r3nb-cancelled").count() == 1
        # The Send button is back while the kernel still sleeps.
        page_a.locator(".r3nb-root .r3nb-send").wait_for(state="visible", timeout=5_000)

        stored = lab.message(conversation, mid)
        assert stored["status"] == "cancelled"
        assert stored["content"], "partial text kept in the DB"
        assert lab_provider.replies[n].startswith(stored["content"])
        assert words(shown) == words(stored["content"])
        assert len(stored["content"]) < len(lab_provider.replies[n])
    finally:
        lab.interrupt(kid)
        page_a.wait_for_function(KERNEL_IDLE, timeout=30_000)
        page_a.evaluate(
            """() => {
          const nb = window.jupyterapp.shell.currentWidget.content;
          nb.model.sharedModel.deleteCell(nb.model.cells.length - 1);
        }"""
        )
        save_notebook(page_a)


def test_provider_error_shows_reason_and_retry_works(
    lab: JupyterLab, lab_provider: FakeProvider, page_a: Any, conversation: str
) -> None:
    prompt = "Why is the sky blue?"
    lab_provider.scenario.fault = "500"  # only the first attempt fails
    n = len(lab_provider.requests)
    mid = send(page_a, prompt)
    wait_status(page_a, mid, "error")
    failed = message(page_a, mid)
    error = failed.locator(".r3nb-error")
    error.wait_for(state="visible")
    reason = error.text_content() or ""
    print(f"error shown: {reason!r}")
    assert "500" in reason or "fake upstream failure" in reason, reason
    assert lab.message(conversation, mid)["status"] == "error"

    lab_provider.scenario.fault = None
    before = assistant_ids(page_a)
    failed.locator(".r3nb-retry").click()
    handle = page_a.wait_for_function(NEW_ASSISTANT, arg=before)
    retried = str(handle.json_value())
    wait_status(page_a, retried, "complete")
    assert len(lab_provider.requests) == n + 2
    sent = lab_provider.requests[n + 1]["messages"]
    assert [m for m in sent if m["role"] == "user"][-1]["content"] == prompt
    reply = lab_provider.replies[n + 1]
    assert words(content_text(page_a, retried)) == words(reply)
    assert lab.message(conversation, retried)["content"] == reply


def test_hostile_replies_run_nothing_and_load_nothing(
    lab: JupyterLab, lab_provider: FakeProvider, page_a: Any, guard: Guard
) -> None:
    # A fresh conversation from the panel's own New button (a draft: its first Send
    # below saves it).
    page_a.locator(".r3nb-root .r3nb-new").click()
    page_a.wait_for_function(
        "() => document.querySelector('.r3nb-root .r3nb-conversations').value === ''"
    )
    assert page_a.evaluate("() => window.__pwned") == 0
    blocked_before = len(guard.blocked)
    dialogs_before = len(guard.dialogs)

    payloads = [payload for _, payload in HOSTILE]
    batches = [payloads[i::3] for i in range(3)]
    mids = []
    for i, batch in enumerate(batches):
        # Streamed in word-sized chunks: half-received tags go through the renderer too.
        lab_provider.scenario.text = "Here you go:\n\n" + "\n\n".join(batch) + "\n\nEnd.\n"
        lab_provider.scenario.delay = 0.002
        n = len(lab_provider.requests)
        mid = send(page_a, f"hostile batch {i}")
        wait_status(page_a, mid, "complete")
        assert lab_provider.replies[n] == lab_provider.scenario.text
        mids.append(mid)

    # Give any handler that slipped through (onerror, onload, refresh) a chance to fire.
    page_a.evaluate(
        "() => new Promise((r) =>"
        " requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 500))))"
    )
    bad = page_a.evaluate(
        """([ids, mathml]) => {
      const found = [];
      const dangerous = 'script,style,iframe,frame,object,embed,img,svg,form,input,textarea,' +
        'select,meta,base,link,video,audio,source,template,noscript,details,body';
      for (const id of ids) {
        const content = document.querySelector(`[data-message-id="${id}"] .r3nb-content`);
        if (!content || !content.textContent.includes('End.')) found.push(`${id}: not rendered`);
        for (const el of content.querySelectorAll(dangerous)) found.push(`element ${el.outerHTML}`);
        // MathML only as r3nb typesets it (the reply's own <math> is text): allow-listed
        // elements in the MathML namespace, in a <math> inside no other, no href/class/id.
        for (const el of content.querySelectorAll('math, math *')) {
          if (el.namespaceURI !== 'http://www.w3.org/1998/Math/MathML' ||
              !mathml.includes(el.localName) ||
              (el.localName === 'math' && el.parentElement.closest('math')))
            found.push(`math element ${el.outerHTML.slice(0, 120)}`);
          for (const attr of el.attributes)
            if (['href', 'class', 'actiontype'].includes(attr.name) ||
                /url[(]|script:/i.test(attr.value))
              found.push(`math attribute ${attr.name} on ${el.localName}`);
        }
        for (const el of content.querySelectorAll('button')) {
          // r3nb's own: load an image, Copy, and the cell actions (Code → cell).
          if (!el.matches('.r3nb-img-load, .r3nb-copy, .r3nb-cell-actions > .r3nb-cell-action'))
            found.push(`button ${el.outerHTML}`);
        }
        for (const el of content.querySelectorAll('*')) {
          for (const attr of el.attributes) {
            const name = attr.name.toLowerCase();
            if (name.startsWith('on') || name === 'style' || name === 'srcdoc' || name === 'id' ||
                name === 'name' || name === 'formaction' || name.includes(':'))
              found.push(`attribute ${name} on ${el.tagName}`);
          }
        }
        for (const a of content.querySelectorAll('a[href]')) {
          const scheme = (/^([a-z][a-z0-9+.-]*):/i.exec(a.getAttribute('href')) || [])[1];
          if (scheme && !['http', 'https', 'mailto'].includes(scheme.toLowerCase()))
            found.push(`href ${a.getAttribute('href')}`);
          if (a.getAttribute('rel') !== 'noopener noreferrer') found.push(`rel ${a.outerHTML}`);
        }
      }
      if (document.querySelector('meta[http-equiv], base[href]:not([href="/"])'))
        found.push('meta/base reached the document');
      return found;
    }""",
        [mids, sorted(MATHML_ELEMENTS)],
    )
    assert bad == []
    # Outside images became buttons naming the host, never loaded on their own.
    buttons = page_a.locator(".r3nb-root .r3nb-img-load")
    assert buttons.count() >= 3
    assert "evil.example" in (buttons.first.text_content() or "")
    # Links with a removed (javascript:/data:/vbscript:) target do nothing when clicked.
    dead = page_a.locator(
        ", ".join(f"[data-message-id='{mid}'] .r3nb-content a:not([href])" for mid in mids)
    )
    assert dead.count() >= 4
    for i in range(dead.count()):
        dead.nth(i).click()
    page_a.evaluate("() => new Promise((r) => setTimeout(r, 200))")

    assert page_a.evaluate("() => window.__pwned") == 0
    assert guard.dialogs[dialogs_before:] == []
    assert guard.blocked[blocked_before:] == []
    assert len(page_a.context.pages) == 1  # no window opened


def test_notebook7_sender_streams_live(
    lab: JupyterLab, lab_provider: FakeProvider, browser: Any, guard: Guard
) -> None:
    cid = lab.create_conversation("notebook 7")
    panel_notebook(lab.root / "c.ipynb", cid)
    page = guard.new_page(browser)
    try:
        open_notebook(page, lab.notebook7_url("c.ipynb"))
        run_all_and_wait_for_panel(page)
        start_sampler(page)
        n = len(lab_provider.requests)
        mid = send(page, "Hello from Notebook 7 !tokens=40 !delay=0.04")
        wait_status(page, mid, "complete")
        reply = lab_provider.replies[n]
        assert words(content_text(page, mid)) == words(reply)
        assert lab.message(cid, mid)["content"] == reply
        partial = non_trivial(sampled_lengths(page, mid), len(content_text(page, mid)))
        assert len(partial) >= 10, partial
        assert page.locator(".r3nb-root").get_attribute("data-transport") == "direct"
    finally:
        page.context.close()


SCREENSHOT_REPLY = """\
Read it with **pandas** and look at the first rows:

```python
import pandas as pd

df = pd.read_csv("sales.csv", parse_dates=["date"])
df.groupby("region")["revenue"].sum().sort_values()
```

| region | revenue |
|--------|--------:|
| north  | 12,400  |
| south  |  9,870  |

- `parse_dates` turns the column into real dates
- `groupby` + `sum` gives one total per region: $R_g = \\sum_{i \\in g} r_i$
"""


def test_screenshots_light_and_dark(
    lab_provider: FakeProvider, page_a: Any, tmp_path: Path
) -> None:
    shots = README_SCREENSHOTS if os.environ.get("R3NB_SCREENSHOTS") else tmp_path
    # New is a draft (saved by its first message); the reply is then regenerated once,
    # so the shot shows the version switcher too.
    page_a.locator(".r3nb-root .r3nb-new").click()
    page_a.wait_for_function(
        "() => document.querySelector('.r3nb-root .r3nb-conversations').value === ''"
    )
    lab_provider.scenario.text = SCREENSHOT_REPLY
    lab_provider.scenario.delay = 0.002
    first = send(page_a, "How do I total revenue per region from a CSV?")
    wait_status(page_a, first, "complete")
    message(page_a, first).locator(".r3nb-regenerate").click()
    page_a.wait_for_function(
        "(old) => { const els = document.querySelectorAll('ASSISTANT');"
        " const el = els[els.length - 1];"
        " return el && el.dataset.messageId !== old && el.dataset.status === 'complete'; }".replace(
            "ASSISTANT", ASSISTANT
        ),
        arg=first,
    )
    lab_provider.scenario.text = None
    page_a.locator(".r3nb-root .r3nb-input").fill("And plot it?")
    page_a.mouse.move(0, 0)

    shots.mkdir(parents=True, exist_ok=True)
    root = page_a.locator(".r3nb-root")
    root.scroll_into_view_if_needed()
    try:
        root.screenshot(path=str(shots / "panel-light.png"), animations="disabled")
        page_a.evaluate(
            "() => window.jupyterapp.commands.execute('apputils:change-theme',"
            " {theme: 'JupyterLab Dark'})"
        )
        page_a.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
        root.screenshot(path=str(shots / "panel-dark.png"), animations="disabled")
    finally:
        page_a.evaluate(
            "() => window.jupyterapp.commands.execute('apputils:change-theme',"
            " {theme: 'JupyterLab Light'})"
        )
        page_a.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'")
    for name in ("panel-light.png", "panel-dark.png"):
        assert (shots / name).stat().st_size > 10_000
