"""Observers pushed, not polled (issue 16.3): watchers on ``GET conversations/{cid}/watch``.

``load(..., watch=True)`` in ``streaming.py`` runs its streams with ``Watcher``s in place
of the polling ``Observer``s, so the ``watchers`` section and the ``observers`` (polling)
section are measured the same way, in the same run: per-growth staleness against the
sender's own stream, bytes per observer over the reply's bytes, server loop lag.
``idle_memory`` opens watchers on a quiet conversation and reads the server's RSS.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import Provider, Server, client, model_entries, new_conversation, rss_mb


class Watcher:
    """A panel of another kernel, pushed over the watch stream. Counts the body's bytes
    (one connection's headers, ~200 bytes, once) and when its text grew."""

    def __init__(self, api: httpx.AsyncClient, cid: str) -> None:
        self.api, self.cid = api, cid
        self.mid: str | None = None
        self.text = ""
        self.status: str | None = None
        self.bytes = 0
        self.polls = 0  # requests made: one
        self.errors = 0
        self.events = 0
        self.seen: list[tuple[float, int]] = []  # (t, length) when the length grew
        self.latency: list[float] = []  # none: nothing is asked per update
        self.joined = asyncio.Event()

    def _apply(self, name: str, data: Any, t: float) -> None:
        self.events += 1
        if name == "snapshot":
            for m in data["messages"]:
                if "offset" not in m and m["role"] != "assistant":
                    continue
                self.mid = m["id"]
                if "offset" in m:
                    self.text = self.text[: m["offset"]] + m["content"]
                else:
                    self.text = m["content"]
                self.status = m["status"]
        elif name == "delta" and data["message_id"] == self.mid:
            self.text = self.text[: data["offset"]] + data["text"]
        elif name == "error":
            self.errors += 1
        if self.text and (not self.seen or len(self.text) > self.seen[-1][1]):
            self.seen.append((t, len(self.text)))

    async def run(self, stop: asyncio.Event) -> None:
        self.polls += 1
        try:
            path = f"conversations/{self.cid}/watch"
            async with self.api.stream("GET", path, params={"since": "0"}) as r:
                if r.status_code != 200:
                    self.errors += 1
                    return
                buffer = b""
                async for chunk in r.aiter_raw():
                    t = time.perf_counter()
                    self.bytes += len(chunk)
                    buffer += chunk
                    while b"\n\n" in buffer:
                        frame, buffer = buffer.split(b"\n\n", 1)
                        if frame.startswith(b":"):
                            continue  # : ping
                        head, _, data = frame.partition(b"\ndata: ")
                        self._apply(head.decode()[len("event: ") :], json.loads(data), t)
                        self.joined.set()
                    if self.status not in (None, "streaming") or stop.is_set():
                        return
        except httpx.HTTPError:
            self.errors += 1


def idle_memory(workdir: Path, provider: Provider, n: int) -> dict[str, Any]:
    """Server RSS growth per watcher of a quiet conversation (each joined: caught up), on
    a fresh server, so no heap left over from an earlier section hides the growth."""
    (workdir / "idle").mkdir(parents=True, exist_ok=True)
    server = Server(
        workdir / "idle",
        {
            "models": model_entries(provider.url),
            "default_model": "lean",
            "db_path": str(workdir / "idle" / "bench.duckdb"),
            "snapshot_interval": 2.0,
        },
        probe=False,
    )
    server.start()
    try:
        return asyncio.run(_idle_memory(server, n))
    finally:
        server.stop()


async def _idle_memory(server: Server, n: int) -> dict[str, Any]:
    async with client(server.api, server.headers, n=n) as api:
        cid = await new_conversation(api, "idle watchers")
        warm = Watcher(api, cid)  # the conversation's producer exists before measuring
        stop = asyncio.Event()
        task = asyncio.ensure_future(warm.run(stop))
        await asyncio.wait_for(warm.joined.wait(), 30)
        await asyncio.sleep(1.0)
        before = rss_mb(server.pid)
        watchers = [Watcher(api, cid) for _ in range(n)]
        tasks = [asyncio.ensure_future(w.run(stop)) for w in watchers]
        await asyncio.wait_for(asyncio.gather(*(w.joined.wait() for w in watchers)), 120)
        await asyncio.sleep(2.0)  # a few ticks with nothing to send
        after = rss_mb(server.pid)
        health = server.health()
        for t in [task, *tasks]:
            t.cancel()
        await asyncio.gather(task, *tasks, return_exceptions=True)
    return {
        "watchers": n,
        "server_rss_before_mb": before,
        "server_rss_after_mb": after,
        "kb_per_idle_watcher": (after - before) * 1024 / n,
        "watch_counters": health.get("watch"),
    }
