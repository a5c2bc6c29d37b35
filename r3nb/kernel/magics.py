"""``%load_ext r3nb``, ``%r3nb`` (the panel) and ``%%chat`` (ask from a cell).

Loading must stay instant: this module imports only IPython (already loaded in any
kernel). The client, httpx, the widget and, in embedded mode, DuckDB and litellm load
on first use.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

#: Seconds between two live updates of a ``%%chat`` output: ≤ 20 display messages a
#: second, far under IOPub's ~1,000/s limit, still smooth to read.
UPDATE_INTERVAL = 0.05

LOADED_HINT = "r3nb loaded: `%r3nb` opens the chat panel, `%%chat` asks from a cell."


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(R3nbMagics)
    print(LOADED_HINT)


@magics_class
class R3nbMagics(Magics):
    @magic_arguments()
    @argument("--new", action="store_true", help="open a new conversation")
    @argument("--conversation", "-c", default=None, help="open this conversation id")
    @line_magic
    def r3nb(self, line: str) -> Any:
        """Show the chat panel (on the most recent conversation by default)."""
        args = parse_argstring(self.r3nb, line)
        from .view import in_terminal

        if in_terminal():
            _say(
                "the chat panel needs a notebook (JupyterLab, Notebook 7, VS Code); in a "
                "terminal, ask with %%chat or r3nb.chat('…')"
            )
            return None
        from .client import R3nbClientError, set_current_conversation
        from .connect import get_client

        try:
            client = _client()
            if args.new:
                cid = str(client.create_conversation()["id"])
            elif args.conversation:
                cid = args.conversation
                client.snapshot(cid, since=10**17)  # a clear 404 now, not in the panel
            else:
                from .client import conversation_or_latest

                # Showing the panel creates nothing: with no conversation yet it opens on
                # a draft, which its first message saves.
                try:
                    cid = conversation_or_latest(client, create=False)
                except R3nbClientError as e:
                    if e.status != 404:
                        raise
                    cid = ""
            if cid:
                set_current_conversation(cid)
            from .panel import ChatPanel

            return ChatPanel(conversation_id=cid, client=get_client())
        except R3nbClientError as e:
            _say(e.message)
            return None

    @magic_arguments()
    @argument("--model", "-m", default=None, help="model name (see the panel's list)")
    @argument("--conversation", "-c", default=None, help="conversation id (default: current)")
    @argument("--bg", action="store_true", help="return at once; the reply streams meanwhile")
    @cell_magic
    def chat(self, line: str, cell: str) -> None:
        """Send the cell to the current conversation and stream the reply below it.
        ``@name`` attaches a description of the kernel variable ``name``."""
        args = parse_argstring(self.chat, line)
        prompt = cell.strip()
        if not prompt:
            _say("the cell is empty: write a prompt below %%chat")
            return
        from .context import ContextError, attachments_for

        try:
            attachments = attachments_for(prompt, self.shell.user_ns if self.shell else {})
        except ContextError as e:
            _say(str(e))
            return
        from .client import R3nbClientError

        try:
            run_chat(prompt, args.model, args.conversation, attachments, background=args.bg)
        except R3nbClientError as e:
            _say(e.message)


def run_chat(
    prompt: str,
    model: str | None,
    conversation: str | None,
    attachments: list[dict[str, str]],
    *,
    background: bool = False,
) -> Any:
    """Send, then show the reply live in this cell's output (or from a thread)."""
    import contextvars

    from .client import conversation_or_latest, kernel_id
    from .live import Follower
    from .view import ReplyView, TerminalReplyView, in_terminal

    client = _client()
    cid = conversation_or_latest(client, conversation)
    follower = Follower(
        lambda: client.send_events(cid, prompt, model, kernel_id(), attachments)
    ).start()
    kind = TerminalReplyView if in_terminal() else ReplyView
    try:
        view = kind(model)
    except KeyboardInterrupt:
        # The reply is already on its way (the follower started it): an interrupt that
        # lands before the view can follow still means "stop it", not a traceback and a
        # reply running on unseen (measured in CI: Ctrl+C during the first display).
        view = kind(model)
        view.stop_requested()
    global last_reply
    last_reply = view
    if background:
        context = contextvars.copy_context()
        threading.Thread(
            target=context.run, args=(view.follow, follower, client, UPDATE_INTERVAL),
            name="r3nb-chat-bg", daemon=True,
        ).start()  # fmt: skip
        return view
    view.follow(follower, client, UPDATE_INTERVAL)
    return view


_announced = False
#: The reply of the latest ``%%chat`` (``.done`` is a threading.Event, ``.final`` the
#: message): lets a later cell wait for a ``--bg`` reply.
last_reply: Any = None


def _client() -> Any:
    """The kernel's client; says once where conversations live in embedded mode."""
    global _announced
    from .connect import get_client

    client = get_client()
    if not _announced and client.mode == "embedded":
        _announced = True
        note = getattr(client, "note", "")
        print(
            note
            or f"r3nb: no r3nb server reachable; running in this kernel "
            f"(store: {getattr(client, 'db_path', '?')})"
        )
    return client


def _say(message: str) -> None:
    """A short, readable error: no traceback for things a person can fix."""
    print(f"r3nb: {message}", file=sys.stderr)
