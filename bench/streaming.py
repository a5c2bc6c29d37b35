"""Streaming benchmarks through a real ``jupyter server`` subprocess, side by side with
direct litellm (the ceiling) and raw httpx (context), on the same local provider.

- ttft: POST → first delta at the client, vs ``litellm.acompletion`` → first chunk
- throughput: one 20,000-token reply with no provider delay; server CPU per token
- load: N concurrent paced streams (pace, byte-exactness, /api/status p99, loop lag),
  with observers polling snapshots (staleness, bytes per observer)
- flushes: DB writes per message for 1k … 100k tokens
"""

from __future__ import annotations

import asyncio
import bisect
import json
import random
import subprocess
import time
from typing import Any

import httpx

from tests.provider import generated_text

from .common import (
    PY,
    ROOT,
    Provider,
    Server,
    StreamResult,
    client,
    cpu_seconds,
    httpx_stream,
    litellm_stream,
    median,
    new_conversation,
    pct,
    r3nb_send,
    rss_mb,
    self_cpu,
)
from .watch import Watcher, WatcherProcesses


def prompt(tokens: int, delay: float = 0.0) -> str:
    return f"bench !tokens={tokens} !delay={delay:g}"


# --------------------------------------------------------------------------- TTFT


async def ttft(server: Server, provider: Provider, reps: int) -> dict[str, Any]:
    """Median time to first token; the four paths interleaved so load hits all alike."""
    out: dict[str, list[float]] = {"r3nb_lean": [], "r3nb_litellm": [], "litellm": [], "httpx": []}
    async with client(server.api, server.headers) as api, client("") as raw:
        cids = [await new_conversation(api, "ttft") for _ in range(reps + 2)]
        p = prompt(3)
        for i in range(reps + 2):  # the first two rounds warm every path up
            results: dict[str, StreamResult] = {}
            order = list(out)
            random.shuffle(order)
            for name in order:
                if name == "r3nb_lean":
                    results[name] = await r3nb_send(api, cids[i], p, "lean")
                elif name == "r3nb_litellm":
                    results[name] = await r3nb_send(api, cids[i], p, "litellm")
                elif name == "litellm":
                    results[name] = await litellm_stream(provider.url, p)
                else:
                    results[name] = await httpx_stream(raw, provider.url, p)
            if i < 2:
                continue
            for name, res in results.items():
                if res.t_first is not None and res.error is None:
                    out[name].append((res.t_first - res.t_post) * 1000)
    med = {k: median(v) for k, v in out.items()}
    return {
        "reps": reps,
        "median_ms": med,
        "p90_ms": {k: pct(v, 90) for k, v in out.items()},
        "r3nb_lean_minus_litellm_ms": _diff(med["r3nb_lean"], med["litellm"]),
        "r3nb_litellm_minus_litellm_ms": _diff(med["r3nb_litellm"], med["litellm"]),
        "target": "r3nb ≤ direct litellm + 5 ms (median)",
        "pass": _le(med["r3nb_lean"], (med["litellm"] or 0) + 5),
    }


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _le(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a <= b


# --------------------------------------------------------------------------- throughput


async def throughput(server: Server, provider: Provider, tokens: int, reps: int) -> dict[str, Any]:
    """One undelayed reply of ``tokens`` chunks: tokens/s at the client, CPU per token."""
    expected = generated_text(tokens)
    rows: dict[str, dict[str, list[float]]] = {}
    exact: dict[str, bool] = {}

    def add(name: str, key: str, value: float) -> None:
        rows.setdefault(name, {}).setdefault(key, []).append(value)

    async with client(server.api, server.headers) as api, client("") as raw:
        p = prompt(tokens)
        for _ in range(reps):
            order = ["r3nb_lean", "r3nb_litellm", "litellm", "httpx"]
            random.shuffle(order)
            for name in order:
                cid = await new_conversation(api, "throughput")
                s0, c0 = cpu_seconds(server.pid), self_cpu()
                if name.startswith("r3nb"):
                    res = await r3nb_send(api, cid, p, name.removeprefix("r3nb_"))
                elif name == "litellm":
                    res = await litellm_stream(provider.url, p)
                else:
                    res = await httpx_stream(raw, provider.url, p)
                s1, c1 = cpu_seconds(server.pid), self_cpu()
                if res.t_done is None:
                    exact[name] = False
                    continue
                exact[name] = exact.get(name, True) and res.text == expected
                add(name, "tokens_per_s", tokens / (res.t_done - res.t_post))
                add(name, "client_cpu_ms_per_token", (c1 - c0) * 1000 / tokens)
                if name.startswith("r3nb"):
                    add(name, "server_cpu_ms_per_token", (s1 - s0) * 1000 / tokens)
                    add(name, "events", res.events)
    med = {name: {k: median(v) for k, v in cols.items()} for name, cols in rows.items()}
    ceiling = (med.get("litellm") or {}).get("tokens_per_s")

    def ratio(name: str) -> float | None:
        v = (med.get(name) or {}).get("tokens_per_s")
        return v / ceiling if v and ceiling else None

    lean_cpu = (med.get("r3nb_lean") or {}).get("server_cpu_ms_per_token")
    return {
        "tokens": tokens,
        "reps": reps,
        "median": med,
        "byte_exact": exact,
        "ratio_vs_litellm": {
            "r3nb_lean": ratio("r3nb_lean"),
            "r3nb_litellm": ratio("r3nb_litellm"),
            "httpx": ratio("httpx"),
        },
        "target": "≥ 0.9× direct litellm tokens/s; server CPU ≤ 0.5 ms/token",
        "pass": {
            "throughput_lean": _ge(ratio("r3nb_lean"), 0.9),
            "throughput_litellm_path": _ge(ratio("r3nb_litellm"), 0.9),
            "cpu_per_token_lean": None if lean_cpu is None else lean_cpu <= 0.5,
        },
    }


def _ge(a: float | None, b: float) -> bool | None:
    return None if a is None else a >= b


# --------------------------------------------------------------------------- load


def _sampler(server: Server, duration: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            PY,
            str(ROOT / "bench" / "sampler.py"),
            server.url + "api/status",
            server.token,
            str(duration),
            "--every",
            "0.02",
        ],
        stdout=subprocess.PIPE,
    )


