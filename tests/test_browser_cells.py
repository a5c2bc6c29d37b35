"""Code → cell (issue 17) in a real headless Chromium against a real JupyterLab 4 and
Notebook 7 (each test runs in both), with r3nb's JupyterLab extension (labextension/,
built into r3nb/labextension) loaded the way an installed wheel loads it.

A reply's code block offers Insert below, Replace cell and Insert & run; what lands in
the cell is exactly the block's text as shown (HTML-looking text stays text); a block
holding characters that show nothing is not offered; each change is one step of the
notebook's own undo (``z`` in command mode, or Edit → Undo Cell Operation); nothing runs
before the click, and Insert & run runs only the inserted cell. Where the extension is
absent the block keeps Copy and the panel says once why there is no more.

One JupyterLab (tests/shared_lab.py) serves the module, with one notebook page per front
end (``page`` is parametrized: every JupyterLab test, then every Notebook 7 test) and
one JupyterLab page without the extension.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import nbformat
import pytest
from nbformat.sign import NotebookNotary

from tests.browsers import _browser, _guard, _no_cleanup, _no_loop, require_chromium  # noqa: F401
from tests.lab import (
    FRONT_ENDS,
    LABEXTENSION,
    Guard,
    JupyterLab,
    message,
    new_conversation,
    open_notebook,
    run_all_and_wait_for_panel,
    save_notebook,
    send,
    wait_status,
    write_notebook,
)
from tests.provider import FakeProvider, Scenario

require_chromium()

#: What a person would be shown: HTML-looking text in code is text, and goes in as text.
HTML_CODE = "shown = '<b>not bold</b> &amp; <img src=x onerror=alert(1)>'\nprint(shown)"
#: Code whose running leaves a trace the test can see from outside the kernel.
MARKER = f"ran-{uuid.uuid4().hex[:8]}.txt"
RUN_CODE = f"import pathlib\npathlib.Path({MARKER!r}).write_text('ran')\nprint('ran', 6 * 7)"
#: A zero-width space and a right-to-left override: what the block shows is not what runs.
HIDDEN_CODE = "x = 'zero\u200bwidth'\ny = 'abc\u202edef'"
REPLY = (
    f"Shown as text:\n\n```python\n{HTML_CODE}\n```\n\n"
    f"Runs when asked:\n\n```python\n{RUN_CODE}\n```\n\n"
    f"Hidden characters:\n\n```python\n{HIDDEN_CODE}\n```\n"
)
BASE_CELL = "base = 'untouched'"

#: Every cell's source, in order, in the notebook of the page.
CELLS = """() => window.jupyterapp.shell.currentWidget.content.widgets
  .map((c) => c.model.sharedModel.getSource())"""
#: Each code cell's execution count (null before it ran).
COUNTS = """() => window.jupyterapp.shell.currentWidget.content.widgets
  .map((c) => c.model.sharedModel.execution_count ?? null)"""
#: The extension's answer to a probe sent the way the widget sends it (no globals: a
#: bubbling event from the panel's element, claimed with preventDefault, answered once).
PROBE = """() => new Promise((resolve) => {
  const el = document.querySelector('.r3nb-root .r3nb-list');
  const event = new CustomEvent('r3nb:notebook', {bubbles: true, composed: true,
    cancelable: true, detail: {action: 'probe', code: '', respond: resolve}});
  if (el.dispatchEvent(event)) resolve(null);
})"""


@pytest.fixture(autouse=True)
def _fresh_scenario(lab_provider: FakeProvider) -> Iterator[None]:
    lab_provider.scenario = Scenario()
    yield
    lab_provider.scenario = Scenario()
    lab_provider.release()


@pytest.fixture(scope="module")
def lab(shared_lab: JupyterLab) -> Iterator[JupyterLab]:
    yield shared_lab
    shared_lab.shutdown_kernels()
    (shared_lab.root / MARKER).unlink(missing_ok=True)


def cells_notebook(lab: JupyterLab, name: str) -> str:
    """A notebook showing the panel (cells 0 and 1) above a cell of the person's (2)."""
    cid = lab.create_conversation(name)
    write_notebook(
        lab.root / f"{name}.ipynb",
        ["%load_ext r3nb", f"%r3nb --conversation {cid}", BASE_CELL],
    )
    return f"{name}.ipynb"


