"""ChatPanel: the anywidget whose JavaScript is the chat UI.

The kernel's jobs here are small: tell the page where the API is (``api_base``, same
origin as the page), which kernel this is (``kernel_id``: its panel follows its own
streams live) and the cadences; and relay API calls over the comm when the page cannot
reach the server directly (embedded mode, or no route). The relay works on background
threads so the comm handler returns at once, and paces deltas like ``%%chat`` does.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict
from urllib.parse import urlsplit

import anywidget
import traitlets

from r3nb.protocol import ENV_URL

from .client import (
    BaseClient,
    R3nbClientError,
    StreamStalled,
    kernel_id,
    set_current_conversation,
    split_path,
)
from .connect import get_client
from .live import Follower

log = logging.getLogger("r3nb.kernel")
_STATIC = Path(__file__).resolve().parent.parent / "static"
#: Relayed deltas are merged to at most this many comm messages a second per stream.
RELAY_RATE = 30.0
#: How a panel's ``text/plain`` begins: r3nb's JupyterLab extension recognises a saved
#: panel's output by it (labextension/src/stale_panel.js).
HINT_MARK = "r3nb chat panel"


def is_stream(method: str, path: str) -> bool:
    """The API calls that answer with server-sent events: a prompt (new, or an edited
    one), a regenerated reply, and following a message."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if method == "POST" and parts[:1] == ["conversations"] and parts[2:3] == ["messages"]:
        return len(parts) == 3 or (len(parts) == 5 and parts[4] in ("edit", "regenerate"))
    return method == "GET" and len(parts) == 3 and parts[::2] == ["messages", "stream"]