def _sampled(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=120)
    data = json.loads(out or b'{"ms": [], "errors": -1}')
    ms = data["ms"]
    return {
        "n": len(ms),
        "p50_ms": pct(ms, 50),
        "p99_ms": pct(ms, 99),
        "max_ms": max(ms or [0]),
        "errors": data["errors"],
    }


def _pace(res: StreamResult, tokens: int, delay: float) -> float | None:
    """Provider's schedule (N×D from its first chunk to its finish) over what the client saw."""
    if res.t_first is None or res.t_done is None:
        return None
    return tokens * delay / max(1e-9, res.t_done - res.t_first)


class Observer:
    """A panel of another kernel: polls ``?since=REV&from=MID:N`` every interval."""

    def __init__(self, api: httpx.AsyncClient, cid: str, interval: float) -> None:
        self.api, self.cid, self.interval = api, cid, interval
        self.rev = 0
        self.mid: str | None = None
        self.text = ""
        self.status: str | None = None
        self.bytes = 0
        self.polls = 0
        self.errors = 0
        self.seen: list[tuple[float, int]] = []  # (t, length) when the length grew
        self.latency: list[float] = []

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(random.random() * self.interval)  # panels poll at their own phase
        while True:
            t0 = time.perf_counter()
            params: dict[str, str] = {"since": str(self.rev)}
            if self.mid and self.status == "streaming":  # as the panel: empty text too
                params["from"] = f"{self.mid}:{len(self.text)}"
            try:
                r = await self.api.get(f"conversations/{self.cid}", params=params)
            except httpx.HTTPError:
                self.errors += 1
                await asyncio.sleep(self.interval)
                continue
            t1 = time.perf_counter()
            self.latency.append((t1 - t0) * 1000)
            self.polls += 1
            self.bytes += len(r.content)
            if r.status_code != 200:
                self.errors += 1
            else:
                snap = r.json()
                self.rev = snap["revision"]
                for m in snap["messages"]:
                    # A partial update (``offset``) carries only the fields that change
                    # while streaming; it is for the message this observer holds.
                    if "offset" not in m and m["role"] != "assistant":
                        continue
                    self.mid = m["id"]
                    if "offset" in m:
                        self.text = self.text[: m["offset"]] + m["content"]
                    else:
                        self.text = m["content"]
                    self.status = m["status"]
                    if self.text and (not self.seen or len(self.text) > self.seen[-1][1]):
                        self.seen.append((t1, len(self.text)))
            if self.status not in (None, "streaming") or stop.is_set():
                return
            await asyncio.sleep(max(0.0, self.interval - (time.perf_counter() - t0)))


