"""Writing a reply that is not JSON nor an event stream (a CSV report), for the
extension's handler and the hub service's alike (tornado only: no jupyter_server)."""

from __future__ import annotations

from typing import Any

from tornado import web

from r3nb.engine.api import TextReply


def send_text(handler: web.RequestHandler, reply: TextReply, **finish: Any) -> None:
    """The document, saved by a browser under its own file name, never sniffed.
    ``finish``: what the handler's own ``finish`` needs to keep the type (jupyter_server's
    ``APIHandler`` sets JSON unless told ``set_content_type``)."""
    handler.set_header("Content-Type", reply.content_type)
    handler.set_header("Content-Disposition", f'attachment; filename="{reply.filename}"')
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.finish(reply.text, **finish)