@pytest.fixture(scope="module", params=FRONT_ENDS)
def page(
    request: pytest.FixtureRequest, lab: JupyterLab, browser: Any, guard: Guard
) -> Iterator[Any]:
    """A notebook with the panel in JupyterLab, then one in Notebook 7 (its own notebook
    and kernel each)."""
    notebook = cells_notebook(lab, f"cells-{request.param}")
    (lab.root / MARKER).unlink(missing_ok=True)  # what the other front end's run left
    page = guard.new_page(browser)
    open_notebook(page, lab.front_end_url(request.param, notebook))
    run_all_and_wait_for_panel(page)
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def reply(page: Any, lab_provider: FakeProvider) -> Any:
    """The reply with the three code blocks, complete, its blocks' buttons drawn."""
    new_conversation(page)
    el = reply_with(page, lab_provider, REPLY)
    el.locator(".r3nb-cell-actions").first.wait_for(state="visible")
    return el


def activate_cell(page: Any, index: int) -> None:
    """Click a cell's prompt, as a person choosing the cell (command mode, focus on the
    notebook, so that `z` is the notebook's undo)."""
    page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputPrompt").click()
    page.wait_for_function(
        "(i) => window.jupyterapp.shell.currentWidget.content.activeCellIndex === i", arg=index
    )


def wait_cells(page: Any, expected: list[str], timeout: float = 15_000) -> None:
    try:
        page.wait_for_function(
            f"(want) => JSON.stringify(({CELLS})()) === JSON.stringify(want)",
            arg=expected,
            timeout=timeout,
        )
    except Exception as e:
        raise AssertionError(f"cells are {page.evaluate(CELLS)!r}, not {expected!r}") from e


def undo(page: Any, cell: int) -> None:
    """The notebook's own undo: `z` in command mode, with that cell chosen."""
    activate_cell(page, cell)
    page.keyboard.press("z")


def undo_from_edit_menu(page: Any) -> None:
    """The notebook's own undo again, as a person finds it: Edit → Undo Cell Operation."""
    page.get_by_role("menuitem", name="Edit", exact=True).click()
    page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel").filter(
        has_text="Undo Cell Operation"
    ).click()


def block(reply: Any, n: int) -> Any:
    return reply.locator(".r3nb-code").nth(n)


#: The buttons, by the names assistive technology reads out.
INSERT = "Insert this code in a new cell below the active cell"
REPLACE = "Replace the code of the active cell with this code"
INSERT_RUN = "Insert this code in a new cell below the active cell and run that cell"


def press(code_block: Any, name: str) -> None:
    code_block.get_by_role("button", name=name, exact=True).click()


def test_the_lab_loads_the_extension_and_it_answers_the_panel(page: Any) -> None:
    # What `jupyter labextension list` reads, as the page got it from the server: the
    # extension found in a labextensions folder (as the wheel installs it), not disabled.
    config = page.evaluate(
        "() => JSON.parse(document.getElementById('jupyter-config-data').textContent)"
    )
    (entry,) = [e for e in config["federated_extensions"] if e["name"] == "r3nb"]
    built = json.loads((LABEXTENSION / "package.json").read_text())
    # The tree's build, not an older copy elsewhere on Jupyter's path (an editable
    # install's, in the virtualenv).
    assert entry["load"] == built["jupyterlab"]["_build"]["load"]
    assert "r3nb" not in config.get("disabledExtensions", {})
    version = built["version"]
    assert page.evaluate(PROBE) == {"ok": True, "version": version}


