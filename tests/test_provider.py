"""Tests of the fake provider, driven through litellm's ordinary OpenAI path.

The point of ``tests/provider.py`` is that the rest of the suite can trust it as an
upstream, so these tests go through ``litellm.acompletion(model="openai/...",
api_base=...)`` exactly as the server extension does, and record which litellm exception
each fault becomes (litellm 1.110.2):

* ``fault=500``       -> ``litellm.InternalServerError``
* ``fault=401``       -> ``litellm.AuthenticationError``
* ``fault=429``       -> ``litellm.RateLimitError``
* ``fault=400``       -> ``litellm.BadRequestError``
* ``fault=drop``      -> ``MidStreamFallbackError`` (wrapping APIConnectionError,
  "Connection error"; a subclass of ServiceUnavailableError)
* ``fault=malformed`` -> ``MidStreamFallbackError`` (wrapping APIConnectionError,
  "Expecting property name enclosed in double quotes")
* ``fault=stall`` + client ``timeout=`` -> ``litellm.Timeout``

Sync tests each call ``asyncio.run`` so no pytest-asyncio mode is assumed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import litellm
import pytest
from litellm.exceptions import MidStreamFallbackError

try:
    from tests.provider import (
        FakeProvider,
        Scenario,
        generated_text,
        parse_directives,
        split_text,
    )
except ImportError:  # pytest run without the project root on sys.path
    from provider import (  # type: ignore[no-redef]
        FakeProvider,
        Scenario,
        generated_text,
        parse_directives,
        split_text,
    )

litellm.suppress_debug_info = True
ROOT = Path(__file__).resolve().parent.parent


async def _open(p: FakeProvider, content: Any, **kwargs: Any) -> Any:
    messages = kwargs.pop("messages", None) or [{"role": "user", "content": content}]
    return await litellm.acompletion(
        model="openai/fake-model",
        api_base=p.url,
        api_key="sk-test",
        messages=messages,
        stream=True,
        max_retries=0,
        stream_options={"include_usage": True},
        **kwargs,
    )


async def _collect(p: FakeProvider, content: Any, **kwargs: Any) -> tuple[str, Any]:
    """Stream one completion; return (joined deltas, usage)."""
    response = await _open(p, content, **kwargs)
    text, usage = "", None
    async for chunk in response:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if getattr(chunk, "usage", None):
            usage = chunk.usage
    return text, usage


# ----------------------------------------------------------------- pure helpers


def test_split_text_roundtrips() -> None:
    for text in [
        "",
        "  lead and trail  ",
        "a\n\nb\tc",
        "é ✓ 日本語 x",
        '{"a": [1, 2]}',
    ]:
        assert "".join(split_text(text)) == text


def test_generated_text_has_unicode_and_newlines() -> None:
    text = generated_text(30)
    assert len(split_text(text)) == 30
    assert any(ord(c) > 127 for c in "".join(split_text(text)[:5]))
    assert text.count("\n") == 2


def test_directives_override_only_known_keys() -> None:
    base = Scenario(tokens=7, gate=2)
    sc = parse_directives(
        "wow! !tokens=500 !delay=0.01 !fault=drop !after=5 !gate=none !echo", base
    )
    assert (sc.tokens, sc.delay, sc.fault, sc.after, sc.gate, sc.echo) == (
        500,
        0.01,
        "drop",
        5,
        None,
        True,
    )
    assert parse_directives("nothing here!", base) is base
    assert base.tokens == 7


# ----------------------------------------------------------------- through litellm


def test_stream_matches_reply_and_reports_usage() -> None:
    async def main() -> None:
        with FakeProvider() as p:
            text, usage = await _collect(p, "hello there friend !tokens=30")
            assert text == p.replies[0] == p.sent[0] == generated_text(30)
            assert "\n" in text
            assert "é" in text
            assert usage is not None
            assert usage.completion_tokens == 30
            assert usage.prompt_tokens == 4
            assert usage.total_tokens == 34
            assert p.requests[0]["stream_options"] == {"include_usage": True}
            assert await p.await_outcome(0) == "done"

    asyncio.run(main())


def test_content_parts_and_exact_text() -> None:
    async def main() -> None:
        with FakeProvider(Scenario(text="  Exact\n text, ✓ kept  ")) as p:
            parts = [
                {"type": "text", "text": "look"},
                {"type": "text", "text": "!tokens=3"},
            ]
            text, _ = await _collect(p, parts)
            assert text == "  Exact\n text, ✓ kept  " == p.replies[0]
            p.scenario = Scenario()
            text, _ = await _collect(p, parts)
            assert text == generated_text(3)

    asyncio.run(main())


def test_pacing_follows_schedule() -> None:
    async def main() -> None:
        with FakeProvider(Scenario(tokens=20, delay=0.05)) as p:
            await _collect(p, "warm up !delay=0 !tokens=1")  # litellm's first call is slow
            t = time.perf_counter()
            text, _ = await _collect(p, "paced")
            elapsed = time.perf_counter() - t
            assert text == generated_text(20)
            assert 0.95 <= elapsed < 2.0, elapsed

    asyncio.run(main())


@pytest.mark.parametrize(
    ("fault", "exc"),
    [
        ("500", litellm.InternalServerError),
        ("401", litellm.AuthenticationError),
        ("429", litellm.RateLimitError),
        ("400", litellm.BadRequestError),
    ],
)
def test_status_faults(fault: str, exc: type[Exception]) -> None:
    async def main() -> None:
        with FakeProvider() as p:
            with pytest.raises(exc):
                await _collect(p, f"!fault={fault}")
            assert p.outcomes == [f"error:{fault}"]
            assert p.sent == [""]

    asyncio.run(main())


@pytest.mark.parametrize("fault", ["drop", "malformed"])
def test_mid_stream_faults(fault: str) -> None:
    async def main() -> None:
        with FakeProvider() as p:
            response = await _open(p, f"!fault={fault} !after=4")
            got = ""
            with pytest.raises(MidStreamFallbackError):
                async for chunk in response:
                    if chunk.choices and chunk.choices[0].delta.content:
                        got += chunk.choices[0].delta.content
            assert got == p.sent[0] == generated_text(4)
            assert p.outcomes == [fault]

    asyncio.run(main())


def test_stall_until_client_gives_up() -> None:
    async def main() -> None:
        with FakeProvider() as p:
            with pytest.raises(litellm.Timeout):
                await _collect(p, "!fault=stall !after=2", timeout=0.5)
            assert await p.await_outcome(0) == "disconnected"
            assert p.sent_chunks == [2]

    asyncio.run(main())


def test_stop_ends_a_stalled_stream() -> None:
    async def main() -> None:
        p = FakeProvider(Scenario(fault="stall", after=1))
        p.start()
        consumer = asyncio.create_task(_collect(p, "hi"))
        await p.await_sent(0, 1)
        await asyncio.to_thread(p.stop)
        with pytest.raises(MidStreamFallbackError):
            await asyncio.wait_for(consumer, 5)
        assert p.outcomes == ["stopped"]
        assert p.active == 0

    asyncio.run(main())


def test_gate_pauses_until_release() -> None:
    async def main() -> None:
        with FakeProvider() as p:
            received: list[str] = []

            async def consume() -> None:
                async for chunk in await _open(p, "!tokens=6 !gate=3"):
                    if chunk.choices and chunk.choices[0].delta.content:
                        received.append(chunk.choices[0].delta.content)

            task = asyncio.create_task(consume())
            await p.await_sent(0, 3)
            await asyncio.sleep(0.2)
            assert p.sent_chunks[0] == 3
            assert len(received) == 3
            assert p.outcomes == [None]
            await asyncio.to_thread(p.wait_sent, 0, 3)  # the blocking variant agrees
            p.release()
            await asyncio.wait_for(task, 5)
            assert "".join(received) == generated_text(6)

    asyncio.run(main())


def test_echo_returns_the_messages() -> None:
    async def main() -> None:
        messages = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first ✓"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "again !echo"}]},
        ]
        with FakeProvider() as p:
            await p.wait_requests(0)
            text, _ = await _collect(p, None, messages=messages)
            await p.wait_requests(1)
            assert text == p.replies[0]
            assert json.loads(text) == p.requests[0]["messages"]
            assert [m["role"] for m in json.loads(text)] == [
                "system",
                "user",
                "assistant",
                "user",
            ]

    asyncio.run(main())


def test_client_disconnect_stops_the_loop() -> None:
    async def main() -> None:
        with FakeProvider() as p:
            response = await _open(p, "!tokens=100000 !delay=0.01")
            n = 0
            async for _chunk in response:
                n += 1
                if n == 5:
                    break
            await response.aclose()
            assert await p.await_outcome(0, timeout=3) == "disconnected"
            sent = p.sent_chunks[0]
            await asyncio.sleep(0.1)
            assert p.sent_chunks[0] == sent < 100
            assert p.active == 0

    asyncio.run(main())


def test_non_streaming() -> None:
    async def main() -> None:
        with FakeProvider() as p:
            response = await litellm.acompletion(
                model="openai/fake-model",
                api_base=p.url,
                api_key="sk-test",
                messages=[{"role": "user", "content": "hi !tokens=5"}],
                max_retries=0,
            )
            assert response.choices[0].message.content == generated_text(5)
            assert response.usage.completion_tokens == 5

    asyncio.run(main())


# ----------------------------------------------------------------- standalone + speed


def test_cli_runs_and_exits_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.provider", "--port", "0", "--tokens", "3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/v1")
        with httpx.stream(
            "POST",
            url + "/chat/completions",
            json={
                "model": "m",
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            },
        ) as r:
            body = r.read().decode()
        assert body.count('"content"') == 3
        assert body.endswith("data: [DONE]\n\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_raw_throughput_report() -> None:
    """Measured, not asserted: the provider must not be a benchmark's bottleneck."""

    async def one(client: httpx.AsyncClient, url: str, tokens: int, delay: float) -> int:
        body = {
            "model": "m",
            "stream": True,
            "messages": [{"role": "user", "content": f"!tokens={tokens} !delay={delay}"}],
        }
        parts: list[bytes] = []
        async with client.stream("POST", url + "/chat/completions", json=body) as r:
            async for data in r.aiter_bytes():
                parts.append(data)
        raw = b"".join(parts)
        assert raw.endswith(b"data: [DONE]\n\n")
        return raw.count(b'"content":')

    async def main() -> None:
        with FakeProvider() as p:
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as client:
                await one(client, p.url, 10, 0)
                t = time.perf_counter()
                n = await one(client, p.url, 20_000, 0)
                single = n / (time.perf_counter() - t)
                assert n == 20_000
                t = time.perf_counter()
                counts = await asyncio.gather(*(one(client, p.url, 2_000, 0) for _ in range(50)))
                many = sum(counts) / (time.perf_counter() - t)
                t = time.perf_counter()
                counts = await asyncio.gather(*(one(client, p.url, 100, 0.01) for _ in range(50)))
                paced_s = time.perf_counter() - t
        print(
            f"\nfake provider: one stream {single:,.0f} chunks/s; "
            f"50 undelayed streams {many:,.0f} chunks/s total; "
            f"50 streams x 100 @ 10ms took {paced_s:.2f}s (ideal 1.00s, "
            f"{sum(counts) / paced_s:,.0f} chunks/s)"
        )

    asyncio.run(main())
