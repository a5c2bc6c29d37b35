"""Replies that are hard to render, in a real headless Chromium against a real JupyterLab.

One reply must never break a conversation: a deeply nested quote renders (as text past the
depth bound) for the sender and for anyone who opens the conversation later, a 244 KB table
renders without a main-thread task over 200 ms, and what a person typed is shown as typed.

Needs Debian's chromium at /usr/bin/chromium; the module is skipped when it is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# This module's own browser fixtures (see tests/browsers.py for why they are imported).
from tests.browsers import _browser, _guard, _no_cleanup, _no_loop, require_chromium  # noqa: F401
from tests.lab import (
    MESSAGES,
    Guard,
    JupyterLab,
    content_text,
    message,
    new_conversation,
    open_notebook,
    panel_notebook,
    run_all_and_wait_for_panel,
    send,
    wait_status,
)
from tests.provider import FakeProvider, Scenario

require_chromium()

#: ~8 KB of nested quotes: marked's recursive lexer overflowed the stack on it.
DEEP_QUOTE = "Deep quote:\n\n" + ">" * 7000 + " bottom of the quote\n\nAfter the quote.\n"
#: The longest main-thread task allowed while a reply renders.
LONG_TASK_LIMIT_MS = 200


def big_table(size: int) -> tuple[str, int]:
    """A GFM table of about `size` characters and its number of body rows."""
    lines = ["| id | name | value | note |", "|---:|------|------:|------|"]
    total = sum(len(line) + 1 for line in lines)
    rows = 0
    while total < size:
        line = f"| {rows} | name *{rows}* | {rows * 3.5} | some `note` text for row {rows} |"
        lines.append(line)
        total += len(line) + 1
        rows += 1
    return "\n".join(lines) + "\n", rows


# --- module-wide real parts -------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_provider(shared_provider: FakeProvider) -> FakeProvider:
    return shared_provider


@pytest.fixture(autouse=True)
def _fresh_scenario(lab_provider: FakeProvider) -> Iterator[None]:
    lab_provider.scenario = Scenario()
    yield
    lab_provider.scenario = Scenario()


@pytest.fixture(scope="module")
def lab(shared_lab: JupyterLab) -> Iterator[JupyterLab]:
    """The session's JupyterLab (tests/shared_lab.py); this module's kernels go after it."""
    yield shared_lab
    shared_lab.shutdown_kernels()


@pytest.fixture(scope="module")
def conversation(lab: JupyterLab) -> str:
    return lab.create_conversation("render tests")


@pytest.fixture(scope="module")
def page(lab: JupyterLab, browser: Any, guard: Guard, conversation: str) -> Iterator[Any]:
    """The sender's notebook."""
    panel_notebook(lab.root / "sender.ipynb", conversation)
    page = guard.new_page(browser)
    open_notebook(page, lab.lab_url("sender.ipynb", "sender"))
    run_all_and_wait_for_panel(page)
    yield page
    page.context.close()


# --- page helpers -----------------------------------------------------------------------

#: Records every long task (> 50 ms) of the page into window.__r3nbLongTasks.
LONG_TASKS = """() => {
  window.__r3nbLongTasks = [];
  if (window.__r3nbLongTaskObserver) return;
  window.__r3nbLongTaskObserver = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__r3nbLongTasks.push(entry.duration);
  });
  window.__r3nbLongTaskObserver.observe({ type: 'longtask' });
}"""


def long_tasks(page: Any) -> list[float]:
    """The long tasks recorded since `LONG_TASKS` last ran, after one more frame (the
    observer reports a task once it has ended)."""
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)))")
    return [round(d) for d in page.evaluate("() => window.__r3nbLongTasks")]


def status_text(page: Any) -> str:
    return str(page.locator(".r3nb-root .r3nb-status").text_content() or "")


def wait_table_rows(page: Any, mid: str, rows: int) -> None:
    """Until the message shows its table whole: every row, no provisional text left."""
    page.wait_for_function(
        """([sel, rows]) => {
          const content = document.querySelector(sel);
          if (!content || content.querySelector('.r3nb-soft > *, .r3nb-tail > *')) return false;
          return content.querySelectorAll('table tbody tr').length === rows;
        }""",
        arg=[f"{MESSAGES}[data-message-id='{mid}'] .r3nb-content", rows],
        timeout=60_000,
    )


# --- tests ------------------------------------------------------------------------------


