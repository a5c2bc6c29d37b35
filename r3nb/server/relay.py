"""Relay mode: a single-user server that forwards r3nb's API to the hub service.

With ``c.R3nbApp.service_url`` (or ``R3NB_SERVICE_URL``, set by the spawner) the server
holds no keys, no DB and no engine. The panel and kernels call it exactly as before; each
call is authenticated here as usual (jupyter_server's hub auth, or the kernel secret),
then sent to the service's internal URL with two tokens: this server's own
``JUPYTERHUB_API_TOKEN`` and, for a person, that person's own hub token (from their
request or the OAuth cookie this server keeps). A kernel call carries only the server
token: the service acts as the owner with ``source: "kernel"``. Server-sent events pass
through chunk by chunk, each flushed before the next is read (back-pressure, no
buffering). If the service cannot be reached the caller gets 503 "the r3nb service is
unavailable": nothing falls back to local keys, because there are none.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from tornado import web
from tornado.iostream import StreamClosedError

from r3nb.errors import R3nbError
from r3nb.protocol import RETRY_AFTER_HEADER, sse_frame
from r3nb.service.wire import API_PATH, ENV_SERVICE_URL, PERSON_HEADER, UNAVAILABLE
from r3nb.sse_gzip import GzipBody

from .documents import wants_gzip, write_encoded
from .handlers import ApiHandler

#: Headers of the service's answer that mean something to the caller.
_PASSED_BACK = (
    "Content-Type",
    "Content-Disposition",
    "Cache-Control",
    "X-Accel-Buffering",
    "X-Content-Type-Options",
    RETRY_AFTER_HEADER,
    "Vary",
)


class ServiceUnavailable(R3nbError):
    status = 503


class NoPersonToken(R3nbError):
    status = 403


class Relay:
    """The service's address, this server's token, and one pooled HTTP client."""

    def __init__(self, service_url: str) -> None:
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise RuntimeError(
                "r3nb relay mode needs JUPYTERHUB_API_TOKEN (it runs under JupyterHub only)"
            )
        self.api_url = service_url.rstrip("/") + "/" + API_PATH
        self.server_token = token
        # No read deadline on a stream beyond the service's own heartbeats' reach;
        # connecting is quick or the service is down.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )

    async def close(self) -> None:
        await self.client.aclose()


def service_url_from(configured: str) -> str:
    """The configured URL, else the spawner's ``R3NB_SERVICE_URL``, else "" (local)."""
    return configured or os.environ.get(ENV_SERVICE_URL, "")


class RelayHandler(ApiHandler):
    """``ApiHandler`` with ``_serve`` forwarding to the service instead of the engine."""

    @property
    def relay(self) -> Relay:
        relay: Relay = self.settings["r3nb_relay"]
        return relay

    async def _serve(self, path: str) -> None:
        try:
            headers = self._service_headers()
        except R3nbError as e:
            self.send_r3nb_error(e)
            return
        relay = self.relay
        request = relay.client.build_request(
            self.request.method or "GET",
            relay.api_url + path,
            params=self.request.query or None,
            headers=headers,
            content=self.request.body or None,
        )
        try:
            response = await relay.client.send(request, stream=True)
        except httpx.HTTPError as e:
            self.send_r3nb_error(ServiceUnavailable(f"{UNAVAILABLE} ({type(e).__name__})"))
            return
        try:
            await self._pass_back(response)
        finally:
            await response.aclose()

    def _service_headers(self) -> dict[str, str]:
        # Plain from the service, so this server can add an ``error`` event to a stream
        # the service broke off; it gzips a watch for the caller itself (``_pass_back``).
        headers = {
            "Authorization": f"token {self.relay.server_token}",
            "Accept-Encoding": "identity",
        }
        if self.request.headers.get("Content-Type"):
            headers["Content-Type"] = self.request.headers["Content-Type"]
        if self._kernel_call:
            return headers
        hub_auth: Any = getattr(self.identity_provider, "hub_auth", None)
        person = hub_auth.get_token(self) if hub_auth is not None else None
        if not person:
            # Forwarding without it would make a visitor the owner: refuse instead.
            raise NoPersonToken("r3nb relay: this request carries no hub token of yours")
        headers[PERSON_HEADER] = person
        return headers

    async def _pass_back(self, response: httpx.Response) -> None:
        self.set_status(response.status_code)
        for name in _PASSED_BACK:
            if name in response.headers:
                self.set_header(name, response.headers[name])
        streaming = response.headers.get("Content-Type", "").startswith("text/event-stream")
        body: GzipBody | None = None
        if streaming:
            stream = getattr(self.request.connection, "stream", None)
            if stream is not None:
                stream.set_nodelay(True)
            # The service marks a stream it would compress (a watch) with Vary.
            marked = "accept-encoding" in response.headers.get("Vary", "").lower()
            body = GzipBody() if wants_gzip(self, marked) else None
        try:
            async for chunk in response.aiter_raw():
                write_encoded(self, body, chunk)
                await self.flush()
        except StreamClosedError:
            return  # the caller left: closing our side ends the service's response too
        except httpx.HTTPError:
            if not self._headers_written:
                self.send_r3nb_error(ServiceUnavailable(UNAVAILABLE))
                return
            if streaming:  # the service went away mid-stream: say so, as an event
                error = sse_frame("error", {"error": f"{UNAVAILABLE} (mid-stream)"})
                write_encoded(self, body, error)
        if not self._finished:
            if body is not None:
                self.write(body.end())
            self.finish()


# Relay mode's whole route table: every API path goes to the service.
RELAY_ROUTES: list[tuple[str, type[web.RequestHandler]]] = [
    (r"/r3nb/api/?(.*)", RelayHandler),
]
