"""``%%chat`` output, ``r3nb.history()`` and ``r3nb.export()`` in a real JupyterLab (and
Notebook 7) in headless Chromium, with a hostile model.

A cell's fresh output is rendered *trusted*: whatever HTML it carries (or its Markdown
becomes) runs in the page, and a script there can drive every kernel. The local provider
streams every hostile corpus entry in one reply, a second provider fails with a hostile
error text, and the prompt itself is hostile (it comes back through ``history()``). Every
page runs behind a route that blocks and counts any request not to 127.0.0.1, and a
dialog watcher; the corpus bumps ``window.__pwned`` whenever a payload runs.

Needs Debian's chromium at /usr/bin/chromium; the module is skipped when it is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# This module's own browser fixtures (see tests/browsers.py for why they are imported).
from tests.browsers import _browser, _guard, _no_cleanup, _no_loop, require_chromium  # noqa: F401
from tests.hostile_corpus import EVIL, HOSTILE, MATHML_ELEMENTS, PWN
from tests.lab import Guard, JupyterLab, open_notebook, write_notebook
from tests.provider import FakeProvider, Scenario

require_chromium()

#: One reply with every hostile entry (blank lines apart), math whose \href MathJax would
#: turn into a link (r3nb typesets it, without), and ordinary Markdown that must still render.
HOSTILE_REPLY = (
    "Ordinary **bold** and `code`, then the corpus:\n\n"
    + "\n\n".join(payload for _, payload in HOSTILE)
    + f"\n\n$\\href{{javascript:{PWN}}}{{math link}}$ and $$\\href{{{EVIL}/m}}{{m}}$$"
    + "\n\n| col | val |\n|---|--:|\n| a | 1 |\n\n**End.**\n"
)
HOSTILE_PROMPT = f'<img src=x onerror="{PWN}"> <script>{PWN}</script> ![p]({EVIL}/prompt.png)'

#: Elements and attributes none of r3nb's output may contain, checked in the live DOM;
#: MathML only as r3nb's renderer makes it (allow-listed, in a <math> inside no other).
FIND_ACTIVE = (
    """(roots) => {
  const found = [];
  const mathml = """
    + str(sorted(MATHML_ELEMENTS))
    + """;
  const dangerous = 'script,style,iframe,frame,object,embed,img,svg,' +
    'form,input,textarea,select,button,meta,base,link,video,audio,source,template,' +
    'noscript,details,body,mjx-container';
  // What the outputs render (not JupyterLab's own prompt and collapse icon around them).
  roots.forEach((area, cell) => {
    for (const root of area.querySelectorAll('.jp-OutputArea-output')) {
      for (const el of root.querySelectorAll(dangerous)) {
        const parent = el.parentElement;
        if (el.tagName === 'STYLE' && parent && parent.querySelector('table.dataframe'))
          continue;  // pandas' own scoped style for its table
        found.push(`cell ${cell}: element ${el.outerHTML.slice(0, 120)}`);
      }
      for (const el of root.querySelectorAll('*')) {
        for (const attr of el.attributes) {
          const name = attr.name.toLowerCase();
          if (name.startsWith('on') || name === 'srcdoc' || name === 'formaction' ||
              name === 'src' || name.includes(':'))
            found.push(`cell ${cell}: attribute ${name} on ${el.tagName}`);
        }
      }
      for (const a of root.querySelectorAll('a[href]')) {
        const href = a.getAttribute('href').replace(/[\\u0000-\\u0020]/g, '');
        if (!/^(https?|mailto):/i.test(href)) found.push(`cell ${cell}: ${a.outerHTML}`);
      }
      for (const el of root.querySelectorAll('math, math *')) {
        if (el.namespaceURI !== 'http://www.w3.org/1998/Math/MathML' ||
            !mathml.includes(el.localName) ||
            (el.localName === 'math' && el.parentElement.closest('math')))
          found.push(`cell ${cell}: math element ${el.outerHTML.slice(0, 120)}`);
        for (const attr of el.attributes)
          if (['href', 'style', 'class', 'id', 'actiontype'].includes(attr.name) ||
              /url[(]|script:/i.test(attr.value))
            found.push(`cell ${cell}: math attribute ${attr.name} on ${el.localName}`);
      }
    }
  });
  if (document.querySelector('meta[http-equiv], base[href]:not([href="/"])'))
    found.push('meta/base reached the document');
  return found;
}"""
)

#: The output areas of every code cell of the current notebook, in order.
OUTPUTS = """() => [...window.jupyterapp.shell.currentWidget.content.widgets]
  .map((cell) => cell.outputArea ? cell.outputArea.node : null)"""

ALL_DONE = """(n) => {
  if (!window.jupyterapp) throw new Error(`the page went away, to ${location.href}`);
  const w = window.jupyterapp.shell.currentWidget;
  const cells = w.content.model.cells;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  if (!kernel || kernel.status !== 'idle' || cells.length !== n) return false;
  for (let i = 0; i < n; i++) if (cells.get(i).executionCount == null) return false;
  return true;
}"""

#: Lets any handler that slipped through (onerror, onload, refresh, ontoggle) fire. Nothing
#: announces that nothing happened: two frames and a short timer are the bound.
SETTLE = (
    "() => new Promise((r) =>"
    " requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 500))))"
)


# --- module-wide real parts -------------------------------------------------------------


@pytest.fixture(autouse=True)
def _hostile_scenario(lab_provider: FakeProvider) -> Iterator[None]:
    """Word-sized chunks 2 ms apart: the reply is shown live (half-received tags
    included) before its final render."""
    lab_provider.scenario = Scenario(text=HOSTILE_REPLY, delay=0.002)
    yield
    lab_provider.scenario = Scenario()


def chat_notebook(lab: JupyterLab, name: str, *, api: bool = True) -> tuple[str, list[str]]:
    """A notebook that asks the hostile model, then the failing one, then (``api``) shows
    the conversation's history and export. Returns the conversation id and the cells."""
    cid = lab.create_conversation(f"hostile {name}")
    cells = [
        "%load_ext r3nb",
        f"%%chat -c {cid}\n{HOSTILE_PROMPT}",
        f"%%chat -c {cid} -m broken\nthis one fails",
    ]
    if api:
        cells += [f"import r3nb\nr3nb.history({cid!r})", f"r3nb.export({cid!r})"]
    write_notebook(lab.root / name, cells)
    return cid, cells


def run_and_check(page: Any, guard: Guard, cells: list[str]) -> list[Any]:
    """Run every cell, wait until all ran, and assert nothing ran or loaded. Returns
    the output areas (element handles), one per cell."""
    blocked, dialogs = len(guard.blocked), len(guard.dialogs)
    assert page.evaluate("() => window.__pwned") == 0
    page.evaluate("() => { void window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    try:
        page.wait_for_function(ALL_DONE, arg=len(cells), timeout=60_000)
    except Exception as e:  # say what the page did, not only that it never finished
        pytest.fail(
            f"the cells did not all run: {str(e).splitlines()[0]}\n"
            f"outside requests: {guard.blocked[blocked:]}\ndialogs: {guard.dialogs[dialogs:]}"
        )
    page.evaluate(SETTLE)
    outputs = page.evaluate_handle(OUTPUTS)
    roots = [outputs.get_property(str(i)) for i in range(len(cells))]
    active = page.evaluate(FIND_ACTIVE, roots)
    assert active == [], "\n".join(active)
    assert page.evaluate("() => window.__pwned") == 0
    assert guard.dialogs[dialogs:] == []
    assert guard.blocked[blocked:] == []
    assert len(page.context.pages) == 1  # no window opened
    return roots


# --- tests ------------------------------------------------------------------------------


def test_hostile_chat_output_history_and_export_run_and_load_nothing_in_jupyterlab(
    lab: JupyterLab, lab_provider: FakeProvider, browser: Any, guard: Guard
) -> None:
    cid, cells = chat_notebook(lab, "hostile.ipynb")
    page = guard.new_page(browser)
    try:
        open_notebook(page, lab.lab_url("hostile.ipynb", "hostile"))
        outputs = run_and_check(page, guard, cells)
        reply, error, history, export = outputs[1], outputs[2], outputs[3], outputs[4]

        # The reply: ordinary Markdown rendered, the corpus shown as text, math typeset.
        assert reply.eval_on_selector(".r3nb-reply strong", "e => e.textContent") == "bold"
        assert reply.eval_on_selector(".r3nb-reply code", "e => e.textContent") == "code"
        cells = reply.eval_on_selector_all(
            ".r3nb-reply table td", "els => els.map((e) => [e.textContent, e.align])"
        )
        assert cells[-2:] == [["a", ""], ["1", "right"]]
        text = reply.eval_on_selector(".r3nb-reply", "e => e.textContent")
        assert f"<script>{PWN}</script>" in text
        assert f"[click me](javascript:{PWN})" in text
        # Each formula r3nb typeset carries its TeX, from the reply; the reply's own <math>
        # tags are text, and MathJax typeset nothing (no link from \href).
        formulas = reply.eval_on_selector_all(
            ".r3nb-reply math annotation", "els => els.map((e) => e.textContent)"
        )
        assert f"\\href{{javascript:{PWN}}}{{math link}}" in formulas
        assert all(tex in HOSTILE_REPLY for tex in formulas)
        assert '<math><maction actiontype="statusline">' in text
        assert f'<math href="javascript:{PWN}">' in text
        assert "fake · complete" in text
        assert "End." in text
        # Outside images became links naming their host (loaded by nobody).
        image_links = reply.eval_on_selector_all(
            "a.r3nb-image-link", "els => els.map((e) => [e.textContent, e.getAttribute('href')])"
        )
        assert [label for label, _ in image_links][:1] == ["[image from evil.example: x]"]
        assert all(href.startswith(EVIL) for _, href in image_links)

        # The provider's hostile error text: shown, as text.
        shown = error.eval_on_selector(".r3nb-reply", "e => e.textContent")
        print(f"error shown: {shown!r}")
        assert "the provider refused the request (400)" in shown
        assert f'<img src=x onerror="{PWN}">' in shown
        assert f"[x](javascript:{PWN})" in shown

        # history(): pandas' table, the hostile prompt and reply in it as text.
        table = history.eval_on_selector("table.dataframe", "e => e.textContent")
        assert "<img src=x onerror=" in table
        # export(): the transcript as text (not autolinked: its data: URL stays text).
        transcript = export.eval_on_selector(".r3nb-reply pre", "e => e.textContent")
        assert HOSTILE_PROMPT in transcript
        assert "[doc](data:text/html;base64," in transcript
        stored = lab.messages(cid)
        assert [m["status"] for m in stored] == ["complete", "complete", "complete", "error"]
        assert stored[1]["content"] == HOSTILE_REPLY
    finally:
        page.context.close()


def test_hostile_chat_output_runs_and_loads_nothing_in_notebook7(
    lab: JupyterLab, browser: Any, guard: Guard
) -> None:
    _, cells = chat_notebook(lab, "hostile7.ipynb", api=False)
    page = guard.new_page(browser)
    try:
        open_notebook(page, lab.notebook7_url("hostile7.ipynb"))
        outputs = run_and_check(page, guard, cells)
        assert outputs[1].eval_on_selector(".r3nb-reply strong", "e => e.textContent") == "bold"
        assert "refused the request" in outputs[2].eval_on_selector(
            ".r3nb-reply", "e => e.textContent"
        )
    finally:
        page.context.close()