class ChatPanel(anywidget.AnyWidget):
    _esm = _STATIC / "widget.js"
    _css = _STATIC / "widget.css"

    api_base = traitlets.Unicode("").tag(sync=True)
    mode = traitlets.Unicode("server").tag(sync=True)
    conversation_id = traitlets.Unicode("").tag(sync=True)
    kernel_id = traitlets.Unicode("").tag(sync=True)
    #: 0: the server's cadence, which the page reads from ``GET health`` itself.
    snapshot_interval = traitlets.Float(0.0).tag(sync=True)
    idle_interval = traitlets.Float(10.0).tag(sync=True)
    #: "": the server's default model, which the page reads from ``GET models``.
    default_model = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self, conversation_id: str | None = None, client: BaseClient | None = None, **kwargs: Any
    ) -> None:
        # No HTTP here: the page asks the server for what it needs (health, models) on
        # its own route, so a panel shows at once, and shows its error state, instead of
        # the cell raising, while the server is slow or unreachable.
        self._client = client or get_client()
        settings: dict[str, Any] = {
            "mode": self._client.mode,
            "api_base": browser_api_base() if self._client.mode == "server" else "",
            "kernel_id": kernel_id() or "",
            "conversation_id": conversation_id or "",
        }
        super().__init__(**(settings | kwargs))
        self.on_msg(self._on_custom)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # The widget view stays as anywidget makes it; only ``text/plain`` changes: it is
        # what a saved notebook shows where no kernel holds the panel's model (nbviewer,
        # GitHub, nbconvert, a front end without widgets), and ipywidgets' repr of the
        # traits tells a person nothing there.
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, tuple):  # anywidget: (data, metadata)
            data, *rest = bundle
            return ({**data, "text/plain": reopen_hint(self.conversation_id)}, *rest)
        if isinstance(bundle, dict):  # ipywidgets' own form: data only
            return {**bundle, "text/plain": reopen_hint(self.conversation_id)}
        return bundle

    @traitlets.observe("conversation_id")
    def _conversation_changed(self, change: dict[str, Any]) -> None:
        # The page switched conversation: %%chat now talks into the one on screen.
        if change["new"]:
            set_current_conversation(change["new"])

    # --- the comm relay --------------------------------------------------------------

    def _on_custom(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "context":
            if content.get("op") == "complete":
                # Names and type names only, no object's code: safe on whichever thread
                # the comm arrives (JupyterLab 4.6 + ipykernel 7 use a subshell thread,
                # so completion works while a cell runs).
                self.send(answer_context(content))
            else:
                # Describing runs the objects' own code (_repr_llm_, head, repr): on the
                # main thread, between cells, never beside the person's running cell. A
                # busy kernel answers after its cell; the page gives up sooner and says so.
                on_main_thread(lambda: self.send(answer_context(content)))
            return
        if not isinstance(content, dict) or content.get("type") != "request":
            return
        method = str(content.get("method", "GET")).upper()
        path, _query = split_path(str(content.get("path", "")))
        if is_stream(method, path):
            # A stream holds its thread for the whole reply: its own, so that a long
            # reply never queues the polls and clicks behind it.
            threading.Thread(
                target=self._relay, args=(content,), name="r3nb-relay-stream", daemon=True
            ).start()
        else:
            # Polls come every couple of seconds from every panel: a few pooled threads,
            # not a new thread per request.
            _call_threads.submit(self._relay, content)

    def _relay(self, request: dict[str, Any]) -> None:
        rid = str(request.get("id", ""))
        method = str(request.get("method", "GET")).upper()
        path, query = split_path(str(request.get("path", "")))
        body = request.get("body")
        try:
            if is_stream(method, path):
                self._relay_stream(rid, method, path, body, query)
            else:
                status, data = self._client.call(method, path, body, query)
                self._respond(rid, status, data)
        except R3nbClientError as e:
            error: dict[str, Any] = {"error": e.message}
            if e.retry_after is not None:
                error["retry_after"] = e.retry_after
            self._respond(rid, e.status or 502, error)
        except StreamStalled:
            self._respond(rid, 504, {"error": "the r3nb server stopped answering"})
        except Exception as e:  # the page must get an answer, whatever went wrong here
            self._respond(rid, 500, {"error": f"relay failed: {type(e).__name__}: {e}"})

    def _relay_stream(
        self, rid: str, method: str, path: str, body: Any, query: dict[str, str]
    ) -> None:
        follower = Follower(lambda: self._client.events(method, path, body, query)).start()
        for batch in follower.batches(1.0 / RELAY_RATE):
            for name, data in batch:
                self.send({"type": "event", "id": rid, "event": name, "data": data})
        self.send({"type": "end", "id": rid})

    def _respond(self, rid: str, status: int, body: Any) -> None:
        self.send({"type": "response", "id": rid, "status": status, "body": body})


class ContextRequest(TypedDict):
    """The page asks its kernel about ``@name`` (js/src/kernel_context.js mirrors this)."""

    type: Literal["context"]
    id: str
    op: Literal["resolve", "complete"]
    prompt: NotRequired[str]  # resolve: the prompt whose ``@name``s to attach
    prefix: NotRequired[str]  # complete: what follows the ``@`` being typed


class ContextReply(TypedDict):
    type: Literal["context-reply"]
    id: str
    ok: bool
    error: NotRequired[str]  # a sentence for the person (an unknown name)
    attachments: NotRequired[list[dict[str, str]]]  # resolve
    names: NotRequired[list[dict[str, str]]]  # complete: [{name, type}]


def answer_context(request: dict[str, Any]) -> ContextReply:
    """``@name`` for the panel, from this kernel's user namespace, bounded the way
    ``%%chat`` bounds it (``context.describe``)."""
    from .context import ContextError, attachments_for, completions

    rid = str(request.get("id", ""))
    shell = _shell()
    namespace: dict[str, Any] = shell.user_ns if shell is not None else {}
    if request.get("op") == "complete":
        hidden = getattr(shell, "user_ns_hidden", {}) if shell is not None else {}
        names = completions(str(request.get("prefix", ""))[:200], namespace, hidden)
        return {"type": "context-reply", "id": rid, "ok": True, "names": names}
    try:
        attachments = attachments_for(str(request.get("prompt", "")), namespace)
    except ContextError as e:
        return {"type": "context-reply", "id": rid, "ok": False, "error": str(e)}
    return {"type": "context-reply", "id": rid, "ok": True, "attachments": attachments}


def on_main_thread(fn: Callable[[], None]) -> None:
    """Runs ``fn`` on the kernel's main thread: now when already there, else as a
    callback of its event loop (which runs between cells, or while an async cell awaits)."""
    loop = getattr(getattr(_shell(), "kernel", None), "io_loop", None)
    if threading.current_thread() is threading.main_thread() or loop is None:
        fn()
    else:
        loop.add_callback(fn)


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


class _CallThreads:
    """A few daemon threads that run relayed API calls in turn. Daemons, unlike a
    ThreadPoolExecutor's workers: a call still waiting on the server never holds up
    the kernel's exit."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._started = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if self._started < self._size:
                self._started += 1
                threading.Thread(target=self._work, name="r3nb-relay", daemon=True).start()
        self._queue.put(lambda: fn(*args))

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                job()
            except Exception:  # _relay answers the page itself; keep the thread for the next
                log.exception("r3nb: a relayed call failed")


#: Polls and clicks relayed for every panel of this kernel.
_call_threads = _CallThreads(4)


def reopen_hint(conversation_id: str) -> str:
    """What a panel's output says once its kernel is gone: the view lived in that kernel,
    the conversation is saved (by the server, or embedded mode's database), so ``%r3nb``
    brings it back. labextension/src/stale_panel.js says the same under the widget
    manager's "model not found"."""
    magic = f"%r3nb --conversation {conversation_id}" if conversation_id else "%r3nb"
    where = f" (conversation {conversation_id})" if conversation_id else ""
    return (
        f"{HINT_MARK}{where}: it shows only while the kernel that opened it runs. "
        f"To reopen it, run `%load_ext r3nb` and `{magic}`; the conversation is saved."
    )


def browser_api_base() -> str:
    """The API root as the page sees it: the path of ``R3NB_URL`` (same origin as the
    page, e.g. ``/user/alice/r3nb/api/``), so the page's own cookies and XSRF apply."""
    path = urlsplit(os.environ.get(ENV_URL, "")).path
    return path if path.endswith("/") else path + "/"
