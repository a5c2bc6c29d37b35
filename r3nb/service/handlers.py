"""The service's one HTTP handler: resolve the token pair, guard, dispatch, write.

The same route table as the single-user extension (``engine/api.py``) plus
``conversations/{cid}/shares``. Token-authenticated only: there are no cookies here, so
no XSRF check applies and a browser page cannot ride on a session.
"""

from __future__ import annotations

import json
from typing import Any

from tornado import web

from r3nb.engine.api import (
    BytesReply,
    Call,
    JsonReply,
    Reply,
    StreamReply,
    TextReply,
    dispatch,
)
from r3nb.engine.core import Caller, Engine
from r3nb.errors import R3nbError
from r3nb.protocol import json_text
from r3nb.server.documents import read_body, read_query, send_bytes, send_events, send_text

from .access import Guard
from .identity import Identities
from .pacing import paced
from .wire import PERSON_HEADER

#: Methods whose JSON body is read: DELETE too, for revoking a share (its body names it).
_WITH_BODY = ("POST", "PATCH", "DELETE")

_TOKEN_PREFIXES = ("token ", "bearer ")


class ServiceHandler(web.RequestHandler):
    def initialize(
        self, engine: Engine, identities: Identities, guard: Guard, delta_interval: float = 0.0
    ) -> None:
        self.engine = engine
        self.identities = identities
        self.guard = guard
        self.delta_interval = delta_interval

    async def get(self, path: str) -> None:
        await self._serve(path)

    async def post(self, path: str) -> None:
        await self._serve(path)

    async def patch(self, path: str) -> None:
        await self._serve(path)

    async def delete(self, path: str) -> None:
        await self._serve(path)

    async def _serve(self, path: str) -> None:
        try:
            visit = await self.identities.visit(
                _bearer(self.request.headers.get("Authorization", "")),
                self.request.headers.get(PERSON_HEADER) or None,
            )
            call = Call(
                method=self.request.method or "GET",
                path=path,
                query=read_query(self),
                body=read_body(self, self.engine.settings.max_prompt_chars, _WITH_BODY),
                caller=Caller(
                    visit.person.name,
                    visit.source,
                    visit.person.admin,
                    frozenset(visit.person.groups),
                ),
            )
            reply: Reply | None = await self.guard.shares(visit, call)
            if reply is None:
                await self.guard.check(visit, call)
                reply = await self.guard.after(visit, call, await dispatch(self.engine, call))
        except R3nbError as e:
            self._send_r3nb_error(e)
            return
        if isinstance(reply, JsonReply):
            self.set_status(reply.status)
            self.set_header("Content-Type", "application/json")
            self.finish(json_text(reply.body))
        elif isinstance(reply, TextReply):
            send_text(self, reply)
        elif isinstance(reply, BytesReply):
            send_bytes(self, reply)
        else:
            await self._send_events(reply)

    async def _send_events(self, reply: StreamReply) -> None:
        events = paced(reply.events, self.delta_interval)
        await send_events(self, events, self._send_r3nb_error, reply.compressible)

    def _send_r3nb_error(self, error: R3nbError) -> None:
        self.send_error(error.status, exc_info=(type(error), error, None))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error is ``{"error": message}``: never HTML, never a traceback."""
        error = kwargs.get("exc_info", (None, None))[1]
        extra: dict[str, Any] = {}
        if isinstance(error, R3nbError):
            message, extra = error.message, error.extra
            for name, value in error.headers.items():
                self.set_header(name, value)
        elif isinstance(error, web.HTTPError) and status_code < 500:
            message = error.log_message or self._reason
        elif status_code >= 500:
            message = "internal error in the r3nb service; its log has the details"
        else:
            message = self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message, **extra}))


def _bearer(header: str) -> str | None:
    for prefix in _TOKEN_PREFIXES:
        if header[: len(prefix)].lower() == prefix:
            return header[len(prefix) :].strip() or None
    return None


class NotFoundHandler(web.RequestHandler):
    """Anything outside the API: JSON 404, like the API's own."""

    def prepare(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": "not an r3nb service route"}))
