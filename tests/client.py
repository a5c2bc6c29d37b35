"""A small HTTP + SSE client for the tests (httpx, the way any client would talk)."""

from __future__ import annotations

import codecs
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx


class ApiError(Exception):
    def __init__(self, status: int, body: Any, headers: httpx.Headers) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers


class Api:
    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.client = httpx.AsyncClient(
            base_url=base, headers=headers or {}, timeout=httpx.Timeout(30.0)
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, **params: Any
    ) -> tuple[int, Any]:
        content = raw if raw is not None else (json.dumps(body) if body is not None else None)
        r = await self.client.request(method, path, content=content, params=params or None)
        try:
            data = r.json()
        except ValueError:
            data = r.text
        return r.status_code, data

    async def ok(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        status, data = await self.call(method, path, body, **params)
        assert 200 <= status < 300, (status, data)
        return data

    async def conversation(self, title: str = "test") -> str:
        data = await self.ok("POST", "conversations", {"title": title})
        return str(data["conversation"]["id"])

    async def events(
        self, method: str, path: str, body: Any = None, **params: Any
    ) -> AsyncIterator[tuple[str, Any]]:
        """Yield (event, data) of a server-sent event stream; raises ApiError on 4xx."""
        content = json.dumps(body) if body is not None else None
        async with self.client.stream(method, path, content=content, params=params or None) as r:
            if r.status_code >= 300:
                payload = await r.aread()
                raise ApiError(r.status_code, json.loads(payload or b"null"), r.headers)
            assert r.headers["content-type"].startswith("text/event-stream")
            async for event, data in parse_sse(r.aiter_lines()):
                yield event, data

    async def send(self, cid: str, content: str, **extra: Any) -> dict[str, Any]:
        """POST a message and read the whole stream: {start, deltas, done}."""
        out: dict[str, Any] = {"deltas": []}
        async for event, data in self.events(
            "POST", f"conversations/{cid}/messages", {"content": content, **extra}
        ):
            if event == "delta":
                out["deltas"].append(data)
            else:
                out[event] = data
        return out


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, Any]]:
    event, data = "message", []
    async for line in lines:
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


class RawStream:
    """An event stream read as its bytes on the wire (``aiter_raw``: httpx does not
    decode them), each chunk decoded on arrival as a browser does, so a stream whose
    frames could only be decoded at its end fails (``events`` would wait for them)."""

    def __init__(self) -> None:
        self.wire = bytearray()
        self.headers: httpx.Headers | None = None

    async def events(
        self, client: httpx.AsyncClient, path: str, encoding: str, **params: Any
    ) -> AsyncIterator[tuple[str, Any]]:
        headers = {"Accept-Encoding": encoding}
        async with client.stream("GET", path, params=params, headers=headers) as r:
            assert r.status_code == 200, (r.status_code, await r.aread())
            self.headers = r.headers
            async for event in parse_sse(self._lines(r)):
                yield event

    async def _lines(self, r: httpx.Response) -> AsyncIterator[str]:
        gzipped = r.headers.get("content-encoding") == "gzip"
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        text = codecs.getincrementaldecoder("utf-8")()
        pending = ""
        in_frame = False  # a line of a frame whose closing blank line has not come
        async for chunk in r.aiter_raw():
            self.wire += chunk
            pending += text.decode(decoder.decompress(chunk) if gzipped else chunk)
            *lines, pending = pending.split("\n")
            for line in lines:
                in_frame = line != ""
                yield line
        rest = pending + text.decode(b"", final=True)
        assert not rest, f"the stream ended inside a line: {rest[:80]!r}"
        assert not in_frame, "the stream ended inside a frame"
        if gzipped:
            assert decoder.eof, "the gzip member was not ended"
            assert not decoder.unused_data
