"""How kernel-side code talks to r3nb: one interface, two transports.

``ServerClient`` speaks HTTP + server-sent events to the Jupyter server extension, with the
URL and secret the server put in the kernel's environment. ``EmbeddedClient``
(``embedded.py``) runs the same ``Engine`` inside the kernel when no extension answers;
``connect.py`` decides which one a kernel uses (this module knows neither embedded mode
nor that choice, so the three import in one direction: connect → embedded → client).

Both expose two primitives — ``call`` (JSON request → status, body) and ``events`` (a
stream's ``(event, data)`` pairs) — and everything else (``send``, ``snapshot``, …) is
written once on top of them in ``BaseClient``. Nothing heavy is imported at module load:
httpx, DuckDB and litellm load when a client is first built.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from r3nb.protocol import (
    ENV_SECRET,
    ENV_URL,
    FINAL_STATUSES,
    RETRY_AFTER_HEADER,
    SECRET_HEADER,
    STALL_SECONDS,
)

log = logging.getLogger("r3nb.kernel")

Event = tuple[str, Any]
OnEvent = Callable[[str, Any], None]


class R3nbClientError(Exception):
    """The API refused a call (4xx) or could not be reached; ``message`` is for a person.
    ``retry_after``: seconds after which the same call may succeed (429, 503)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        detail = f"HTTP {status}" if status else ""
        if retry_after is not None:
            detail += f"{'; ' if detail else ''}retry in {retry_after:g} s"
        super().__init__(f"{message} ({detail})" if detail else message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def split_path(path: str) -> tuple[str, dict[str, str]]:
    """``"conversations/abc?since=3"`` → (``"conversations/abc"``, {"since": "3"})."""
    parts = urlsplit(path)
    return parts.path.lstrip("/"), dict(parse_qsl(parts.query, keep_blank_values=True))


class BaseClient:
    """The API surface shared by both transports; subclasses supply ``call``/``events``."""

    mode = "base"
    #: Seconds between snapshot polls when a stream stalls (the server's flush cadence).
    poll_interval = 2.0
    stall_seconds = STALL_SECONDS

    # --- primitives (transport-specific) ---------------------------------------------

    def call(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """One JSON request; never raises for an HTTP status (see ``request``)."""
        raise NotImplementedError

    def events(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> Iterator[Event]:
        """``(event, data)`` of an event stream, heartbeats included as ``("heartbeat",
        None)``. Raises ``R3nbClientError`` if the stream cannot start (4xx) and
        ``StreamStalled`` when nothing arrives for ``stall_seconds``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (and, embedded, the engine)."""

    # --- the API ---------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> Any:
        """Generic call: the JSON body on success, ``R3nbClientError`` otherwise."""
        status, data = self.call(method, path, body, query)
        if status >= 400:
            raise error_from(status, data)
        return data

    def health(self) -> dict[str, Any]:
        return dict(self.request("GET", "health"))

    def models(self) -> dict[str, Any]:
        return dict(self.request("GET", "models"))

    def conversations(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "conversations")["conversations"])

    def create_conversation(self, title: str | None = None) -> dict[str, Any]:
        body = {"title": title} if title else {}
        return dict(self.request("POST", "conversations", body)["conversation"])

    def snapshot(self, cid: str, since: int | None = None) -> dict[str, Any]:
        query = {"since": str(since)} if since is not None else None
        return dict(self.request("GET", f"conversations/{cid}", query=query))

    def cancel(self, mid: str) -> dict[str, Any]:
        return dict(self.request("POST", f"messages/{mid}/cancel", {})["message"])

    def delete(self, cid: str) -> None:
        self.request("DELETE", f"conversations/{cid}")

    def send_events(
        self,
        cid: str,
        content: str,
        model: str | None = None,
        kernel_id: str | None = None,
        attachments: list[dict[str, str]] | None = None,
    ) -> Iterator[Event]:
        """``start``, ``delta``…, ``done`` of a new prompt; a stalled stream falls back to
        polling snapshots, so a ``done`` always ends it."""
        body: dict[str, Any] = {"content": content}
        if model:
            body["model"] = model
        if kernel_id:
            body["kernel_id"] = kernel_id
        if attachments:
            body["attachments"] = attachments
        yield from self._resilient(self.events("POST", f"conversations/{cid}/messages", body))

    def stream_events(self, mid: str, offset: int = 0) -> Iterator[Event]:
        """A message's text from ``offset``, then live deltas until ``done``."""
        query = {"offset": str(offset)}
        yield from self._resilient(self.events("GET", f"messages/{mid}/stream", query=query))

    def send(
        self,
        cid: str,
        content: str,
        model: str | None = None,
        kernel_id: str | None = None,
        attachments: list[dict[str, str]] | None = None,
        on_event: OnEvent | None = None,
    ) -> dict[str, Any]:
        """Send a prompt and follow the reply; returns the final assistant message."""
        return _final_of(self.send_events(cid, content, model, kernel_id, attachments), on_event)

    def stream(self, mid: str, offset: int = 0, on_event: OnEvent | None = None) -> dict[str, Any]:
        return _final_of(self.stream_events(mid, offset), on_event)

    # --- stall fallback --------------------------------------------------------------

    def _resilient(self, events: Iterator[Event]) -> Iterator[Event]:
        message: dict[str, Any] | None = None
        offset = 0
        try:
            for name, data in events:
                if name == "start":
                    message = data["assistant_message"]
                elif name == "delta":
                    offset = data["offset"] + len(data["text"])
                elif name == "error":
                    raise R3nbClientError(500, str(data.get("error", "stream failed")))
                yield name, data
                if name == "done":
                    return
        except StreamStalled:
            if message is None:
                raise R3nbClientError(
                    0, f"the r3nb server sent nothing for {self.stall_seconds:g} s"
                ) from None
            log.warning("r3nb: stream of %s stalled; polling snapshots", message["id"])
            yield from self._poll(message, offset)
            return
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        if message is not None:  # the connection ended without ``done``: ask the store
            yield from self._poll(message, offset)

    def _poll(self, message: dict[str, Any], offset: int) -> Iterator[Event]:
        """Follow a message through ``GET conversations/{cid}`` until it ends."""
        mid, cid = message["id"], message["conversation_id"]
        while True:
            snap = self.request(
                "GET", f"conversations/{cid}", query={"from": f"{mid}:{offset}"} if offset else None
            )
            found = next((m for m in snap["messages"] if m["id"] == mid), None)
            if found is None:
                raise R3nbClientError(404, f"message {mid} disappeared")
            start = found.get("offset", 0)
            text = found["content"][offset - start :] if offset >= start else found["content"]
            if text:
                yield "delta", {"message_id": mid, "offset": offset, "text": text}
                offset += len(text)
            if found["status"] in FINAL_STATUSES:
                full = self.request("GET", f"conversations/{cid}")
                final = next(m for m in full["messages"] if m["id"] == mid)
                yield "done", {"message": final}
                return
            time.sleep(self.poll_interval)  # the server's flush cadence: nothing to await


class StreamStalled(Exception):
    """No byte arrived for ``stall_seconds``."""


def _final_of(events: Iterator[Event], on_event: OnEvent | None) -> dict[str, Any]:
    for name, data in events:
        if on_event is not None and name != "heartbeat":
            on_event(name, data)
        if name == "done":
            return dict(data["message"])
    raise R3nbClientError(0, "the stream ended without a final message")


def error_from(status: int, data: Any) -> R3nbClientError:
    """The error for a refused call, from its body (an ``ErrorBody``: ``error``, and
    ``retry_after`` on a 429 or 503)."""
    if isinstance(data, dict) and "error" in data:
        message = str(data["error"])
        retry = data.get("retry_after")
    else:
        message, retry = (str(data)[:300] if data else f"HTTP {status}"), None
    ok = isinstance(retry, int | float) and not isinstance(retry, bool)
    return R3nbClientError(status, message, retry if ok else None)


def _error_body(data: Any, reason: str, retry_header: str | None) -> dict[str, Any]:
    """A refusal as one ``ErrorBody``, whoever answered (r3nb, or a proxy in front of
    it): the ``Retry-After`` header becomes its ``retry_after`` when the body has none."""
    body: dict[str, Any] = dict(data) if isinstance(data, dict) and "error" in data else {}
    if not body:
        body["error"] = str(data)[:300] if data else reason
    if "retry_after" not in body and (seconds := _seconds(retry_header)) is not None:
        body["retry_after"] = seconds
    return body


def _seconds(header: str | None) -> float | None:
    """A ``Retry-After`` in seconds (the HTTP-date form is not something r3nb sends)."""
    try:
        value = float(header) if header else None
    except ValueError:
        return None
    return value if value is not None and value >= 0 else None


# --- server mode ---------------------------------------------------------------------


class ServerClient(BaseClient):
    """The Jupyter server extension over HTTP, authenticated by the kernel secret."""

    mode = "server"

    def __init__(
        self, url: str, secret: str, *, timeout: float = 30.0, stall_seconds: float | None = None
    ) -> None:
        import httpx

        if stall_seconds is not None:
            self.stall_seconds = stall_seconds
        self.url = url if url.endswith("/") else url + "/"
        self._httpx = httpx
        self._client = httpx.Client(
            base_url=self.url,
            headers={SECRET_HEADER: secret, "Content-Type": "application/json"},
            timeout=httpx.Timeout(timeout, connect=5.0, read=self.stall_seconds),
            trust_env=False,  # a proxy from the environment must not see the secret
        )

    @classmethod
    def from_env(cls) -> ServerClient | None:
        url, secret = os.environ.get(ENV_URL), os.environ.get(ENV_SECRET)
        return cls(url, secret) if url and secret else None

    def close(self) -> None:
        self._client.close()

    def call(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        content = json.dumps(body) if body is not None else None
        try:
            r = self._client.request(method, path, content=content, params=query)
        except self._httpx.HTTPError as e:
            raise R3nbClientError(0, f"cannot reach the r3nb server at {self.url}: {e}") from e
        try:
            data = r.json()
        except ValueError:
            data = {"error": r.text[:300] or r.reason_phrase}
        if r.status_code >= 400:
            data = _error_body(data, r.reason_phrase, r.headers.get(RETRY_AFTER_HEADER))
        return r.status_code, data

    def events(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> Iterator[Event]:
        httpx = self._httpx
        content = json.dumps(body) if body is not None else None
        try:
            with self._client.stream(method, path, content=content, params=query) as r:
                if r.status_code >= 300:
                    raw = r.read()
                    try:
                        data = json.loads(raw or b"null")
                    except ValueError:
                        data = raw.decode(errors="replace")
                    retry = r.headers.get(RETRY_AFTER_HEADER)
                    raise error_from(r.status_code, _error_body(data, r.reason_phrase, retry))
                yield from parse_sse(r.iter_lines())
        except httpx.ReadTimeout as e:
            raise StreamStalled() from e
        except httpx.HTTPError as e:
            raise R3nbClientError(0, f"lost the r3nb server at {self.url}: {e}") from e


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Server-sent events → ``(event, data)``; a ``: ping`` comment → ``heartbeat``."""
    event, data = "message", list[str]()
    for line in lines:
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", list[str]()
        elif line.startswith(":"):
            yield "heartbeat", None
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


# --- this kernel's conversation (the client itself: ``connect.get_client``) ----------

_current: dict[str, str | None] = {"conversation": None}


def current_conversation() -> str | None:
    """The conversation the last panel or ``%%chat`` used in this kernel."""
    return _current["conversation"]


def set_current_conversation(cid: str | None) -> None:
    _current["conversation"] = cid


def conversation_or_latest(
    client: BaseClient, cid: str | None = None, create: bool = True, *, remember: bool = True
) -> str:
    """``cid``, else the current one, else the most recent, else a new one.

    ``remember``: make it the conversation ``%%chat`` sends to. Reading (``history``,
    ``export``) passes False: looking at a conversation must not redirect the next
    prompt, and a mistyped id must leave nothing behind."""
    cid = cid or current_conversation()
    if not cid:
        listed = client.conversations()
        if listed:
            cid = str(listed[0]["id"])
        elif create:
            cid = str(client.create_conversation()["id"])
        else:
            raise R3nbClientError(404, "there is no conversation yet")
    if remember:
        set_current_conversation(cid)
    return cid


def kernel_id() -> str | None:
    """This kernel's id, from its connection file ``kernel-<id>.json`` (None outside one)."""
    try:
        from ipykernel import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:
        return None
    if name.startswith("kernel-") and name.endswith(".json"):
        return name[len("kernel-") : -len(".json")]
    return None
