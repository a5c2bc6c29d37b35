"""Hub mode at scale (issue 18, "Scale"): N users' relays against one real hub, the r3nb
service and PostgreSQL, as lightweight clients.

    python bench/hub_scale.py --users 100,300,1000 [--streaming 0.2] [--rate 50]
    make bench-hub BENCH_HUB_ARGS="--users 100,300"

Real parts, all on 127.0.0.1: PostgreSQL (``tests/pg.py``: initdb + pg_ctl in a folder
of its own, ``fsync=off``), JupyterHub with configurable-http-proxy and the r3nb service
registered as an external service (``tests/hub.py``), the fake provider in its own
process (``tests/provider.py``, paced at ``--rate`` tokens a second). No single-user
server is spawned: each simulated user is what its server's relay sends the service, a
token pair of its own (a server token with the relay's scopes and the person's own
token, both created through the hub's REST API), so the service resolves N distinct
identities through HubAuth as it would on a hub.

Per load: ``--streaming`` of the users send replies back to back (each reply
``--tokens`` long, at ``--rate`` tokens/s) in a conversation of their own, shared with a
hub group everyone is in; the others watch those conversations (``GET
conversations/{cid}/watch``), spread evenly. Two measured windows of ``--seconds``:

- A: the streams alone (no watcher connected): CPU per token and per flush of each
  process (utime+stime from ``/proc/<pid>/stat``; PostgreSQL: the postmaster with its
  reaped children plus every live backend);
- B: the same streams with every watcher connected: (CPU_B - CPU_A) per observer per
  second; the service's event-loop lag p99 (its health report: the last 60 s); observer
  staleness p99 (when a watcher got text against when that reply's sender got it, on a
  sample of conversations whose events are parsed in full).

From each load's figures: how many service processes the full load of 1,000 users
(``--paper-users``) needs on paper, keeping each at most ``--busy`` of one core.

Clients are raw asyncio sockets speaking HTTP/1.0 (a response is its bytes until close:
no chunk framing to undo); only the sampled conversations' events are JSON-decoded, so
the client's own CPU (reported) stays small next to what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import CLK_TCK, Provider, pct, rnd, self_cpu  # noqa: E402
from r3nb.service.pacing import ENV_INTERVAL  # noqa: E402
from r3nb.service.wire import PERSON_HEADER  # noqa: E402
from tests.hub import Hub, ServicePlan  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402
from tests.provider import generated_text  # noqa: E402

GROUP = "bench"


# --------------------------------------------------------------------------- CPU


def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def process_cpu(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu(root: int) -> float:
    """``root`` with the children it reaped, plus its live children (PostgreSQL's
    backends come and go; each is counted once, live or reaped)."""
    fields = _stat(root)
    total = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            child = _stat(int(entry.name))
            if int(child[1]) == root:
                total += int(child[11]) + int(child[12])
    return total / CLK_TCK


@dataclass
class Parts:
    """The processes measured, and how to read each one's CPU seconds."""

    readers: dict[str, Callable[[], float]]

    def sample(self) -> dict[str, float]:
        out = {}
        for name, read in self.readers.items():
            try:
                out[name] = read()
            except OSError:
                out[name] = float("nan")
        return out


# --------------------------------------------------------------------------- clients


