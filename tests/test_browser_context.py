"""Notebook context (issue 17) in a real headless Chromium against a real JupyterLab 4
and Notebook 7 (each test runs in both):
``@name`` typed in the panel is completed and resolved by the panel's own kernel, over
the widget's comm, with ``%%chat``'s bounds (``_repr_llm_()`` when an object defines
it); the attachments go with the message, show as chips and are stored with it. A name
the kernel does not have, or a kernel busy running a cell, stops the send with a sentence
saying so, the text kept; a prompt without ``@name`` never waits on the kernel. "Attach
cell" puts the active cell on the next message; "Ask r3nb" under a failed cell puts its
code and traceback there with the question pre-filled, sent only on the person's click;
the reply's code then offers "Replace cell [n]" for that cell, undone by the notebook's
``z``.

One notebook page per front end on the shared JupyterLab (tests/shared_lab.py) serves the
module (``page`` is parametrized: every JupyterLab test, then every Notebook 7 test).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from r3nb.kernel.context import MAX_REPR
from tests.browsers import _browser, _guard, _no_cleanup, _no_loop, require_chromium  # noqa: F401
from tests.lab import (
    FRONT_ENDS,
    MESSAGES,
    Guard,
    JupyterLab,
    kernel_id,
    message,
    new_conversation,
    open_notebook,
    run_all_and_wait_for_panel,
    send,
    wait_status,
    write_notebook,
)
from tests.provider import FakeProvider, Scenario

require_chromium()

#: The person's variables: one that describes itself, one long list (bounded), and a
#: private one that completion leaves out.
VARIABLES = """\
class Sky:
    def _repr_llm_(self):
        return "a model of the sky: 3 layers, 40 clouds"

