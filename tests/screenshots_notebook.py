"""The README's screenshots of the notebook actions (issue 17), for ``make screenshots``.

A script, not a test (the suite's browser tests check the same actions; taking these
costs ``make test`` nothing): a real JupyterLab with r3nb and its extension, the local
fake provider, headless Chromium, light theme. Writes into docs/screenshots/:

- ``cell-actions.png``: a reply's code block with Insert below, Replace cell, Insert & run;
- ``mentions.png``: the ``@name`` completion list while typing in the panel;
- ``ask-r3nb.png``: "Ask r3nb" under a cell whose run failed, after the click;
- ``attachments.png``: the question it prepared, sent, with its chips, and the reply
  offering "Replace cell [n]".

Run: ``python -m tests.screenshots_notebook [OUTPUT_DIR]`` from the repository's root.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from tests.lab import (
    CHROMIUM,
    CHROMIUM_ARGS,
    MESSAGES,
    Guard,
    message,
    open_notebook,
    run_all_and_wait_for_panel,
    running_lab,
    send,
    wait_status,
    write_notebook,
)
from tests.provider import FakeProvider, Scenario

OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
VARIABLES = """\
sales = {"north": 12_400, "south": 9_870, "east": 11_020}
sales_by_month = [("2026-01", 8_100), ("2026-02", 9_300), ("2026-03", 15_890)]
season = "spring"
"""
FAILING = 'growth = sales["west"] / sales["north"]'
CODE_REPLY = """\
Sort the totals and plot them as bars:

```python
import matplotlib.pyplot as plt

regions = sorted(sales, key=sales.get, reverse=True)
plt.bar(regions, [sales[r] for r in regions])
plt.title("Revenue per region")
```
"""
FIX_REPLY = """\
`sales` has no `"west"` key (only north, south and east). Use `.get` with a default:

```python
growth = sales.get("west", 0) / sales["north"]
```
"""


def shoot(locator: Any, path: Path) -> None:
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(path), animations="disabled")
    print(f"wrote {path}")


def shoot_between(page: Any, top: Any, bottom: Any, path: Path, margin: int = 6) -> None:
    """One shot from `top`'s top to `bottom`'s bottom, across the panel's width (both in
    the panel's message list, scrolled so that `top` is at its top)."""
    top.evaluate("(el) => el.scrollIntoView({block: 'start'})")
    panel = page.locator(".r3nb-root").bounding_box()
    shown = page.locator(".r3nb-root .r3nb-list").bounding_box()
    a, b = top.bounding_box(), bottom.bounding_box()
    y0 = max(a["y"] - margin, shown["y"])
    y1 = min(b["y"] + b["height"] + margin, shown["y"] + shown["height"])
    clip = {"x": panel["x"], "y": y0, "width": panel["width"], "height": y1 - y0}
    page.screenshot(path=str(path), clip=clip, animations="disabled")
    print(f"wrote {path}")


def take(page: Any, provider: FakeProvider, out: Path) -> None:
    box = page.locator(".r3nb-root .r3nb-input")

    # @name: the kernel's variables, completed while typing.
    box.click()
    box.press_sequentially("Plot @sa")
    page.locator(".r3nb-root .r3nb-mentions [role=option]").first.wait_for(state="visible")
    page.locator(".r3nb-root .r3nb-mention[data-name=sales_by_month]").wait_for()
    shoot(page.locator(".r3nb-root .r3nb-composer"), out / "mentions.png")
    page.keyboard.press("Tab")
    box.press_sequentially("per region as bars")

    # A reply's code block, its cell buttons shown as the pointer over it shows them.
    provider.scenario = Scenario(text=CODE_REPLY, delay=0.002)
    mid = send(page, box.input_value())
    wait_status(page, mid, "complete")
    reply = message(page, mid)
    code = reply.locator(".r3nb-code").first
    code.locator(".r3nb-cell-actions").wait_for(state="visible")
    code.hover()
    shoot(reply, out / "cell-actions.png")

    # Ask r3nb under the failed cell: the question is prepared in the panel, not sent.
    failing = page.locator(".jp-Notebook .jp-Cell").nth(3)
    failing.locator(".r3nb-ask-button").click()
    failing.locator(".r3nb-ask [role=status]").filter(has_text="press Send").wait_for()
    page.mouse.move(0, 0)
    shoot(failing, out / "ask-r3nb.png")

    # Sent: the chips on the message, and the reply's "Replace cell [n]".
    provider.scenario = Scenario(text=FIX_REPLY, delay=0.002)
    mid = send(page, box.input_value())
    wait_status(page, mid, "complete")
    reply = message(page, mid)
    reply.locator("[data-action=replace-cell]").wait_for(state="visible")
    user = page.locator(f"{MESSAGES}[data-role=user]").last
    reply.locator(".r3nb-code").first.hover()
    shoot_between(page, user, reply, out / "attachments.png")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    guard = Guard()
    workdir = Path(tempfile.mkdtemp(prefix="r3nb-shots-"))
    with (
        FakeProvider() as provider,
        running_lab(workdir, provider.url) as lab,
        sync_playwright() as pw,
    ):
        cid = lab.create_conversation("Revenue per region")
        write_notebook(
            lab.root / "sales.ipynb",
            ["%load_ext r3nb", f"%r3nb --conversation {cid}", VARIABLES, FAILING],
        )
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = guard.new_page(browser)
            open_notebook(page, lab.lab_url("sales.ipynb", "shots"))
            run_all_and_wait_for_panel(page)
            try:
                take(page, provider, out)
            except Exception:
                page.screenshot(path=str(workdir / "failed.png"))
                print(f"failed: see {workdir} (failed.png, jupyterlab.log)", file=sys.stderr)
                raise
        finally:
            browser.close()
    if guard.blocked or guard.dialogs:
        raise SystemExit(f"outside requests {guard.blocked}, dialogs {guard.dialogs}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