def _staleness(observer: Observer | Watcher, timeline: list[tuple[float, int]]) -> list[float]:
    """For each growth an observer saw: when it saw length L minus when the sender's
    live stream first reached L (an upper bound of flush → seen)."""
    times = [t for t, _ in timeline]
    lengths = [n for _, n in timeline]
    out = []
    for t_seen, length in observer.seen:
        i = bisect.bisect_left(lengths, length)
        if i < len(times):
            out.append((t_seen - times[i]) * 1000)
    return out


async def load(
    server: Server | None,
    provider: Provider,
    *,
    streams: int,
    tokens: int,
    delay: float,
    observers: int = 0,
    snapshot_interval: float = 2.0,
    path: str = "r3nb",
    sample_status: bool = True,
    watch: bool = False,
) -> dict[str, Any]:
    """``streams`` concurrent paced replies via ``path`` (r3nb | litellm | httpx)."""
    expected = generated_text(tokens)
    p = prompt(tokens, delay)
    duration = tokens * delay
    result: dict[str, Any] = {
        "path": path,
        "streams": streams,
        "tokens": tokens,
        "delay": delay,
        "provider_tokens_per_s": streams / delay if delay else None,
    }
    async with client(
        server.api if server else "", server.headers if server else {}, n=streams + observers
    ) as api:
        cids = []
        if server is not None:
            cids = await asyncio.gather(*(new_conversation(api, "load") for _ in range(streams)))
            server.looplag(reset=True)
        sampler = _sampler(server, duration + 1.5) if server and sample_status else None
        if sampler is not None:
            await asyncio.sleep(0.5)  # a few quiet samples first
        s0 = cpu_seconds(server.pid) if server else 0.0
        p0 = cpu_seconds(provider.proc.pid) if provider.proc else 0.0
        c0 = self_cpu()
        t0 = time.perf_counter()
        if path == "r3nb":
            assert server is not None
            tasks = [r3nb_send(api, cid, p, "lean", timeline=observers > 0) for cid in cids]
        elif path == "litellm":
            tasks = [litellm_stream(provider.url, p) for _ in range(streams)]
        else:
            tasks = [httpx_stream(api, provider.url, p) for _ in range(streams)]
        stop = asyncio.Event()
        watchers: list[tuple[int, Observer | Watcher]] = []
        watch_tasks = []
        procs: WatcherProcesses | None = None
        if observers and server is not None and not watch:
            for k in range(observers):
                i = k % streams
                ob = Observer(api, cids[i], snapshot_interval)
                watchers.append((i, ob))
                watch_tasks.append(asyncio.ensure_future(ob.run(stop)))
        if observers and server is not None and watch:
            # Watchers are there before the replies start (a class watching): the 1,000
            # connections' set-up is not what is measured, the replies' fan-out is.
            procs = WatcherProcesses(server, cids, observers)
            await asyncio.to_thread(procs.start)
            server.looplag(reset=True)
            s0 = cpu_seconds(server.pid)
            p0 = cpu_seconds(provider.proc.pid) if provider.proc else 0.0
            c0 = self_cpu()
            t0 = time.perf_counter()
        results: list[StreamResult] = await asyncio.gather(*tasks)
        t1 = time.perf_counter()
        s1 = cpu_seconds(server.pid) if server else 0.0
        p1 = cpu_seconds(provider.proc.pid) if provider.proc else 0.0
        c1 = self_cpu()
        if watch_tasks:
            try:
                await asyncio.wait_for(asyncio.gather(*watch_tasks), snapshot_interval * 3 + 10)
            except TimeoutError:
                stop.set()
        if procs is not None:
            seen = await asyncio.to_thread(procs.results, snapshot_interval * 3 + 10)
            watchers = [(i, Watcher.from_report(report)) for i, report in seen]
        paces = [x for x in (_pace(r, tokens, delay) for r in results) if x is not None]
        ok = [r.error is None and r.status == "complete" and r.text == expected for r in results]
        total_tokens = tokens * sum(ok)
        result.update(
            wall_s=t1 - t0,
            complete_and_byte_exact=f"{sum(ok)}/{streams}",
            errors=sorted({r.error for r in results if r.error})[:3],
            pace_min=min(paces) if paces else None,
            pace_median=median(paces),
            delivered_tokens_per_s=total_tokens / (t1 - t0),
            ttft_p50_ms=median([(r.t_first - r.t_post) * 1000 for r in results if r.t_first]),
            server_cpu_s=s1 - s0 if server else None,
            server_cpu_ms_per_token=(s1 - s0) * 1000 / max(1, total_tokens) if server else None,
            provider_cpu_s=p1 - p0,
            client_cpu_s=c1 - c0,
            duration_expected_s=duration,
        )
        result["pass_pace"] = bool(paces) and min(paces) >= 0.95 and all(ok)
        if sampler is not None:
            result["api_status"] = _sampled(sampler)
        if server is not None:
            result["loop_lag"] = server.looplag(reset=True)
        if watchers:
            stale: list[float] = []
            ratios: list[float] = []
            decoded: list[float] = []
            exact = 0
            lat: list[float] = []
            for i, ob in watchers:
                stale += _staleness(ob, results[i].timeline)
                lat += ob.latency
                reply_bytes = len(results[i].text.encode())
                if reply_bytes:
                    ratios.append(ob.bytes / reply_bytes)
                    decoded.append(getattr(ob, "decoded", ob.bytes) / reply_bytes)
                exact += ob.text == expected and ob.status == "complete"
            result["observers"] = {
                "n": observers,
                "mode": "watch stream" if watch else "polling",
                "poll_interval_s": snapshot_interval,
                "staleness_p50_ms": pct(stale, 50),
                "staleness_p90_ms": pct(stale, 90),
                "staleness_p99_ms": pct(stale, 99),
                "staleness_over_target_share": (
                    sum(x > snapshot_interval * 1000 + 250 for x in stale) / len(stale)
                    if stale
                    else None
                ),
                "staleness_target_ms": snapshot_interval * 1000 + 250,
                "poll_latency_p99_ms": pct(lat, 99),
                "bytes_per_observer_over_reply_median": median(ratios),
                "bytes_per_observer_over_reply_max": max(ratios or [0]),
                # What a client that takes no gzip gets (pollers: the same as above).
                "decoded_bytes_per_observer_over_reply_median": median(decoded),
                "encodings": sorted({getattr(ob, "encoding", "identity") for _, ob in watchers}),
                "final_text_exact": f"{exact}/{observers}",
                "polls": sum(ob.polls for _, ob in watchers),
                "errors": sum(ob.errors for _, ob in watchers),
            }
    return result


