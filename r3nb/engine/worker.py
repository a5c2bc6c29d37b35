"""The provider worker: a child process of the Jupyter server that runs litellm.

``python -m r3nb.engine.worker PARENT_PID``. It imports and warms up litellm (seconds of
GIL-holding C calls that would stall the server's loop), says ``ready``, then serves
stream requests from stdin (``worker_protocol``), each in its own task, answering on
stdout. Text a stream has at hand when the loop comes round is sent as one line, so
the server handles a line per burst of chunks, not per chunk.

It never outlives the server: stdin's end (the server exited, even by SIGKILL) ends
it, and on Linux the kernel kills it when its parent dies (``PR_SET_PDEATHSIG``), which
also covers the seconds of import before stdin is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from r3nb.errors import ProviderError

from . import redact, worker_litellm
from .worker_protocol import StreamRequest, model_from

#: A request line may carry a whole conversation (prompts are capped at 100k characters,
#: a branch may hold many): far more than asyncio's default 64 KiB line.
_LINE_LIMIT = 1 << 30
#: A stream that wrote no text for this long writes its next text at once (see _Outbox).
_HOLD_AFTER = 0.005
#: Seconds a cancelled stream reads on before its connection is closed (see _serve).
_CANCEL_GRACE = 0.05


def main() -> None:
    parent = int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()
    _die_with(parent)
    # Ctrl+C in the server's terminal is the server's to handle (it ends live replies
    # first, through us); a terminal's SIGINT must not end us under it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # stdout is the protocol: anything else printing there (a library's banner) would
    # corrupt it, so the protocol gets its own descriptor and fd 1 becomes stderr.
    out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        worker_litellm.preload().result()
    except BaseException as e:
        reason = redact.cut(f"litellm could not be loaded: {type(e).__name__}: {e}")
        os.write(out, _line({"op": "failed", "reason": reason}))
        raise SystemExit(1) from e
    asyncio.run(_serve(out))


def _die_with(parent: int) -> None:
    """Exit when ``parent`` does, whatever the way it dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            if os.getppid() == parent:
                return
            os._exit(0)  # the parent died before the request took effect
    # Elsewhere: look every half second (the import blocks stdin's EOF for seconds).

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="r3nb-worker-parent-watch", daemon=True).start()


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class _Outbox:
    """Lines to the server. A stream's text is written at once when that stream has
    written nothing for ``_HOLD_AFTER`` seconds (its first token, and every token of a
    provider pacing its tokens); inside a burst it is held until the loop comes round
    (every chunk already received has been parsed by then) and sent as one line.

    Held from the first token, a reply whose chunks arrived together waited for litellm
    to parse all of them (~0.35 ms each): 7 ms of first-token latency on 20 chunks."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self.pending: dict[int, list[str]] = {}
        self.scheduled = False
        self.written: dict[int, float] = {}  # stream → when its text was last written

    def text(self, rid: int, text: str) -> None:
        now = time.monotonic()
        if rid not in self.pending and now - self.written.get(rid, 0.0) >= _HOLD_AFTER:
            self.written[rid] = now
            self.transport.write(_line({"id": rid, "text": text}))
            return
        self.pending.setdefault(rid, []).append(text)
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def send(self, message: dict[str, Any]) -> None:
        """``message`` after the text of its stream that is still held."""
        rid = message.get("id")
        held = self.pending.pop(rid, None) if isinstance(rid, int) else None
        data = _line({"id": rid, "text": "".join(held)}) if held else b""
        if isinstance(rid, int) and "requested" not in message:
            self.written.pop(rid, None)  # the stream's last line
        self.transport.write(data + _line(message))

    def flush(self) -> None:
        self.scheduled = False
        if self.pending:
            now = time.monotonic()
            lines = [_line({"id": rid, "text": "".join(t)}) for rid, t in self.pending.items()]
            for rid in self.pending:
                self.written[rid] = now
            self.pending.clear()
            self.transport.write(b"".join(lines))


async def _run(outbox: _Outbox, request: StreamRequest) -> None:
    rid = request["id"]
    worker_litellm.demo_delay.set(request.get("demo_delay"))
    model = model_from(request["model"])
    key = model.params.get("api_key")
    if isinstance(key, str):
        redact.remember(key)  # no error text from this process may carry it
    try:
        async for item in worker_litellm.stream(model, model.params, request["messages"]):
            if isinstance(item, str):
                outbox.text(rid, item)
            elif isinstance(item, worker_litellm.Calling):
                outbox.send({"id": rid, "requested": True})
            else:
                outbox.send({"id": rid, "end": item})
    except asyncio.CancelledError:
        outbox.send({"id": rid, "cancelled": True})  # after the text it had: all of it
        raise
    except ProviderError as e:
        outbox.send({"id": rid, "error": e.reason})
    except Exception as e:  # a bug of ours: the reply still ends, with a reason
        reason = f"internal error in r3nb's provider worker: {type(e).__name__}: {e}"
        outbox.send({"id": rid, "error": redact.cut(reason)})


def _forget(tasks: dict[int, asyncio.Task[None]], rid: int, _: object) -> None:
    tasks.pop(rid, None)


async def _serve(out: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(out, "wb"))
    outbox = _Outbox(transport)
    tasks: dict[int, asyncio.Task[None]] = {}
    transport.write(_line({"op": "ready"}))
    while line := await reader.readline():
        message = json.loads(line)
        rid = message["id"]
        if message["op"] == "stream":
            task = asyncio.create_task(_run(outbox, message), name=f"r3nb-worker-{rid}")
            tasks[rid] = task
            task.add_done_callback(functools.partial(_forget, tasks, rid))
        elif message["op"] == "cancel" and rid in tasks:
            # Cancelling the task closes the provider's connection (litellm's stream
            # and its httpx response are closed as the cancellation unwinds them).
            # A moment's grace first: chunks the provider sent before the person
            # clicked Stop may still be in this socket; they are part of what was said.
            loop.call_later(_CANCEL_GRACE, tasks[rid].cancel)
    # stdin ended: the server is gone or stopping us. Nobody is left to read a reply.
    os._exit(0)


if __name__ == "__main__":
    main()