def test_insert_below_and_replace_put_the_text_shown_and_undo_takes_them_back(
    page: Any, reply: Any
) -> None:
    original = page.evaluate(CELLS)
    assert original[2] == BASE_CELL
    shown = block(reply, 0).locator("pre").text_content()
    assert shown == HTML_CODE

    activate_cell(page, 2)
    press(block(reply, 0), INSERT)
    wait_cells(page, [*original, HTML_CODE])
    assert block(reply, 0).locator(".r3nb-cell-status").text_content() == "Inserted"
    undo(page, 3)
    wait_cells(page, original)

    # By keyboard this time: the button takes focus (its cell becomes JupyterLab's active
    # one), Enter presses it, and the cell chosen before is the one replaced.
    activate_cell(page, 2)
    block(reply, 0).get_by_role("button", name=REPLACE, exact=True).focus()
    page.keyboard.press("Enter")
    wait_cells(page, [*original[:2], HTML_CODE])
    assert block(reply, 0).locator(".r3nb-cell-status").text_content() == "Replaced"
    undo_from_edit_menu(page)
    wait_cells(page, original)

    # The block with invisible characters: not offered, and says which ones.
    hidden = block(reply, 2)
    assert hidden.locator("pre").text_content() == HIDDEN_CODE
    for button in hidden.locator(".r3nb-cell-action").all():
        assert button.is_disabled()
    assert "U+200B, U+202E" in (hidden.locator(".r3nb-cell-status").text_content() or "")
    assert page.evaluate("() => window.__pwned") == 0


def test_insert_and_run_runs_only_the_inserted_cell_and_only_on_the_click(
    lab: JupyterLab, page: Any, reply: Any
) -> None:
    original = page.evaluate(CELLS)
    counts = page.evaluate(COUNTS)
    # The reply is complete and its buttons are drawn: nothing of it has run.
    assert not (lab.root / MARKER).exists()
    assert page.evaluate(COUNTS) == counts

    activate_cell(page, 2)
    press(block(reply, 1), INSERT_RUN)
    wait_cells(page, [*original, RUN_CODE])
    output = page.locator(".jp-Notebook .jp-Cell").nth(3).locator(".jp-OutputArea-output")
    output.filter(has_text="ran 42").wait_for(state="visible", timeout=30_000)
    assert (lab.root / MARKER).read_text() == "ran"
    # The front end sets a cell's count from the kernel's execute_reply, which comes after
    # the output it printed: wait for it rather than read it the moment the output shows.
    page.wait_for_function(f"() => Number.isInteger(({COUNTS})()[3])", timeout=30_000)
    after = page.evaluate(COUNTS)
    assert after[:3] == counts, "only the inserted cell ran"

    # The cell goes with the notebook's undo (what it did in the kernel stays done).
    undo(page, 3)
    wait_cells(page, original)


#: What a notebook saved before the panel's hint carries as its text/plain (anywidget's
#: object repr), and another library's widget: the first gets the hint, the second not.
OLD_REPR = "<r3nb.kernel.panel.ChatPanel object at 0x7f3a1c2b3d40>"
OTHER_WIDGET = "IntSlider(value=0)"
MODEL_NOT_FOUND = "Error displaying widget: model not found"


