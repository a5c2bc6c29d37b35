"""Nothing a person saw is lost when the server is stopped by a signal.

A JupyterHub stops a single-user server with SIGTERM or SIGINT; from a terminal it is
Ctrl+C. Without this, what a streaming reply had gained since its last flush (up to
``snapshot_interval`` of text that pages already showed) was lost: SIGINT outside a
terminal raises ``KeyboardInterrupt`` and skips every shutdown hook, and even SIGTERM's
orderly stop ended the streams only after the HTTP server and kernels were being torn
down. Here the first SIGTERM/SIGINT ends every live stream first, with its whole text
and status ``error`` ("interrupted: the server was stopped"), then lets the server stop
as jupyter_server would. kill -9 cannot be caught: it may still lose up to one flush
interval of text (start-up recovery then settles the rows).

An interactive Ctrl+C (jupyter_server asks "Shut down this Jupyter server?") is left
to jupyter_server: a "no" must not have ended anyone's reply. A confirmed shutdown
runs the extension's stop hook, which ends the streams the same way.
"""

from __future__ import annotations

import asyncio
import signal
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import R3nbApp

REASON = "interrupted: the server was stopped"
#: How long ending the streams may take before the server stops regardless.
FLUSH_TIMEOUT = 10.0


def install(app: R3nbApp) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if previous == signal.SIG_IGN:
            continue  # whoever started us wants this signal ignored
        if sig == signal.SIGINT and getattr(previous, "__name__", "") == "_handle_sigint":
            continue  # interactive: jupyter_server asks first (see the module docstring)
        signal.signal(sig, _Handler(app, previous))


class _Handler:
    def __init__(self, app: R3nbApp, previous: Any) -> None:
        self.app = app
        self.previous = previous
        self.fired = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        serverapp = self.app.serverapp
        if self.fired or serverapp is None or serverapp.io_loop is None:
            self._chain(signum, frame)  # a second signal: do what it did before us
            return
        self.fired = True
        self.app.log.warning("r3nb: signal %d: ending live replies, then stopping", signum)
        serverapp.io_loop.add_callback_from_signal(self._end_then_stop, signum, frame)

    async def _end_then_stop(self, signum: int, frame: FrameType | None) -> None:
        try:
            await asyncio.wait_for(self.app.engine.interrupt(REASON), FLUSH_TIMEOUT)
        except Exception:
            self.app.log.exception("r3nb: could not end every live reply before stopping")
        finally:
            # jupyter_server's own orderly stop (what its SIGTERM handler does), also for
            # a SIGINT that would otherwise raise KeyboardInterrupt and skip every hook.
            if self.app.serverapp is not None:
                self.app.serverapp.stop()

    def _chain(self, signum: int, frame: FrameType | None) -> None:
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
