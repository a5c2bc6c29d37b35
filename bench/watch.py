"""Observers pushed, not polled (issue 16.3): watchers on ``GET conversations/{cid}/watch``.

``load(..., watch=True)`` in ``streaming.py`` runs its streams with ``Watcher``s in place
of the polling ``Observer``s, so the ``watchers`` section and the ``observers`` (polling)
section are measured the same way, in the same run: per-growth staleness against the
sender's own stream, bytes per observer over the reply's bytes, server loop lag.
``idle_memory`` opens watchers on a quiet conversation and reads the server's RSS.

A watcher's bytes are counted on the wire: it asks for gzip, as every browser does, and
decodes each chunk itself (``decoded``: what an identity client would have received).
The generated replies repeat a few words, which gzip shrinks far more than prose, so
``prose`` measures the same on one reply of real prose (part of the README).

The watchers run in ``WatcherProcesses``: a few processes of their own (``python -m
bench.watch``), not the process that sends and times the replies. In one process, the
bench's own loop (1,000 watchers, 50 streams) fell seconds behind and its lateness was
counted as the server's staleness (p99 5.8 s beside a p50 of 10 ms). Times are
``time.perf_counter`` (CLOCK_MONOTONIC on Linux: the same clock in every process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    PY,
    ROOT,
    Provider,
    Server,
    aio_client,
    client,
    model_entries,
    new_conversation,
    r3nb_send,
    rss_mb,
)


class Watcher:
    """A panel of another kernel, pushed over the watch stream. Counts the body's bytes
    on the wire (one connection's headers, ~200 bytes, once), decoded, and when its
    text grew."""

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.mid: str | None = None
        self.text = ""
        self.status: str | None = None
        self.bytes = 0  # on the wire
        self.decoded = 0
        self.encoding = ""
        self.polls = 0  # requests made: one
        self.errors = 0
        self.events = 0
        self.seen: list[tuple[float, int]] = []  # (t, length) when the length grew
        self.latency: list[float] = []  # none: nothing is asked per update
        self.joined = asyncio.Event()

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> Watcher:
        """A watcher as a ``WatcherProcesses`` child reported it."""
        watcher = cls("")
        for key, value in report.items():
            setattr(watcher, key, value)
        watcher.seen = [(t, n) for t, n in report["seen"]]
        return watcher

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

    async def run(self, http: aiohttp.ClientSession, api: str, stop: asyncio.Event) -> None:
        self.polls += 1
        try:
            url = f"{api}conversations/{self.cid}/watch"
            headers = {"Accept-Encoding": "gzip, deflate"}
            get = http.get(url, params={"since": "0"}, headers=headers, auto_decompress=False)
            async with get as r:
                if r.status != 200:
                    self.errors += 1
                    return
                self.encoding = r.headers.get("Content-Encoding", "identity")
                decoder = zlib.decompressobj(31) if self.encoding == "gzip" else None
                buffer = b""
                async for raw in r.content.iter_any():
                    t = time.perf_counter()
                    self.bytes += len(raw)
                    chunk = decoder.decompress(raw) if decoder else raw
                    self.decoded += len(chunk)
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
        except aiohttp.ClientError:
            self.errors += 1


class WatcherProcesses:
    """``n`` watchers, ``watchers[k]`` on ``cids[k % len(cids)]``, spread over
    ``processes`` processes. ``start`` returns once every one has joined (caught up);
    ``results`` once every one saw its reply end (or ``timeout``)."""

    def __init__(self, server: Server, cids: list[str], n: int, processes: int = 4) -> None:
        self.server, self.cids, self.n = server, cids, n
        self.procs: list[subprocess.Popen[str]] = []
        self.parts = [list(range(k, n, processes)) for k in range(min(processes, n))]

    def start(self, timeout: float = 120) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for part in self.parts:
            cids = [self.cids[i % len(self.cids)] for i in part]
            proc = subprocess.Popen(
                [PY, "-m", "bench.watch", "--api", self.server.api, "--cids", ",".join(cids)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(self.server.headers) + "\n")
            proc.stdin.flush()
            self.procs.append(proc)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # "joined"
            if line.strip() != "joined" or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"watchers did not join: {line!r}")

    def results(self, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        """(stream index, what the watcher saw) for every watcher."""
        out: list[tuple[int, dict[str, Any]]] = []
        try:
            for proc, part in zip(self.procs, self.parts, strict=True):
                assert proc.stdin is not None
                assert proc.stdout is not None
                proc.stdin.write(f"{timeout}\n")
                proc.stdin.flush()
                found = json.loads(proc.stdout.readline())
                out += [(i % len(self.cids), w) for i, w in zip(part, found, strict=True)]
        finally:
            self.stop()
        return out

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


async def _watch_here(api: str, headers: dict[str, str], cids: list[str]) -> None:
    """The child's side of ``WatcherProcesses``: join, say so, report when done."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    watchers = [Watcher(cid) for cid in cids]
    async with aio_client(headers) as http:
        tasks = [asyncio.ensure_future(w.run(http, api, stop)) for w in watchers]
        await asyncio.wait_for(asyncio.gather(*(w.joined.wait() for w in watchers)), 120)
        print("joined", flush=True)
        timeout = float(await loop.run_in_executor(None, sys.stdin.readline))
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout)
        except TimeoutError:
            stop.set()
    report = [
        {
            "cid": w.cid,
            "seen": w.seen,
            "bytes": w.bytes,
            "decoded": w.decoded,
            "encoding": w.encoding,
            "text": w.text,
            "status": w.status,
            "errors": w.errors,
            "polls": w.polls,
        }
        for w in watchers
    ]
    print(json.dumps(report), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description="watchers for the bench (WatcherProcesses)")
    ap.add_argument("--api", required=True)
    ap.add_argument("--cids", required=True)
    args = ap.parse_args()
    headers = json.loads(sys.stdin.readline())
    asyncio.run(_watch_here(args.api, headers, args.cids.split(",")))