async def http(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """Send one HTTP/1.0 request; return the reader positioned at the body, and the status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.0", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return reader, writer, status


async def call_json(
    port: int, method: str, path: str, headers: dict[str, str], body: Any = None
) -> Any:
    raw = json.dumps(body).encode() if body is not None else b""
    reader, writer, status = await http(port, method, path, headers, raw)
    try:
        data = await reader.read()
    finally:
        writer.close()
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
    return json.loads(data)


def events_in(buffer: bytearray) -> list[bytes]:
    """Whole SSE events at the head of ``buffer`` (removed from it)."""
    end = buffer.rfind(b"\n\n")
    if end < 0:
        return []
    whole = bytes(buffer[: end + 2])
    del buffer[: end + 2]
    return [e for e in whole.split(b"\n\n") if e]


def parse(event: bytes) -> tuple[str, Any]:
    name, data = "message", b""
    for line in event.split(b"\n"):
        if line.startswith(b"event: "):
            name = line[7:].decode()
        elif line.startswith(b"data: "):
            data += line[6:]
    return name, json.loads(data) if data else None


@dataclass
class Timeline:
    """When the sender of a sampled conversation got each piece of text."""

    ends: dict[str, list[int]] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)

    def add(self, mid: str, end: int, at: float) -> None:
        self.ends.setdefault(mid, []).append(end)
        self.times.setdefault(mid, []).append(at)

    def reached(self, mid: str, end: int) -> float | None:
        ends = self.ends.get(mid)
        if not ends:
            return None
        i = bisect.bisect_left(ends, end)
        return self.times[mid][i] if i < len(ends) else None


@dataclass
class Counts:
    chars: int = 0  # text the senders got (tokens: chars / the provider's chars per token)
    deltas: int = 0  # delta events the senders got (writes, once coalesced)
    replies: int = 0
    errors: list[str] = field(default_factory=list)
    staleness: list[float] = field(default_factory=list)  # seconds, sampled watchers
    watch_events: int = 0


class User:
    def __init__(self, name: str, relay: str, person: str) -> None:
        self.name = name
        self.headers = {"Authorization": f"token {relay}", PERSON_HEADER: person}


async def sender(
    port: int, base: str, user: User, cid: str, content: str, window: list[Counts],
    timeline: Timeline | None, stop: asyncio.Event,
) -> None:  # fmt: skip
    """Replies back to back; counted in ``window[0]`` (the window being measured)."""
    body = json.dumps({"content": content}).encode()
    while not stop.is_set():
        counts = window[0]
        try:
            reader, writer, status = await http(
                port, "POST", f"{base}conversations/{cid}/messages", user.headers, body
            )
        except OSError as e:
            counts.errors.append(f"send: {e}")
            await asyncio.sleep(1)
            continue
        try:
            if status != 200:
                counts.errors.append(f"send {status}: {(await reader.read())[:200]!r}")
                await asyncio.sleep(1)
                continue
            buffer = bytearray()
            mid = ""
            while chunk := await reader.read(65536):
                buffer += chunk
                at = time.monotonic()
                for event in events_in(buffer):
                    counts = window[0]
                    if event.startswith(b"event: delta"):
                        _, data = parse(event)
                        counts.deltas += 1
                        counts.chars += len(data["text"])
                        if timeline is not None:
                            timeline.add(mid, data["offset"] + len(data["text"]), at)
                    elif timeline is not None and event.startswith(b"event: start"):
                        mid = parse(event)[1]["assistant_message"]["id"]
                    elif event.startswith(b"event: done"):
                        counts.replies += 1
        finally:
            writer.close()


async def watcher(
    port: int, base: str, user: User, cid: str, window: list[Counts],
    timeline: Timeline | None, stop: asyncio.Event, connected: Callable[[], None],
) -> None:  # fmt: skip
    """One observer's watch stream; counted in ``window[0]``."""
    reader, writer, status = await http(
        port, "GET", f"{base}conversations/{cid}/watch?since=0", user.headers
    )
    connected()
    if status != 200:
        window[0].errors.append(f"watch {status}: {(await reader.read())[:200]!r}")
        writer.close()
        return
    buffer = bytearray()
    try:
        while not stop.is_set():
            chunk = await reader.read(65536)
            if not chunk:
                window[0].errors.append("watch stream ended")
                return
            buffer += chunk
            at = time.monotonic()
            counts = window[0]
            for event in events_in(buffer):
                counts.watch_events += 1
                if timeline is None:
                    continue
                name, data = parse(event)
                for mid, end in _ends(name, data):
                    reached = timeline.reached(mid, end)
                    if reached is not None and end > 0:
                        counts.staleness.append(max(0.0, at - reached))
    finally:
        writer.close()


def _ends(name: str, data: Any) -> list[tuple[str, int]]:
    """(message, text end) a watch event brings."""
    if name == "delta":
        return [(data["message_id"], data["offset"] + len(data["text"]))]
    if name == "snapshot":
        return [
            (m["id"], (m.get("offset") or 0) + len(m["content"]))
            for m in data["messages"]
            if m.get("role") != "user" and m.get("content")
        ]
    return []


# --------------------------------------------------------------------------- setup


@dataclass
class Rig:
    hub: Hub
    parts: Parts
    users: list[User] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.hub.service_port

    @property
    def base(self) -> str:
        assert self.hub.plan is not None
        return f"/services/{self.hub.plan.name}/r3nb/api/"


def token_pairs(hub: Hub, names: list[str]) -> list[User]:
    """Each user's relay token and own token, through the hub's REST API."""

    def pair(name: str) -> User:
        return User(name, hub.relay_token(name, note="bench relay"), hub.token(name, "bench"))

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(pair, names))


def start_hub(
    workdir: Path, provider: Provider, cluster: PostgresCluster, names: list[str],
    args: argparse.Namespace,
) -> Hub:  # fmt: skip
    """The hub with the service on a new database of ``cluster`` (not started)."""
    model = {"model": "openai/fake", "api_base": provider.url, "api_key": "none"}
    plan = ServicePlan(
        db_path=cluster.create_database(),
        engine={
            "models": {"fake": model},
            "default_model": "fake",
            "snapshot_interval": args.snapshot_interval,
            "rate_limit_per_minute": 1_000_000,
            "max_concurrent_streams": 1_000_000,
        },
        groups={GROUP: names},
        env={} if args.delta_interval is None else {ENV_INTERVAL: str(args.delta_interval)},
    )
    (workdir / "hub").mkdir()
    return Hub(workdir / "hub", provider.url, users=names, sharers=(), service=plan)


