"""One reply shown in a cell's output: live while it streams, rendered when it is done.

The output is a single display (``display_id``) updated in place at a paced rate, so a
reply of any speed costs a few dozen IOPub messages a second. Interrupting the cell asks
the server to cancel; the partial text stays, with status ``cancelled``.

An update resends the whole text (a display cannot be appended to), so resending it at a
fixed rate would cost IOPub bytes quadratic in the reply's length (44 MB for a 230 KB
reply) and trip the server's IOPub data rate limit (1 MB/s). So live updates carry only
``text/html`` (what frontends render; ``text/plain`` comes with the final render) and
their interval grows with what the last one cost: at most ``LIVE_BYTES_PER_SECOND`` of
live updates, i.e. 20 a second while the HTML is under 5 KB, one every 2 s at 200 KB.

The reply is untrusted and frontends run trusted output's HTML (and the HTML its Markdown
becomes) as-is: so the kernel sends only HTML it rendered itself (``render.py``, the
panel's rules), never ``text/markdown``, and error text goes out escaped.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from . import render
from .client import BaseClient, R3nbClientError
from .live import Event, Follower

#: Bytes per second that live updates may cost at most (each carries the whole text).
LIVE_BYTES_PER_SECOND = 100_000


class ReplyView:
    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.text = ""
        self.message: dict[str, Any] | None = None  # the assistant message (start, done)
        self.final: dict[str, Any] | None = None
        self.error: str | None = None
        self.updates = 0
        self._shown: tuple[str, str | None] | None = None  # (text, model) last rendered live
        self._live_bytes = 0  # size of the last live update: what the next one will cost
        self._cancel_wanted = False
        self._cancel_sent = False
        self.left_out = 0  # earlier turns the server left out to fit the context window
        self.done = threading.Event()  # set once the final render went out
        self._show_waiting()

    def _show_waiting(self) -> None:
        from IPython.display import display

        waiting = {"text/html": render.reply_html("", note="…waiting for the model"),
                   "text/plain": "…"}  # fmt: skip
        self.handle = display(waiting, raw=True, display_id=True)

    # --- following -------------------------------------------------------------------

    def stop_requested(self) -> None:
        """Someone interrupted before following began: cancel the reply as soon as its
        id is known (the ``start`` event), as a first interrupt while following does."""
        self._cancel_wanted = True

    def follow(self, follower: Follower, client: BaseClient, interval: float) -> None:
        """Render until the reply ends, at most once per ``interval`` seconds and less
        often as the text grows. A first interrupt cancels the reply server-side; a
        second one stops following (the reply still ends server-side)."""

        def pace() -> float:
            return max(interval, self._live_bytes / LIVE_BYTES_PER_SECOND)

        while True:
            try:
                for batch in follower.batches(pace):
                    self._apply(batch)
                    self._cancel_if_wanted(client)
                    if self.final is None:
                        self._render_live()
                break
            except KeyboardInterrupt:
                if self._cancel_wanted:
                    follower.stop()
                    self.error = "stopped following; the reply ends on the server"
                    break
                self._cancel_wanted = True
                self._cancel_if_wanted(client)
            except R3nbClientError as e:
                self.error = e.message
                break
        self._render_final()
        self.done.set()

    def _apply(self, batch: list[Event]) -> None:
        for name, data in batch:
            if name == "start":
                self.message = data["assistant_message"]
                self.left_out = int(data.get("context_left_out") or 0)
            elif name == "delta":
                self.text = self.text[: data["offset"]] + data["text"]
            elif name == "done":
                self.final = data["message"]
                self.text = self.final["content"]

    def _cancel_if_wanted(self, client: BaseClient) -> None:
        if not self._cancel_wanted or self._cancel_sent or self.message is None:
            return
        self._cancel_sent = True
        try:
            final = client.cancel(self.message["id"])
        except R3nbClientError as e:
            print(f"r3nb: could not cancel: {e.message}", file=sys.stderr)
            return
        if final.get("status") != "streaming":
            self.final = final
            self.text = final["content"]

    # --- rendering -------------------------------------------------------------------

    def _render_live(self) -> None:
        model = (self.message or {}).get("model") or self.model or ""
        if self._shown == (self.text, model):
            return  # a heartbeat or an empty batch: nothing new to show
        self._shown = (self.text, model)
        note = f"{model} · streaming…" if model else "streaming…"
        html = render.reply_html(self.text, note=note)
        self._live_bytes = len(html)
        self._update({"text/html": html})

    def _render_final(self) -> None:
        if self.final is None:
            reason = self.error or "the reply did not finish"
            html = render.reply_html(self.text, note=reason, note_label="r3nb:")
            plain = f"{self.text}\n\nr3nb: {reason}"
        else:
            text, note = self.final["content"], footer(self.final, self.left_out)
            html, plain = render.reply_html(text, note=note), f"{text}\n\n{note}"
        self._update({"text/html": html, "text/plain": plain})

    def _update(self, bundle: dict[str, str]) -> None:
        self.updates += 1
        self.handle.update(bundle, raw=True)


def footer(message: dict[str, Any], left_out: int = 0) -> str:
    """``model · status · tokens · cost``: what a person checks after a reply (and how
    many earlier turns were not sent, when the context window made that necessary)."""
    parts = [str(message.get("model") or "?")]
    status = message.get("status") or "?"
    parts.append(f"{status}: {message['error']}" if message.get("error") else status)
    prompt, completion = message.get("prompt_tokens"), message.get("completion_tokens")
    if prompt is not None or completion is not None:
        parts.append(f"{prompt or 0} → {completion or 0} tokens")
    cost = message.get("cost")
    parts.append(format_cost(cost) if isinstance(cost, int | float) else "cost unknown")
    if left_out:
        parts.append(
            f"{left_out} earlier turn{'s' if left_out != 1 else ''} not sent (context window)"
        )
    return " · ".join(parts)


def format_cost(cost: float) -> str:
    """US dollars the way the panel shows them (js/src/dom.js ``formatCost``; a test
    holds the two to the same output)."""
    if cost == 0:
        return "$0"
    if cost < 0.0001:
        return "<$0.0001"
    return f"${cost:.4f}" if cost < 1 else f"${cost:.2f}"


class TerminalReplyView(ReplyView):
    """The same reply in a terminal IPython (no frontend renders displays there): the
    text is written to stdout as it arrives, then the footer line."""

    def _show_waiting(self) -> None:
        self._written = 0

    def _render_live(self) -> None:
        fresh = self.text[self._written :]
        if fresh:
            sys.stdout.write(fresh)
            sys.stdout.flush()
            self._written = len(self.text)

    def _render_final(self) -> None:
        self._render_live()
        note = (
            footer(self.final, self.left_out)
            if self.final
            else f"r3nb: {self.error or 'the reply did not finish'}"
        )
        self.updates += 1
        sys.stdout.write(f"\n\n[{note}]\n")
        sys.stdout.flush()


def in_terminal() -> bool:
    """True in a terminal IPython (no kernel, so no frontend to render displays)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is None