def test_a_saved_panel_reopened_with_a_fresh_kernel_says_how_to_reopen_it(
    lab: JupyterLab, page: Any, browser: Any, guard: Guard
) -> None:
    """Issue 13: the notebook saved with its panel, then opened again with a new kernel:
    the widget manager finds no model and says only "model not found"; r3nb's output
    says what it was and how to bring it back."""
    save_notebook(page)
    front_end = "notebook7" if "/notebooks/" in page.url else "lab"
    saved = lab.root / f"cells-{front_end}.ipynb"
    nb = nbformat.read(str(saved), as_version=4)
    (output,) = nb.cells[1].outputs  # as the kernel sent it and the front end saved it
    cid = nb.cells[1].source.split()[-1]
    hint = f"r3nb chat panel (conversation {cid}): it shows only while the kernel"
    assert output.data["text/plain"].startswith(hint)
    assert "application/vnd.jupyter.widget-view+json" in output.data
    # Two more outputs of a widget whose kernel is gone, in cells of their own (after
    # whatever cells the page has now: a test before this one may have left one).
    old_at = len(nb.cells)
    for text in (OLD_REPR, OTHER_WIDGET):
        other = copy.deepcopy(output)
        other.data["text/plain"] = text
        other.data["application/vnd.jupyter.widget-view+json"]["model_id"] = uuid.uuid4().hex
        nb.cells.append(nbformat.v4.new_code_cell("%r3nb", outputs=[other]))
    # Another file: its own session, so a fresh kernel, as after reopening the notebook.
    # Signed as the lab signs what it saves: an untrusted notebook renders no widget (its
    # outputs show their text/plain, which is the hint itself).
    NotebookNotary(data_dir=lab.env["JUPYTER_DATA_DIR"]).sign(nb)
    name = f"reopened-{front_end}.ipynb"
    nbformat.write(nb, str(lab.root / name))
    # Its kernel starts while the page loads (the page joins the notebook's session).
    session = {"path": name, "name": name, "type": "notebook", "kernel": {"name": "python3"}}
    created = httpx.post(lab.url + "api/sessions", json=session, headers=lab.headers, timeout=30)
    assert created.status_code == 201, created.text

    reopened = guard.new_page(browser)
    try:
        reopened.goto(lab.front_end_url(front_end, name))
        cells = reopened.locator(".jp-Notebook .jp-Cell")
        shown = cells.nth(1).locator(".jp-OutputArea-output")
        shown.locator(".r3nb-stale-hint").wait_for(state="visible")
        assert MODEL_NOT_FOUND in (shown.text_content() or "")
        # The kernel's words (the extension writes its own, the same, never the notebook's).
        words = shown.locator(".r3nb-stale-hint").text_content()
        assert words == output.data["text/plain"]
        assert f"`%r3nb --conversation {cid}`" in words
        # Saved before the hint existed: the same words, without an id to name.
        old = cells.nth(old_at).locator(".jp-OutputArea-output .r3nb-stale-hint")
        old.wait_for(state="visible")
        assert (old.text_content() or "").startswith("r3nb chat panel: it shows only")
        foreign = cells.nth(old_at + 1).locator(".jp-OutputArea-output")
        foreign.filter(has_text=MODEL_NOT_FOUND).wait_for(state="visible")
        assert foreign.locator(".r3nb-stale-hint").count() == 0
    finally:
        reopened.context.close()


def test_without_the_extension_code_blocks_keep_copy_and_the_panel_says_so_once(
    lab: JupyterLab, lab_provider: FakeProvider, browser: Any, guard: Guard
) -> None:
    # What `jupyter labextension disable r3nb` writes; read by the server at each page load.
    page_config = lab.workdir / "config" / "labconfig" / "page_config.json"
    page_config.parent.mkdir(parents=True, exist_ok=True)
    page_config.write_text(json.dumps({"disabledExtensions": {"r3nb": True}}))
    notebook = cells_notebook(lab, "nocells")
    bare = guard.new_page(browser)
    try:
        open_notebook(bare, lab.lab_url(notebook, "wsnocells"))
        page_config.unlink()
        run_all_and_wait_for_panel(bare)
        assert bare.evaluate(PROBE) is None  # nobody claims the event
        reply0 = reply_with(bare, lab_provider, REPLY)
        bare.wait_for_selector(".r3nb-root .r3nb-list[data-cell-actions='off']")
        assert reply0.locator(".r3nb-code").count() == 3
        assert reply0.locator(".r3nb-copy").count() == 3
        assert reply0.locator(".r3nb-cell-action").count() == 0
        note = bare.locator(".r3nb-root .r3nb-cells-note")
        assert note.count() == 1
        assert "needs r3nb's JupyterLab extension" in (note.text_content() or "")
        assert bare.evaluate(CELLS)[2] == BASE_CELL
        # Cells → chat needs the extension too: "Attach cell" is absent, not broken.
        bare.wait_for_selector(".r3nb-root[data-notebook='no']")
        assert bare.locator(".r3nb-root .r3nb-attach-cell").is_hidden()
    finally:
        page_config.unlink(missing_ok=True)
        bare.context.close()


def reply_with(page: Any, provider: FakeProvider, text: str) -> Any:
    """Sends a prompt that `provider` answers with `text`; the complete reply's message."""
    provider.scenario = Scenario(text=text)
    mid = send(page, "Code, please")
    wait_status(page, mid, "complete")
    provider.scenario = Scenario()
    return message(page, mid)
