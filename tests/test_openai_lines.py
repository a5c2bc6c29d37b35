"""The lean reader's line splitter (``openai_stream._lines``): bytes as they come off the
socket, cut anywhere, in every line ending SSE allows, give the same data lines."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from httpcore._backends.anyio import AnyIOBackend

from r3nb.engine.openai_stream import _lines, aclose, stream_chat
from tests.provider import FakeProvider


class _Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def _data_lines(pieces: list[bytes], headers: dict[str, str] | None = None) -> list[bytes]:
    async def read() -> list[bytes]:
        response = httpx.Response(200, headers=headers, stream=_Pieces(pieces))
        return [line async for line in _lines(response) if line]

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
def test_a_last_line_without_its_ending_and_a_compressed_body_are_read() -> None:
    assert _data_lines([b"data: 1\n\ndata: 2"]) == [b"data: 1", b"data: 2"]
    body = gzip.compress(b"data: 1\n\ndata: [DONE]\n\n")
    found = _data_lines([body[:5], body[5:]], {"content-encoding": "gzip"})
    assert found == [b"data: 1", b"data: [DONE]"]


@pytest.mark.fast
def test_replies_one_after_another_reuse_one_connection(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body is read to its end after ``[DONE]``, so the connection goes back to the
    pool: a new reply does not pay a new connection (a TLS handshake on a real one)."""
    connects: list[object] = []
    connect = AnyIOBackend.connect_tcp

    async def counting(self: AnyIOBackend, *args: Any, **kwargs: Any) -> Any:
        connects.append(args)
        return await connect(self, *args, **kwargs)

    monkeypatch.setattr(AnyIOBackend, "connect_tcp", counting)
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
    assert len(connects) == 1
