"""HTTP transport of r3nb's API (the route table itself lives in ``engine/api.py``).

One thin handler: authenticate (jupyter_server's own auth, or the kernel secret),
turn the request into a ``Call``, ``dispatch`` it, write JSON or server-sent events.
Errors are translated in one place (``write_error``) to ``{"error": message}``.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, cast

from jupyter_server.auth.decorator import authorized
from jupyter_server.auth.identity import User
from jupyter_server.base.handlers import APIHandler
from tornado import web

from r3nb.engine.api import BytesReply, Call, JsonReply, StreamReply, TextReply, dispatch
from r3nb.engine.core import Caller, Engine
from r3nb.errors import R3nbError
from r3nb.protocol import SECRET_HEADER, json_text

from .documents import read_body, read_query, send_bytes, send_events, send_text


class _AllowKernel:
    """Authorizer for kernel-secret calls: the secret is the owner's own credential
    (only processes the owner's server started inherit it), so every action is allowed."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return True


def _personless(identity_provider: object) -> bool:
    """jupyter_server's own providers (token, password) know the token holder only."""
    return type(identity_provider).__module__.startswith("jupyter_server.auth")


class R3nbHandler(APIHandler):
    auth_resource = "r3nb"
    _kernel_call = False

    @property
    def engine(self) -> Engine:
        return cast(Engine, self.settings["r3nb_engine"])

    async def prepare(self) -> None:  # type: ignore[override]
        secret = self.request.headers.get(SECRET_HEADER)
        if secret is None:
            await super().prepare()
            return
        expected = self.settings.get("r3nb_secret", "")
        if not expected or not hmac.compare_digest(secret.encode(), expected.encode()):
            self._kernel_call = False
            self.current_user = self._jupyter_current_user = None
            raise web.HTTPError(403, "wrong r3nb kernel secret")
        owner = self.settings["r3nb_owner"]
        self._kernel_call = True
        self.current_user = self._jupyter_current_user = User(username=owner, name=owner)

    def check_xsrf_cookie(self) -> None:
        # A valid kernel secret is a credential no browser page holds: no XSRF risk.
        if self._kernel_call:
            return None
        return super().check_xsrf_cookie()

    @property
    def authorizer(self) -> Any:
        return _AllowKernel() if self._kernel_call else super().authorizer

    def caller(self) -> Caller:
        owner = cast(str, self.settings["r3nb_owner"])
        admins = cast(frozenset[str], self.settings["r3nb_admins"])
        name = owner
        if not self._kernel_call and not _personless(self.identity_provider):
            # A real identity (JupyterHub, or any custom provider). jupyter_server's
            # default provider knows no people, only the token holder (it invents
            # "Anonymous …" names per browser): that person is the owner.
            name = str(getattr(self.current_user, "username", None) or owner)
        return Caller(name, "kernel" if self._kernel_call else "user", name in admins)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error is a ``protocol.ErrorBody``: never HTML, never a traceback."""
        error: BaseException | None = kwargs.get("exc_info", (None, None))[1]
        extra: dict[str, Any] = {}
        if isinstance(error, R3nbError):
            message, extra = error.message, error.extra
            for name, value in error.headers.items():  # send_error cleared them
                self.set_header(name, value)
        elif isinstance(error, web.HTTPError):
            message = error.log_message or error.reason or self._reason
            if error.args and "%" in message:
                message = message % error.args
        elif status_code >= 500:
            message = "internal error in r3nb; the server log has the details"
        else:
            message = self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message, **extra}))

    def send_r3nb_error(self, error: R3nbError) -> None:
        self.send_error(error.status, exc_info=(type(error), error, None))


class ApiHandler(R3nbHandler):
    @web.authenticated
    @authorized
    async def get(self, path: str) -> None:
        await self._serve(path)

    @web.authenticated
    @authorized
    async def post(self, path: str) -> None:
        await self._serve(path)

    @web.authenticated
    @authorized
    async def patch(self, path: str) -> None:
        await self._serve(path)

    @web.authenticated
    @authorized
    async def delete(self, path: str) -> None:
        await self._serve(path)

    async def _serve(self, path: str) -> None:
        try:
            call = Call(
                method=self.request.method or "GET",
                path=path,
                query=read_query(self),
                body=read_body(self, self.engine.settings.max_prompt_chars, ("POST", "PATCH")),
                caller=self.caller(),
            )
            reply = await dispatch(self.engine, call)
        except R3nbError as e:
            self.send_r3nb_error(e)
            return
        if isinstance(reply, JsonReply):
            self.set_status(reply.status)
            self.finish(json_text(reply.body))
        elif isinstance(reply, TextReply):
            send_text(self, reply, set_content_type=reply.content_type)
        elif isinstance(reply, BytesReply):
            send_bytes(self, reply, set_content_type=reply.content_type)
        else:
            await self._send_events(reply)

    async def _send_events(self, reply: StreamReply) -> None:
        await send_events(self, reply.events, self.send_r3nb_error, reply.compressible)


# Every route of the API goes through ApiHandler; engine/api.py has the route table.
ROUTES: list[tuple[str, type[web.RequestHandler]]] = [
    (r"/r3nb/api/?(.*)", ApiHandler),
]