def test_deep_quote_renders_and_never_breaks_the_conversation(
    lab: JupyterLab,
    lab_provider: FakeProvider,
    page: Any,
    browser: Any,
    guard: Guard,
    conversation: str,
) -> None:
    lab_provider.scenario.text = DEEP_QUOTE
    deep = send(page, "quote me something deep")
    wait_status(page, deep, "complete")
    lab_provider.scenario.text = None
    after = send(page, "and a normal reply after it")
    wait_status(page, after, "complete")

    text = content_text(page, deep)
    assert "bottom of the quote" in text
    assert "After the quote." in text
    assert "Cannot reach" not in status_text(page)

    # Anyone opening the conversation later sees all of it, and a healthy connection.
    panel_notebook(lab.root / "reader.ipynb", conversation)
    reader = guard.new_page(browser)
    try:
        open_notebook(reader, lab.lab_url("reader.ipynb", "reader"))
        run_all_and_wait_for_panel(reader)
        stored = lab.messages(conversation)
        assert reader.locator(MESSAGES).count() == len(stored) == 4
        assert "bottom of the quote" in content_text(reader, deep)
        assert "After the quote." in content_text(reader, deep)
        assert content_text(reader, after).strip()
        # A poll after the first one, or the watch stream the panel follows instead,
        # still finds the connection healthy.
        polls = int(reader.locator(".r3nb-root").get_attribute("data-polls") or 0)
        reader.wait_for_function(
            "(n) => { const root = document.querySelector('.r3nb-root');"
            " return +root.dataset.polls > n || root.dataset.watching === '1'; }",
            arg=polls,
        )
        assert "Cannot reach" not in status_text(reader)
    finally:
        reader.context.close()


#: Each measurement is taken up to this many times and the best one is judged. A
#: long task is wall-clock time: on two cores shared with the rest of the suite a
#: garbage-collection pause or a neighbour's burst can stretch a 100 ms task past the
#: bound once. A renderer that really blocks (the unbounded one took 2–6 s every time)
#: fails every attempt.
ATTEMPTS = 2


def _stream_table(page: Any, rows: int) -> tuple[str, str, list[float]]:
    """A new conversation whose reply is the table: (conversation, message, long tasks)."""
    conversation = new_conversation(page)
    page.evaluate(LONG_TASKS)
    mid = send(page, "the whole table please")
    wait_status(page, mid, "complete", timeout=120_000)
    wait_table_rows(page, mid, rows)
    return conversation, mid, long_tasks(page)


def _reopen(page: Any, conversation: str, mid: str, rows: int) -> list[float]:
    """Leave the conversation, open it again (loaded complete): its long tasks."""
    new_conversation(page)
    page.evaluate(LONG_TASKS)
    page.select_option(".r3nb-root .r3nb-conversations", conversation)
    wait_table_rows(page, mid, rows)
    return long_tasks(page)


def test_a_244_kb_table_renders_without_long_tasks(lab_provider: FakeProvider, page: Any) -> None:
    table, rows = big_table(244_000)
    lab_provider.scenario.text = "The data:\n\n" + table + "\nThat is all.\n"
    streamed_runs: list[list[float]] = []
    for _ in range(ATTEMPTS):
        conversation, mid, streamed = _stream_table(page, rows)
        streamed_runs.append(streamed)
        if max(streamed, default=0) <= LONG_TASK_LIMIT_MS:
            break
    loaded_runs: list[list[float]] = []
    for _ in range(ATTEMPTS):
        loaded_runs.append(_reopen(page, conversation, mid, rows))
        if max(loaded_runs[-1], default=0) <= LONG_TASK_LIMIT_MS:
            break

    print(f"long tasks (ms) while streaming: {streamed_runs}, loading: {loaded_runs}")
    assert "That is all." in content_text(page, mid)
    assert min(max(r, default=0) for r in streamed_runs) <= LONG_TASK_LIMIT_MS, streamed_runs
    assert min(max(r, default=0) for r in loaded_runs) <= LONG_TASK_LIMIT_MS, loaded_runs


def test_user_message_shows_what_was_typed(page: Any) -> None:
    prompt = (
        "Why does this fail?\n\n"
        "class Box:\n"
        "    def __init__(self, x):\n"
        "        # comment: keep x\n"
        "        self.x = x  *  2\n"
        "\n"
        "# comment\n"
        "```python\nprint(Box(1).x)\n```\n"
    )
    reply = send(page, prompt)
    wait_status(page, reply, "complete")
    user = page.locator(f"{MESSAGES}[data-role=user]").last
    content = user.locator(".r3nb-content")
    assert content.text_content() == prompt
    assert content.locator("h1, strong, em, p").count() == 0
    # Newlines and indentation stay on screen, not only in the DOM.
    assert "\n    def __init__(self, x):\n" in content.inner_text()
    assert message(page, reply).count() == 1


# --- math (issue 13) --------------------------------------------------------------------