def parts_of(hub: Hub, provider: Provider, cluster: PostgresCluster) -> Parts:
    assert hub.service_proc is not None
    assert hub.proc is not None
    assert cluster.pid is not None
    assert provider.proc is not None
    proxy_pid = int((hub.run / "proxy.pid").read_text())
    service_pid, hub_pid, pg_pid = hub.service_proc.pid, hub.proc.pid, cluster.pid
    provider_pid = provider.proc.pid
    return Parts(
        {
            "service": lambda: process_cpu(service_pid),
            "hub": lambda: process_cpu(hub_pid),
            "proxy": lambda: process_cpu(proxy_pid),
            "postgresql": lambda: tree_cpu(pg_pid),
            "provider": lambda: process_cpu(provider_pid),
            "clients (this process)": self_cpu,
        }
    )


# --------------------------------------------------------------------------- a load


async def health(rig: Rig) -> dict[str, Any]:
    return dict(await call_json(rig.port, "GET", rig.base + "health", rig.users[0].headers))


async def measure(
    rig: Rig, seconds: float
) -> tuple[dict[str, float], dict[str, Any], dict[str, Any], float]:
    h0, c0, t0 = await health(rig), rig.parts.sample(), time.monotonic()
    await asyncio.sleep(seconds)
    h1, c1, t1 = await health(rig), rig.parts.sample(), time.monotonic()
    cpu = {k: c1[k] - c0[k] for k in c0}
    return cpu, h0, h1, t1 - t0


async def gather_limited(jobs: list[Callable[[], Awaitable[Any]]], limit: int = 32) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(one(j) for j in jobs))


async def load(rig: Rig, users: int, args: argparse.Namespace) -> dict[str, Any]:
    people = rig.users[:users]
    n_stream = max(1, round(users * args.streaming))
    streamers, watchers_of = people[:n_stream], people[n_stream:]
    sampled = min(args.sampled, n_stream)
    port, base = rig.port, rig.base

    async def conversation(user: User) -> str:
        made = await call_json(
            port, "POST", base + "conversations", user.headers, {"title": "scale"}
        )
        cid = str(made["conversation"]["id"])
        await call_json(
            port, "POST", f"{base}conversations/{cid}/shares", user.headers, {"group": GROUP}
        )
        return cid

    cids = await gather_limited([lambda u=u: conversation(u) for u in streamers])  # type: ignore[misc]
    timelines = [Timeline() if i < sampled else None for i in range(n_stream)]
    setup = Counts()
    chars_per_token = len(generated_text(args.tokens)) / args.tokens
    window = [setup]  # the senders and watchers count into window[0]
    content = f"scale !tokens={args.tokens} !delay={1 / args.rate:g}"
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(sender(port, base, user, cid, content, window, timeline, stop))
        for user, cid, timeline in zip(streamers, cids, timelines, strict=True)
    ]
    result: dict[str, Any] = {"users": users, "streaming": n_stream, "watchers": len(watchers_of)}
    try:
        await asyncio.sleep(args.warmup)
        counts_a = window[0] = Counts()
        cpu_a, h0, h1, wall_a = await measure(rig, args.seconds)
        flushes_a = h1["counters"]["flushes"] - h0["counters"]["flushes"]
        tokens_a = round(counts_a.chars / chars_per_token)
        # Window B: every watcher connected (spread over the conversations), then measured.
        window[0] = setup
        opened = 0
        all_open = asyncio.Event()

        def connected() -> None:
            nonlocal opened
            opened += 1
            if opened == len(watchers_of):
                all_open.set()

        for i, user in enumerate(watchers_of):
            k = i % n_stream
            tasks.append(
                asyncio.create_task(
                    watcher(port, base, user, cids[k], window, timelines[k], stop, connected)
                )
            )
        if watchers_of:
            await asyncio.wait_for(all_open.wait(), 300)
        await asyncio.sleep(args.warmup)
        counts_b = window[0] = Counts()
        cpu_b, h2, h3, wall_b = await measure(rig, args.seconds)
        flushes_b = h3["counters"]["flushes"] - h2["counters"]["flushes"]
        tokens_b = round(counts_b.chars / chars_per_token)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    per_token = {k: 1000 * v / max(1, tokens_a) for k, v in cpu_a.items()}
    per_flush = {k: 1000 * v / max(1, flushes_a) for k, v in cpu_a.items()}
    per_observer = {
        k: 1000 * ((cpu_b[k] / wall_b) - (cpu_a[k] / wall_a)) / max(1, len(watchers_of))
        for k in cpu_a
    }
    stale = counts_b.staleness
    result.update(
        {
            "window_s": args.seconds,
            "A_streams_only": {
                "tokens": tokens_a,
                "tokens_per_s": tokens_a / wall_a,
                "sender_deltas_per_token": counts_a.deltas / max(1, tokens_a),
                "flushes": flushes_a,
                "cpu_s_per_s": {k: v / wall_a for k, v in cpu_a.items()},
                "cpu_ms_per_token": per_token,
                "cpu_ms_per_flush": per_flush,
            },
            "B_with_watchers": {
                "tokens": tokens_b,
                "tokens_per_s": tokens_b / wall_b,
                "flushes": flushes_b,
                "cpu_s_per_s": {k: v / wall_b for k, v in cpu_b.items()},
                "cpu_ms_per_observer_s": per_observer,
                "watch_events": counts_b.watch_events,
                "loop_lag_ms": h3["loop_lag"],
                "staleness_samples": len(stale),
                "staleness_p50_ms": 1000 * (pct(stale, 50) or 0),
                "staleness_p99_ms": 1000 * (pct(stale, 99) or 0),
                "staleness_budget_ms": 1000 * args.snapshot_interval + 250,
            },
            "errors": (setup.errors + counts_a.errors + counts_b.errors)[:5],
            "error_count": len(setup.errors) + len(counts_a.errors) + len(counts_b.errors),
        }
    )
    return result