sky = Sky()
series_long = list(range(5000))
series_short = [1, 2, 3]
_private = 1
"""
#: A cell whose run fails, with colours in its traceback (IPython's ANSI codes).
FAILING = "print('about to fail')\n1 / 0"
#: What the model proposes instead.
FIXED = "print('about to fail')\n1 / 1"
#: A cell's source, by index, in the notebook of the page.
SOURCE = """(i) => window.jupyterapp.shell.currentWidget.content.widgets[i]
  .model.sharedModel.getSource()"""
INPUT = ".r3nb-root .r3nb-input"
STATUS = ".r3nb-root .r3nb-status"
#: Runs code in the panel's kernel from the page, as a cell would (not awaited).
EXECUTE = """(code) => { window.jupyterapp.shell.currentWidget.sessionContext.session.kernel
  .requestExecute({code}); }"""
#: Runs code in the panel's kernel and waits until the kernel has run it.
EXECUTED = """async (code) => { await window.jupyterapp.shell.currentWidget.sessionContext
  .session.kernel.requestExecute({code}).done; }"""
KERNEL_BUSY = """() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel
  .status === 'busy'"""
KERNEL_IDLE = """() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel
  .status === 'idle'"""


@pytest.fixture(autouse=True)
def _fresh_scenario(lab_provider: FakeProvider) -> Iterator[None]:
    lab_provider.scenario = Scenario()
    yield
    lab_provider.scenario = Scenario()
    lab_provider.release()


@pytest.fixture(scope="module", params=FRONT_ENDS)
def page(
    request: pytest.FixtureRequest, lab: JupyterLab, browser: Any, guard: Guard
) -> Iterator[Any]:
    """A notebook with the panel (cells 0 and 1), the person's variables (2) and a cell
    that fails (3): in JupyterLab, then in Notebook 7 (its own notebook and kernel)."""
    cid = lab.create_conversation("context")
    notebook = f"context-{request.param}.ipynb"
    write_notebook(
        lab.root / notebook,
        ["%load_ext r3nb", f"%r3nb --conversation {cid}", VARIABLES, FAILING],
    )
    page = guard.new_page(browser)
    open_notebook(page, lab.front_end_url(request.param, notebook))
    run_all_and_wait_for_panel(page)
    page.wait_for_function(KERNEL_IDLE)
    yield page
    page.context.close()


def model_input(provider: FakeProvider) -> str:
    """What the model was given in the last call, as text."""
    return "\n".join(str(m["content"]) for m in provider.requests[-1]["messages"])


def type_in_panel(page: Any, text: str) -> None:
    box = page.locator(INPUT)
    box.click()
    box.press_sequentially(text)


def user_messages(page: Any) -> int:
    return int(page.locator(f"{MESSAGES}[data-role=user]").count())


def test_typing_at_completes_kernel_names_and_the_sent_message_carries_them(
    lab: JupyterLab, page: Any, lab_provider: FakeProvider
) -> None:
    cid = new_conversation(page)
    page.locator(INPUT).fill("")
    type_in_panel(page, "Compare @series_")
    options = page.locator(".r3nb-root .r3nb-mentions [role=option]")
    options.first.wait_for(state="visible")
    assert options.evaluate_all("os => os.map((o) => o.dataset.name)") == [
        "series_long",
        "series_short",
    ]
    page.keyboard.press("Tab")  # takes the first
    assert page.locator(INPUT).input_value() == "Compare @series_long "
    type_in_panel(page, "with @sk")
    page.locator(".r3nb-root .r3nb-mention[data-name=sky]").wait_for(state="visible")
    page.keyboard.press("Enter")  # the list takes Enter; it does not send
    assert page.locator(INPUT).input_value() == "Compare @series_long with @sky "
    assert user_messages(page) == 0

    lab_provider.scenario = Scenario(text="Noted.")
    mid = send(page, page.locator(INPUT).input_value() + "please")
    wait_status(page, mid, "complete")

    # The chips on the message, with what was sent as their title.
    user = page.locator(f"{MESSAGES}[data-role=user]").last
    chips = user.locator(".r3nb-chip")
    assert chips.all_text_contents() == ["@series_long", "@sky"]
    assert "a model of the sky: 3 layers, 40 clouds" in (chips.nth(1).get_attribute("title") or "")
    # Stored with the message, bounded as %%chat bounds them: what observers are given.
    (stored,) = [m for m in lab.messages(cid) if m["role"] == "user"]
    names = [(a["kind"], a["name"]) for a in stored["attachments"]]
    assert names == [("variable", "series_long"), ("variable", "sky")]
    long_summary = stored["attachments"][0]["summary"]
    assert long_summary.startswith("Variable `series_long`: list, len 5000")
    assert len(long_summary) <= MAX_REPR + 200
    assert stored["attachments"][1]["summary"].endswith("a model of the sky: 3 layers, 40 clouds")
    # And the model was given them.
    sent = model_input(lab_provider)
    assert "a model of the sky: 3 layers, 40 clouds" in sent
    assert "Variable `series_long`" in sent


def test_an_unknown_name_stops_the_send_and_says_so(page: Any) -> None:
    before = user_messages(page)
    box = page.locator(INPUT)
    box.fill("What is @ghost?")
    box.press("Enter")
    status = page.locator(STATUS)
    status.filter(has_text="no variable named ghost").wait_for(state="visible")
    assert "@ghost: no variable named ghost in the kernel: nothing was sent." in (
        status.text_content() or ""
    )
    assert box.input_value() == "What is @ghost?"
    assert user_messages(page) == before
    box.fill("")


def activate_cell(page: Any, index: int) -> None:
    page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputPrompt").click()
    page.wait_for_function(
        "(i) => window.jupyterapp.shell.currentWidget.content.activeCellIndex === i", arg=index
    )


def pending_chips(page: Any) -> Any:
    return page.locator(".r3nb-root .r3nb-pending .r3nb-chip")


def test_attach_cell_puts_the_active_cells_code_on_the_next_message(
    lab: JupyterLab, page: Any, lab_provider: FakeProvider
) -> None:
    cid = new_conversation(page)
    activate_cell(page, 2)
    page.locator(".r3nb-root .r3nb-attach-cell").click()
    chip = pending_chips(page)
    chip.first.wait_for(state="visible")
    assert chip.count() == 1
    title = chip.first.get_attribute("title") or ""
    assert VARIABLES.rstrip() in title  # the cell's code as the notebook holds it
    assert (chip.first.text_content() or "").startswith("cell [")

    lab_provider.scenario = Scenario(text="It defines a sky.")
    mid = send(page, "What does this cell do?")
    wait_status(page, mid, "complete")
    assert pending_chips(page).count() == 0
    (stored,) = [m for m in lab.messages(cid) if m["role"] == "user"]
    (attachment,) = stored["attachments"]
    assert attachment["kind"] == "cell"
    assert VARIABLES.rstrip() in attachment["summary"]
    assert VARIABLES.rstrip() in model_input(lab_provider)


def assert_below_the_output_at_full_width(cell: Any) -> None:
    """The "Ask r3nb" row sits under the cell's output, which keeps its width (and the
    button its label): not squeezed beside it."""
    output = cell.locator(".jp-OutputArea").bounding_box()
    source = cell.locator(".jp-InputArea").bounding_box()
    row = cell.locator(".r3nb-ask").bounding_box()
    assert row["y"] >= output["y"] + output["height"] - 1, (row, output)
    assert output["width"] >= source["width"] - 2, (output, source)
    button = cell.locator(".r3nb-ask-button")
    assert button.evaluate(
        "(b) => b.scrollWidth <= b.clientWidth && b.scrollHeight <= b.clientHeight"
    ), button.bounding_box()


def test_ask_r3nb_on_an_error_prefills_the_question_and_sends_only_on_the_click(
    lab: JupyterLab, page: Any, lab_provider: FakeProvider
) -> None:
    cid = new_conversation(page)
    page.locator(INPUT).fill("")
    requests = len(lab_provider.requests)
    failing = page.locator(".jp-Notebook .jp-Cell").nth(3)
    failing.locator(".r3nb-ask-button").click()
    box = page.locator(INPUT)
    page.wait_for_function(
        "(sel) => document.querySelector(sel).value === 'Why does this fail?'", arg=INPUT
    )
    assert failing.locator(".r3nb-ask [role=status]").text_content() == (
        "In the r3nb panel: press Send to ask."
    )
    assert_below_the_output_at_full_width(failing)
    chips = pending_chips(page)
    assert [c.split("×")[0] for c in chips.all_text_contents()][1] == "ZeroDivisionError"
    error_summary = chips.nth(1).get_attribute("title") or ""
    assert "ZeroDivisionError: division by zero" in error_summary
    assert "\x1b" not in error_summary  # the colours are gone, the text stays
    assert "1 / 0" in (chips.nth(0).get_attribute("title") or "")
    # Nothing was sent: the person reads, may edit, and presses Send.
    assert user_messages(page) == 0
    assert len(lab_provider.requests) == requests

    lab_provider.scenario = Scenario(text=f"You divide by zero.\n\n```python\n{FIXED}\n```\n")
    box.press("Enter")
    reply = page.locator(f"{MESSAGES}[data-role=assistant][data-status=complete]")
    reply.wait_for()
    (stored,) = [m for m in lab.messages(cid) if m["role"] == "user"]
    assert stored["content"] == "Why does this fail?"
    assert [a["kind"] for a in stored["attachments"]] == ["cell", "error"]
    assert "ZeroDivisionError: division by zero" in stored["attachments"][1]["summary"]
    user = page.locator(f"{MESSAGES}[data-role=user]").last
    assert user.locator(".r3nb-chip").count() == 2

    # The reply's code goes back into the cell that was asked about, on the click, as one
    # step of the notebook's undo.
    cell_name = stored["attachments"][0]["name"]
    replace = reply.locator(".r3nb-cell-action[data-action=replace-cell]")
    assert replace.text_content() == f"Replace {cell_name}"
    assert page.evaluate(SOURCE, 3) == FAILING
    replace.click()
    page.wait_for_function(f"(i) => ({SOURCE})(i) === {FIXED!r}", arg=3)
    activate_cell(page, 3)
    page.keyboard.press("z")
    page.wait_for_function(f"(i) => ({SOURCE})(i) === {FAILING!r}", arg=3)


def test_a_busy_kernel_is_named_instead_of_hanging_and_plain_prompts_still_go(
    lab: JupyterLab, page: Any, lab_provider: FakeProvider
) -> None:
    page.evaluate(EXECUTE, "import time; time.sleep(120)")  # interrupted at the end
    page.wait_for_function(KERNEL_BUSY)
    try:
        before = user_messages(page)
        box = page.locator(INPUT)
        # Describing runs the objects' code, so it waits for the main thread, between
        # cells (completion, names only, may still answer: JupyterLab 4.6 sends widget
        # messages to a kernel subshell).
        box.fill("Look at @series_short")
        box.press("Enter")
        status = page.locator(STATUS)
        status.filter(has_text="The kernel is busy").wait_for(state="visible", timeout=15_000)
        assert "@series_short could not be attached, so nothing was sent" in (
            status.text_content() or ""
        )
        assert box.input_value() == "Look at @series_short"
        assert user_messages(page) == before

        # A prompt without @name does not wait on the kernel: the server answers it.
        lab_provider.scenario = Scenario(text="Fine.")
        mid = send(page, "No names here")
        wait_status(page, mid, "complete")
        assert (message(page, mid).locator(".r3nb-content").text_content() or "").strip() == "Fine."
    finally:
        lab.interrupt(kernel_id(page))
        # The main thread is free once it has run something after the interrupt (the
        # kernel's status is no proof: a subshell reports idle while the cell runs).
        page.evaluate(EXECUTED, "pass")

    # Between cells again: the same prompt goes, with its chip.
    mid = send(page, "Look at @series_short")
    wait_status(page, mid, "complete")
    user = page.locator(f"{MESSAGES}[data-role=user]").last
    assert user.locator(".r3nb-chip").all_text_contents() == ["@series_short"]
