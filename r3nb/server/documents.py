"""The HTTP side the extension's handler and the hub service's share (tornado only: no
jupyter_server): reading a request's query and JSON body into a ``Call``'s parts, and
writing what is not a JSON reply — event streams, and documents such as a CSV report."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from tornado import web
from tornado.iostream import StreamClosedError

from r3nb.engine import images
from r3nb.engine.api import BytesReply, TextReply
from r3nb.engine.streams import Event
from r3nb.engine.watch_frames import Encoded
from r3nb.errors import BadRequest, PayloadTooLarge, R3nbError
from r3nb.protocol import SSE_HEARTBEAT, parse_json_body, sse_frame
from r3nb.sse_gzip import GzipBody, accepts_gzip, deflated

#: Bodies are JSON prompts; anything far larger than the prompt limit is refused unread.
_BODY_SLACK = 64 * 1024
#: How long a stopping server waits for its event streams' last events (``drain``): a
#: few loop turns normally; more only for a client that stopped reading.
DRAIN_SECONDS = 3.0
#: Event streams being written (``send_events``), each done when its response ended.
_open: set[asyncio.Future[None]] = set()
#: The keep-alive as a gzip segment (compressed once).
_HEARTBEAT_DEFLATED = deflated(SSE_HEARTBEAT)


async def drain(timeout: float = DRAIN_SECONDS) -> None:
    """Wait (at most ``timeout`` s) until every event stream has written its last event.
    A stopping server calls this after ending its replies and watches: their ``done``
    (or ``error``) is still on its way through the loop, and a loop stopped before it
    is written leaves a client with a stream that just broke off."""
    if _open:
        await asyncio.wait(set(_open), timeout=timeout)


def read_query(handler: web.RequestHandler) -> dict[str, str]:
    """The query string's arguments (the last of each); 400 when it is not UTF-8."""
    try:
        return {
            key: handler.decode_argument(values[-1], name=key)
            for key, values in handler.request.query_arguments.items()
        }
    except web.HTTPError as e:
        raise BadRequest("the query string is not valid UTF-8") from e


def read_body(handler: web.RequestHandler, max_prompt_chars: int, methods: tuple[str, ...]) -> Any:
    """The JSON body of a request whose method is one of ``methods`` (None otherwise, or
    when empty): 413 unread when far over the prompt limit, 400 when not UTF-8 JSON."""
    raw = handler.request.body
    if handler.request.method not in methods or not raw:
        return None
    if len(raw) > max_prompt_chars * 4 + _BODY_SLACK + images.MAX_UPLOAD_CHARS:
        raise PayloadTooLarge(f"the request body has {len(raw):,} bytes; far over the limit")
    try:
        return parse_json_body(raw)
    except UnicodeDecodeError as e:
        raise BadRequest("the request body is not valid UTF-8") from e
    except ValueError as e:
        raise BadRequest(str(e)) from None


def send_text(handler: web.RequestHandler, reply: TextReply, **finish: Any) -> None:
    """The document, saved by a browser under its own file name, never sniffed.
    ``finish``: what the handler's own ``finish`` needs to keep the type (jupyter_server's
    ``APIHandler`` sets JSON unless told ``set_content_type``)."""
    handler.set_header("Content-Type", reply.content_type)
    handler.set_header("Content-Disposition", f'attachment; filename="{reply.filename}"')
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.finish(reply.text, **finish)


def send_bytes(handler: web.RequestHandler, reply: BytesReply, **finish: Any) -> None:
    """An image the page shows (its type checked by its bytes when stored), never
    sniffed, never a document that could run anything, cached by the browser (an
    attachment never changes)."""
    handler.set_header("Content-Type", reply.content_type)
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Content-Security-Policy", "default-src 'none'; sandbox")
    handler.set_header("Cache-Control", "private, max-age=86400, immutable")
    handler.finish(reply.data, **finish)


def wants_gzip(handler: web.RequestHandler, compressible: bool) -> bool:
    """Whether this stream goes out gzip-encoded (``sse_gzip``): a compressible one (a
    watch) to a client whose ``Accept-Encoding`` takes gzip. (A relay asks the same of
    what it passes back.)"""
    if not compressible:
        return False
    handler.set_header("Vary", "Accept-Encoding")
    return accepts_gzip(handler.request.headers.get("Accept-Encoding"))


async def send_events(
    handler: web.RequestHandler,
    events: AsyncIterator[Event],
    send_error: Callable[[R3nbError], None],
    compressible: bool = False,
) -> None:
    """Write server-sent events until the stream ends (``done``, or a watch's end). A
    client that goes away only ends this response: the stream itself goes on and is
    persisted. ``send_error``: the handler's JSON error, for a failure before the first
    byte (after it, an ``error`` event). ``compressible``: gzip-encoded for a client
    that takes it (``wants_gzip``)."""
    body = GzipBody() if wants_gzip(handler, compressible) else None
    ended = asyncio.get_running_loop().create_future()
    _open.add(ended)
    try:
        await _write_events(handler, events, send_error, body)
    finally:
        _open.discard(ended)
        ended.set_result(None)


def write_encoded(
    handler: web.RequestHandler, body: GzipBody | None, raw: bytes, compressed: bytes | None = None
) -> None:
    """Write ``raw`` as is, or as the next segment of ``body`` (``compressed``: its
    segment when made once for many streams)."""
    if body is None:
        handler.write(raw)
        return
    if not body.started:  # set here, so an error sent before any byte is plain JSON
        handler.set_header("Content-Encoding", "gzip")
    handler.write(body.segment(raw, compressed))


async def _write_events(
    handler: web.RequestHandler,
    events: AsyncIterator[Event],
    send_error: Callable[[R3nbError], None],
    body: GzipBody | None,
) -> None:
    handler.set_header("Content-Type", "text/event-stream; charset=utf-8")
    handler.set_header("Cache-Control", "no-cache, no-transform")
    handler.set_header("X-Accel-Buffering", "no")  # proxies must not buffer the stream
    # Each event is a small write: with Nagle's algorithm on, one written while the
    # previous is unacknowledged waits for the reader's delayed ACK (measured: the
    # first delta 20 ms late whenever the provider's first token came after `start`).
    # (tornado's HTTPServer resets it between requests on a kept-alive connection.)
    stream = getattr(handler.request.connection, "stream", None)
    if stream is not None:
        stream.set_nodelay(True)
    try:
        async for name, data in events:
            if name == "heartbeat":
                write_encoded(handler, body, SSE_HEARTBEAT, _HEARTBEAT_DEFLATED)
            elif isinstance(data, Encoded):  # a watch frame, encoded once for all watchers
                if not data.sse:
                    continue  # its bytes went out with the frame's first event
                write_encoded(handler, body, data.sse, data.deflated() if body else None)
            else:
                write_encoded(handler, body, sse_frame(name, data), None)
            # Awaiting the flush is the back-pressure: a reader that stops reading
            # stalls only this loop, never the stream or the server's memory.
            await handler.flush()
    except StreamClosedError:
        return
    except R3nbError as e:
        if not handler._headers_written:
            send_error(e)
            return
        write_encoded(handler, body, sse_frame("error", {"error": e.message}), None)
    finally:
        await cast(Any, events).aclose()
    if not handler._finished:
        if body is not None:
            handler.write(body.end())
        with contextlib.suppress(StreamClosedError):
            await handler.finish()