# --------------------------------------------------------------------------- flushes


async def flushes(server: Server, sizes: list[tuple[int, float]]) -> list[dict[str, Any]]:
    """DB writes of one reply of each size (tokens, delay), alone on the server."""
    rows = []
    async with client(server.api, server.headers) as api:
        for tokens, delay in sizes:
            cid = await new_conversation(api, "flush")
            h0 = server.health()["counters"]
            rss0 = rss_mb(server.pid)
            res = await r3nb_send(api, cid, prompt(tokens, delay), "lean")
            await asyncio.sleep(0.2)
            h1 = server.health()["counters"]
            assert res.t_done is not None, res.error
            duration = res.t_done - res.t_post
            interval = float(server.r3nb.get("snapshot_interval", 2.0))
            # db_writes counts per message id: the user message's insert is one of them.
            writes = h1["db_writes"] - h0["db_writes"] - 1
            bound = duration / interval + 3
            rows.append(
                {
                    "tokens": tokens,
                    "delay": delay,
                    "duration_s": duration,
                    "db_writes_for_reply": writes,
                    "bound": bound,
                    "flushes": h1["flushes"] - h0["flushes"],
                    "flush_batches": h1["flush_batches"] - h0["flush_batches"],
                    "byte_exact": res.text == generated_text(tokens),
                    "server_rss_growth_mb": rss_mb(server.pid) - rss0,
                    "pass": writes <= bound,
                }
            )
    return rows