def prose(workdir: Path, watchers: int = 20) -> dict[str, Any]:
    """Bytes to one watcher over the reply's bytes for one ~6 KB reply of prose at
    100 chunks/s (the generated replies' pace), on a server and provider of its own."""
    home = workdir / "prose"
    home.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "README.md").read_text()[:6000]
    (home / "reply.txt").write_text(text)
    provider = Provider(home, text_file=home / "reply.txt").start()
    server = Server(
        home,
        {
            "models": model_entries(provider.url),
            "default_model": "lean",
            "db_path": str(home / "bench.duckdb"),
            "snapshot_interval": 2.0,
        },
        probe=False,
    )
    server.start()
    try:
        return asyncio.run(_prose(server, text, watchers))
    finally:
        server.stop()
        provider.stop()


async def _prose(server: Server, text: str, n: int) -> dict[str, Any]:
    async with client(server.api, server.headers) as api, aio_client(server.headers) as http:
        cid = await new_conversation(api, "prose")
        stop = asyncio.Event()
        watchers = [Watcher(cid) for _ in range(n)]
        tasks = [asyncio.ensure_future(w.run(http, server.api, stop)) for w in watchers]
        await asyncio.wait_for(asyncio.gather(*(w.joined.wait() for w in watchers)), 60)
        result = await r3nb_send(api, cid, "prose !delay=0.01", "lean")
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    reply = len(result.text.encode())
    return {
        "watchers": n,
        "reply_bytes": reply,
        "exact": sum(w.text == text for w in watchers),
        "encoding": sorted({w.encoding for w in watchers}),
        "wire_over_reply_median": statistics.median(w.bytes / reply for w in watchers),
        "decoded_over_reply_median": statistics.median(w.decoded / reply for w in watchers),
    }


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
    async with client(server.api, server.headers) as api, aio_client(server.headers) as http:
        cid = await new_conversation(api, "idle watchers")
        warm = Watcher(cid)  # the conversation's producer exists before measuring
        stop = asyncio.Event()
        task = asyncio.ensure_future(warm.run(http, server.api, stop))
        await asyncio.wait_for(warm.joined.wait(), 30)
        await asyncio.sleep(1.0)
        before = rss_mb(server.pid)
        watchers = [Watcher(cid) for _ in range(n)]
        tasks = [asyncio.ensure_future(w.run(http, server.api, stop)) for w in watchers]
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


if __name__ == "__main__":
    main()