#: Inline and display math in each notation, prices and code that must stay text, raw
#: MathML the reply writes itself (text), then 150 more formulas to stream.
MATH_REPLY = (
    "Euler: $e^{i\\pi} + 1 = 0$ and \\(a^2 + b^2 = c^2\\); prices $5 and $10 stay text.\n\n"
    "$$\n\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}\n$$\n\n"
    "\\[\n\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}\n\\]\n\n"
    'Raw <math><maction actiontype="statusline"><mi>x</mi></maction></math> and `$code$` '
    "stay text, as does $\\href{javascript:window.__pwned++}{link}$'s link.\n\n"
    + "\n\n".join(
        f"Step {i}: $x_{{{i}}}^2 + \\frac{{a_{i}}}{{b}}$ and $$\\int_0^{{{i}}} f(t)\\,dt$$"
        for i in range(150)
    )
    + "\n\nEnd of the math.\n"
)

#: What the panel made of a message's math: each formula's TeX and layout, and anything
#: inside a <math> that is not allow-listed MathML.
MATH_IN_PANEL = """([sel, allowed]) => {
  const content = document.querySelector(sel);
  const NS = 'http://www.w3.org/1998/Math/MathML';
  const bad = [];
  for (const el of content.querySelectorAll('math, math *')) {
    if (el.namespaceURI !== NS || !allowed.includes(el.localName)) bad.push(el.outerHTML);
    for (const a of el.attributes)
      if (a.name.startsWith('on') || ['href', 'style', 'class', 'id', 'src'].includes(a.name) ||
          a.name.includes(':')) bad.push(`${el.localName} ${a.name}`);
  }
  const formulas = [...content.querySelectorAll('math')].map((m) => {
    const box = m.getBoundingClientRect();
    return [m.querySelector('annotation')?.textContent, m.getAttribute('display') || 'inline',
            getComputedStyle(m).display, Math.round(box.width), Math.round(box.height)];
  });
  const code = [...content.querySelectorAll('code')].map((c) => c.textContent);
  return { formulas, code, bad, text: content.textContent };
}"""


def test_reply_math_renders_as_allow_listed_mathml_in_the_panel(
    lab_provider: FakeProvider, page: Any
) -> None:
    from tests.hostile_corpus import MATHML_ELEMENTS

    lab_provider.scenario.text = MATH_REPLY
    lab_provider.scenario.delay = 0.001
    page.evaluate("() => { window.__pwned = 0; }")
    runs: list[list[float]] = []
    for _ in range(ATTEMPTS):  # judged on the better run, as the table's (see ATTEMPTS)
        new_conversation(page)
        page.evaluate(LONG_TASKS)
        mid = send(page, "some math please")
        wait_status(page, mid, "complete", timeout=120_000)
        sel = f"{MESSAGES}[data-message-id='{mid}'] .r3nb-content"
        page.wait_for_function(
            "(sel) => { const c = document.querySelector(sel); return c &&"
            " !c.querySelector('.r3nb-soft > *, .r3nb-tail > *') &&"
            " c.querySelectorAll('math').length >= 304; }",
            arg=sel,
            timeout=60_000,
        )
        runs.append(long_tasks(page))
        if max(runs[-1], default=0) <= LONG_TASK_LIMIT_MS:
            break
    shown = page.evaluate(MATH_IN_PANEL, [sel, sorted(MATHML_ELEMENTS)])
    print(f"long tasks (ms) while streaming {len(MATH_REPLY)} chars of math: {runs}")

    formulas = shown["formulas"]
    assert [(tex, display) for tex, display, *_ in formulas[:5]] == [
        ("e^{i\\pi} + 1 = 0", "inline"),
        ("a^2 + b^2 = c^2", "inline"),
        ("\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}", "block"),
        ("\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}", "block"),
        ("\\href{javascript:window.__pwned++}{link}", "inline"),
    ]
    assert len(formulas) == 5 + 2 * 150
    # Chromium lays the MathML out itself (no fonts, no CSS): display math on its own line.
    for tex, display, css_display, width, height in formulas:
        assert width > 0, (tex, width)
        assert height > 0, (tex, height)
        assert css_display == ("block math" if display == "block" else "math"), (tex, css_display)
    assert shown["bad"] == []
    assert "$code$" in shown["code"]
    assert "prices $5 and $10 stay text" in shown["text"]
    assert '<math><maction actiontype="statusline"><mi>x</mi></maction></math>' in shown["text"]
    assert page.evaluate("() => window.__pwned") == 0
    assert page.locator(f"{sel} a[href^='javascript'], {sel} maction").count() == 0
    assert min(max(r, default=0) for r in runs) <= LONG_TASK_LIMIT_MS, runs
