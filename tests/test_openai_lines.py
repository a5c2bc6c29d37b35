"""The lean reader's line splitter (``openai_stream._lines``): bytes as they come off the
socket, cut anywhere, in every line ending SSE allows, give the same data lines."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from typing import Any

import pytest

from r3nb.engine.openai_stream import _lines, aclose, stream_chat
from tests.provider import FakeProvider


def _data_lines(pieces: list[bytes]) -> list[bytes]:
    async def each() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def read() -> list[bytes]:
        return [line async for line in _lines(each()) if line]

    return asyncio.run(read())


@pytest.mark.fast
@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_lines_cut_anywhere_in_any_line_ending_read_the_same(ending: bytes) -> None:
    events = [b'data: {"a": "\xc3\xa9t\xc3\xa9"}', b": keep-alive", b"data: [DONE]"]
    body = b"".join(e + ending + ending for e in events)
    for size in (1, 2, 3, 7, len(body)):
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        assert _data_lines(pieces) == events, size


@pytest.mark.fast
def test_a_last_line_without_its_ending_is_read() -> None:
    assert _data_lines([b"data: 1\n\ndata: 2"]) == [b"data: 1", b"data: 2"]


_CHUNK = b'data: {"choices": [{"delta": {"content": "%s"}, "finish_reason": %s}]}\n\n'


@pytest.mark.fast
def test_a_gzip_compressed_stream_is_read() -> None:
    """A gateway may compress the event stream (``Content-Encoding: gzip``): the reader
    gets the text, not the compressed bytes."""
    body = gzip.compress(
        _CHUNK % (b"h\xc3\xa9", b"null") + _CHUNK % (b"llo", b'"stop"') + b"data: [DONE]\n\n"
    )

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    async def run() -> list[Any]:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        params = {"model": "openai/m", "api_base": f"http://127.0.0.1:{port}/v1"}
        try:
            async with server:
                return [x async for x in stream_chat(params, [{"role": "user", "content": "hi"}])]
        finally:
            await aclose()

    assert asyncio.run(run()) == ["hé", "llo", {"finish_reason": "stop"}]


@pytest.mark.fast
def test_replies_one_after_another_reuse_one_connection(provider: FakeProvider) -> None:
    """The body is read to its end after ``[DONE]``, so the connection goes back to the
    pool: a new reply does not pay a new connection (a TLS handshake on a real one)."""
    params = {"model": "openai/fake", "api_base": provider.url, "api_key": "none"}

    async def replies() -> list[list[Any]]:
        found = []
        try:
            for _ in range(4):
                ask = [{"role": "user", "content": "!tokens=5"}]
                found.append([x async for x in stream_chat(params, ask)])
        finally:
            await aclose()
        return found

    found = asyncio.run(replies())
    assert all({"finish_reason": "stop"} in items for items in found)
    assert len(set(provider.peers[-4:])) == 1, provider.peers