def on_paper(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The full load (``--paper-users``) from one measured load's per-unit figures."""
    a, b = result["A_streams_only"], result["B_with_watchers"]
    users = args.paper_users
    streams = users * args.streaming
    tokens_per_s = streams * args.rate
    watchers = users - streams
    out: dict[str, Any] = {"users": users, "tokens_per_s": tokens_per_s, "watchers": watchers}
    for part in ("service", "postgresql", "hub", "proxy"):
        cores = (
            tokens_per_s * a["cpu_ms_per_token"][part] / 1000
            + watchers * max(0.0, b["cpu_ms_per_observer_s"][part]) / 1000
        )
        out[f"{part}_cores"] = cores
    out["service_processes"] = max(1, math.ceil(out["service_cores"] / args.busy))
    out["assumes"] = (
        f"CPU scales linearly with tokens/s and watchers (measured at {result['users']} users);"
        f" each service process kept at most {args.busy:.0%} of one core"
    )
    return out


# --------------------------------------------------------------------------- main


async def run_all(rig: Rig, args: argparse.Namespace, sizes: list[int]) -> list[dict[str, Any]]:
    out = []
    for size in sizes:
        print(f"[hub_scale] {size} users ...", file=sys.stderr, flush=True)
        result = await load(rig, size, args)
        for _ in range(600):  # the replies the senders left run to their end first
            if (await health(rig))["active_streams"] == 0:
                break
            await asyncio.sleep(0.1)
        print(json.dumps(rnd(result, 3)), file=sys.stderr, flush=True)
        out.append(result)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="100,300,1000", help="comma-separated loads")
    parser.add_argument("--streaming", type=float, default=0.2, help="share of users streaming")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens/s of each stream")
    parser.add_argument("--tokens", type=int, default=250, help="tokens per reply")
    parser.add_argument("--seconds", type=float, default=15.0, help="each measured window")
    parser.add_argument("--warmup", type=float, default=3.0, help="before each window")
    parser.add_argument("--snapshot-interval", type=float, default=1.0)
    parser.add_argument("--sampled", type=int, default=10, help="conversations timed in full")
    parser.add_argument("--paper-users", type=int, default=1000)
    parser.add_argument("--busy", type=float, default=0.6, help="of a core per service process")
    parser.add_argument(
        "--delta-interval",
        type=float,
        help=f"the service's {ENV_INTERVAL} (0: a write per delta; default: the service's)",
    )
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.users.split(",") if s]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * max(sizes) + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the service inherits it
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    workdir = Path(tempfile.mkdtemp(prefix="r3nb-hub-scale-"))
    names = [f"u{i:04d}" for i in range(max(sizes))]
    provider = Provider(workdir)
    cluster = PostgresCluster(workdir / "pg")
    hub: Hub | None = None
    try:
        t = time.monotonic()
        provider.start()
        cluster.start()
        hub = start_hub(workdir, provider, cluster, names, args)
        hub.start_service()
        hub.start(timeout=300)
        rig = Rig(hub, parts_of(hub, provider, cluster), token_pairs(hub, names))
        print(f"[hub_scale] up in {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
        results = asyncio.run(run_all(rig, args, sizes))
    finally:
        if hub is not None:
            hub.stop()
        provider.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "machine": {"cores": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "loads": results,
        # From each load's figures (the load least disturbed by others is the one to trust
        # on a shared machine; on a quiet one they should agree).
        "on_paper": [on_paper(result, args) for result in results],
    }
    text = json.dumps(rnd(report, 3), indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
