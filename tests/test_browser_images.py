"""Plots and images → the model (issue 17), in a real headless Chromium against a real
JupyterLab 4 and Notebook 7 (each test runs in both): "Attach cell" on a cell that drew a
matplotlib plot puts the cell and its plot on the next message (the plot with a
thumbnail); a model that takes images gets the plot as an ``image_url`` content part and
the message names its attachment row; a model that does not is named at once and refuses
with the reason before anything is stored, the text and the chips kept; an image pasted
into the input goes the same way; several selected cells become several chips.

One notebook page per front end on the shared JupyterLab (tests/shared_lab.py) serves the
module.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browsers import _browser, _guard, _no_cleanup, _no_loop, require_chromium  # noqa: F401
from tests.lab import (
    FRONT_ENDS,
    MESSAGES,
    Guard,
    JupyterLab,
    new_conversation,
    open_notebook,
    run_all_and_wait_for_panel,
    send,
    wait_status,
    write_notebook,
)
from tests.provider import FakeProvider, Scenario
from tests.test_images import png

require_chromium()

PLOT = """\
import matplotlib.pyplot as plt
plt.figure(figsize=(2, 1.5), dpi=50)
plt.plot([1, 3, 2])
plt.show()
"""
FIRST = "first = 1"
SECOND = "second = 2"
INPUT = ".r3nb-root .r3nb-input"
STATUS = ".r3nb-root .r3nb-status"
MODELS = ".r3nb-root .r3nb-models"
ATTACH = ".r3nb-root .r3nb-attach-cell"
KERNEL_IDLE = """() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel
  .status === 'idle'"""
#: Pastes a PNG (base64) into the panel's input, as the clipboard would hand it over.
PASTE = """([sel, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], "clip.png", { type: "image/png" }));
  const input = document.querySelector(sel);
  input.focus();
  const paste = { clipboardData: data, bubbles: true, cancelable: true };
  input.dispatchEvent(new ClipboardEvent("paste", paste));
}"""


@pytest.fixture(autouse=True)
def _fresh_scenario(lab_provider: FakeProvider) -> Iterator[None]:
    lab_provider.scenario = Scenario(text="Seen.")
    yield
    lab_provider.scenario = Scenario()
    lab_provider.release()


@pytest.fixture(scope="module", params=FRONT_ENDS)
def page(
    request: pytest.FixtureRequest, lab: JupyterLab, browser: Any, guard: Guard
) -> Iterator[Any]:
    """A notebook with the panel (cells 0 and 1), a matplotlib plot (2) and two small
    cells (3, 4), all run: in JupyterLab, then in Notebook 7."""
    cid = lab.create_conversation("images")
    notebook = f"images-{request.param}.ipynb"
    write_notebook(
        lab.root / notebook,
        ["%load_ext r3nb", f"%r3nb --conversation {cid}", PLOT, FIRST, SECOND],
    )
    page = guard.new_page(browser)
    open_notebook(page, lab.front_end_url(request.param, notebook))
    run_all_and_wait_for_panel(page)
    page.locator(".jp-Notebook .jp-Cell").nth(2).locator(".jp-OutputArea img").wait_for()
    page.wait_for_function(KERNEL_IDLE)
    yield page
    page.context.close()


def click_cell(page: Any, index: int, *, shift: bool = False) -> None:
    prompt = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputPrompt")
    prompt.click(modifiers=["Shift"] if shift else None)


def pending(page: Any) -> Any:
    return page.locator(".r3nb-root .r3nb-pending .r3nb-chip")


def clear_pending(page: Any) -> None:
    while pending(page).count():
        pending(page).first.locator(".r3nb-chip-remove").click()


def image_urls(request: dict[str, Any]) -> list[str]:
    return [
        part["image_url"]["url"]
        for m in request["messages"]
        if isinstance(m["content"], list)
        for part in m["content"]
        if part["type"] == "image_url"
    ]


def user_messages(page: Any) -> int:
    return int(page.locator(f"{MESSAGES}[data-role=user]").count())


def test_a_plot_attached_from_its_cell_reaches_a_model_that_takes_images(
    lab: JupyterLab, page: Any, lab_provider: FakeProvider
) -> None:
    cid = new_conversation(page)
    page.locator(MODELS).select_option("eyes")
    click_cell(page, 2)
    page.locator(ATTACH).click()
    chips = pending(page)
    chips.nth(1).wait_for()
    labels = [t.rstrip("×") for t in chips.all_text_contents()]
    assert labels[0].startswith("cell [")
    assert labels[1] == f"plot of {labels[0]}"
    thumb = chips.nth(1).locator("img.r3nb-chip-thumb")
    assert (thumb.get_attribute("src") or "").startswith("data:image/png;base64,iVBOR")

    mid = send(page, "What does this plot show?")
    wait_status(page, mid, "complete")
    assert chips.count() == 0
    # The model got the plot as a content part: the PNG the notebook shows.
    (url,) = image_urls(lab_provider.requests[-1])
    assert url.startswith("data:image/png;base64,")
    sent = base64.b64decode(url.split(",", 1)[1])
    assert sent.startswith(b"\x89PNG\r\n\x1a\n")
    # The message names an attachment row (no bytes in it), served to the chip's owner.
    (user,) = [m for m in lab.messages(cid) if m["role"] == "user"]
    assert [a["kind"] for a in user["attachments"]] == ["cell", "image"]
    image = user["attachments"][1]
    assert image["mime"] == "image/png"
    assert image["size"] == len(sent)
    assert "data" not in image
    assert "base64" not in user["content"]
    served = httpx.get(
        f"{lab.api}conversations/{cid}/attachments/{image['id']}", headers=lab.headers
    )
    assert served.status_code == 200
    assert served.content == sent
    # The sent message's chip shows it too, through that route.
    shown = page.locator(f"{MESSAGES}[data-role=user]").last.locator(".r3nb-chip img")
    shown.wait_for()
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=shown.element_handle()
    )


def test_a_model_without_images_refuses_with_the_reason_and_loses_nothing(
    page: Any, lab_provider: FakeProvider
) -> None:
    new_conversation(page)
    page.locator(MODELS).select_option("fake")
    click_cell(page, 2)
    page.locator(ATTACH).click()
    pending(page).nth(1).wait_for()
    status = page.locator(STATUS)
    # Said at once (GET models says which models take images), and again by the server.
    status.filter(has_text="The chosen model takes no images").wait_for(state="visible")
    requests = len(lab_provider.requests)
    box = page.locator(INPUT)
    box.fill("And this one?")
    box.press("Enter")
    status.filter(has_text="model 'fake' does not take images").wait_for(state="visible")
    assert "choose a model that does" in (status.text_content() or "")
    assert box.input_value() == "And this one?"
    assert pending(page).count() == 2
    assert user_messages(page) == 0
    assert len(lab_provider.requests) == requests
    box.fill("")
    clear_pending(page)


def test_a_pasted_image_becomes_a_chip_and_reaches_the_model(
    lab: JupyterLab, page: Any, lab_provider: FakeProvider
) -> None:
    cid = new_conversation(page)
    page.locator(MODELS).select_option("eyes")
    clip = png(3, 3)
    page.evaluate(PASTE, [INPUT, base64.b64encode(clip).decode()])
    chip = pending(page)
    chip.first.wait_for()
    assert chip.all_text_contents() == ["pasted image×"]
    mid = send(page, "What is in the clipboard?")
    wait_status(page, mid, "complete")
    assert image_urls(lab_provider.requests[-1]) == [
        "data:image/png;base64," + base64.b64encode(clip).decode()
    ]
    (user,) = [m for m in lab.messages(cid) if m["role"] == "user"]
    assert [(a["kind"], a["name"], a["size"]) for a in user["attachments"]] == [
        ("image", "pasted image", len(clip))
    ]


def test_several_selected_cells_become_several_chips(page: Any) -> None:
    new_conversation(page)
    click_cell(page, 3)
    click_cell(page, 4, shift=True)
    page.locator(ATTACH).click()
    chips = pending(page)
    chips.nth(1).wait_for()
    assert chips.count() == 2
    titles = [chips.nth(i).get_attribute("title") or "" for i in range(2)]
    assert FIRST in titles[0]
    assert SECOND in titles[1]
    clear_pending(page)
    # One cell clicked alone: that cell only.
    click_cell(page, 4)
    page.locator(ATTACH).click()
    chips.first.wait_for()
    assert chips.count() == 1
    assert SECOND in (chips.first.get_attribute("title") or "")
    clear_pending(page)
