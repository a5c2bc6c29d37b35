"""``make soak``: a steady mix of streams, observers, cancels, provider faults and sweeps
against a real ``jupyter server``, for a long time (default 30 minutes).

It reports at intervals and at the end: the server's RSS, the DB file's size, event-loop
lag p99 (measured inside the server, GET health), ``/api/status`` latency p99 from
outside, streams done/errored/cancelled, and any DuckDB internal error in the server
log. Goal: flat memory, DB size proportional to stored text, zero internal errors.

    python bench/soak.py [--minutes 30] [--streams 20] [--observers 20] [--report 60]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.provider import FakeProvider, Scenario
from tests.servers import JupyterServer


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


class Soak:
    def __init__(self, server: JupyterServer, args: argparse.Namespace) -> None:
        self.server = server
        self.args = args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {"complete": 0, "error": 0, "cancelled": 0, "bad": 0}
        self.text_chars = 0
        self.status_ms: list[float] = []
        self.cids: list[str] = []

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.api, headers=self.server.headers, timeout=60)

    def streamer(self, seed: int) -> None:
        rng = random.Random(seed)
        with self.client() as client:
            cid = client.post("conversations", json={"title": f"soak {seed}"}).json()[
                "conversation"
            ]["id"]
            with self.lock:
                self.cids.append(cid)
            while not self.stop.is_set():
                roll = rng.random()
                directives = f"!tokens={rng.randint(20, 400)} !delay=0.01"
                if roll < 0.05:
                    directives += " !fault=500"
                elif roll < 0.10:
                    directives += f" !fault=drop !after={rng.randint(1, 15)}"
                cancel = 0.10 <= roll < 0.18
                self.one_stream(client, cid, directives, cancel)

    def one_stream(self, client: httpx.Client, cid: str, directives: str, cancel: bool) -> None:
        mid = None
        final: dict[str, Any] | None = None
        with client.stream(
            "POST", f"conversations/{cid}/messages", json={"content": directives}
        ) as r:
            if r.status_code != 200:
                with self.lock:
                    self.counts["bad"] += 1
                return
            event = None
            for line in r.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:])
                    if event == "start":
                        mid = data["assistant_message"]["id"]
                        if cancel:
                            client.post(f"messages/{mid}/cancel")
                    elif event == "done":
                        final = data["message"]
        if final is None:
            with self.lock:
                self.counts["bad"] += 1
            return
        with self.lock:
            self.counts[final["status"]] = self.counts.get(final["status"], 0) + 1
            self.text_chars += len(final["content"])

    def observer(self, seed: int) -> None:
        rng = random.Random(seed)
        since: dict[str, int] = {}
        with self.client() as client:
            while not self.stop.is_set():
                with self.lock:
                    cid = rng.choice(self.cids) if self.cids else None
                if cid:
                    snap = client.get(f"conversations/{cid}", params={"since": since.get(cid, 0)})
                    if snap.status_code == 200:
                        since[cid] = snap.json()["revision"]
                self.stop.wait(2.0)

    def prober(self) -> None:
        with httpx.Client(base_url=self.server.url, headers=self.server.headers) as client:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                client.get("api/status")
                with self.lock:
                    self.status_ms.append((time.perf_counter() - t0) * 1000)
                self.stop.wait(0.1)

    def report(self, started: float) -> dict[str, Any]:
        assert self.server.proc is not None
        with self.client() as client:
            health = client.get("health").json()
        db = Path(self.server.r3nb["db_path"])
        wal = db.with_name(db.name + ".wal")
        with self.lock:
            row = {
                "minutes": round((time.monotonic() - started) / 60, 1),
                "rss_mb": round(rss_kb(self.server.proc.pid) / 1024, 1),
                "db_mb": round(
                    (db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)) / 2**20, 2
                ),
                "stored_text_mb": round(self.text_chars / 2**20, 2),
                "loop_lag_p99_ms": health["loop_lag"]["p99_ms"],
                "status_p99_ms": round(p99(self.status_ms), 1),
                **self.counts,
                "internal_errors": self.server.log().count("DuckDB internal error"),
                "active_streams": health["active_streams"],
            }
            self.status_ms.clear()
        print(json.dumps(row), flush=True)
        return row


def _forget_old_requests(provider: FakeProvider, keep: int = 100) -> None:
    """The fake provider records every request body, reply and text sent (tests read them by
    index); over a 30-minute soak that grew this driver to 5 GB, and its garbage
    collection competed with the server for the two cores. Old entries are emptied in
    place: the indices stay valid. Few are kept: each streamer's conversation grows for the
    whole soak, and every request body carries its history (up to the context window)."""
    for log in (provider.requests, provider.replies, provider.sent):
        empty: Any = {} if log is provider.requests else ""
        for i in range(max(0, len(log) - keep)):
            log[i] = empty


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--observers", type=int, default=20)
    parser.add_argument("--report", type=float, default=60.0, help="seconds between reports")
    parser.add_argument("--out", default="bench/soak.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="r3nb-soak-"))
    with FakeProvider(Scenario(tokens=100, delay=0.01)) as provider:
        server = JupyterServer(
            work,
            {
                "db_path": str(work / "soak.duckdb"),
                "snapshot_interval": 2.0,
                "cleanup_interval": 10.0,
                "stale_after": 30.0,
                "rate_limit_per_minute": 0,
                "max_concurrent_streams": 0,
                "models": {
                    "fake": {
                        "model": "openai/fake",
                        "api_base": provider.url,
                        "api_key": "sk-soak",
                        "input_cost_per_token": 1e-6,
                        "output_cost_per_token": 2e-6,
                        # A real model's window: each streamer's conversation grows for
                        # the whole soak; without one, every prompt carried all of it.
                        "max_context_tokens": 8192,
                    }
                },
                "default_model": "fake",
            },
        ).start()
        soak = Soak(server, args)
        threads = [threading.Thread(target=soak.streamer, args=(i,)) for i in range(args.streams)]
        threads += [
            threading.Thread(target=soak.observer, args=(100 + i,)) for i in range(args.observers)
        ]
        threads.append(threading.Thread(target=soak.prober))
        started = time.monotonic()
        rows = []
        try:
            for t in threads:
                t.start()
            deadline = started + args.minutes * 60
            while time.monotonic() < deadline:
                time.sleep(min(args.report, max(0.0, deadline - time.monotonic())))
                rows.append(soak.report(started))
                _forget_old_requests(provider)
        finally:
            soak.stop.set()
            for t in threads:
                t.join(timeout=120)
            rows.append(soak.report(started))
            server.stop()
    first, last = rows[0], rows[-1]
    summary = {
        "rows": rows,
        "rss_growth_mb": round(last["rss_mb"] - first["rss_mb"], 1),
        # DB bytes per byte of reply text (prompts, metadata and WAL included)
        "db_bytes_per_text_byte": round(last["db_mb"] / max(0.01, last["stored_text_mb"]), 2),
        "internal_errors": last["internal_errors"],
        "loop_lag_p99_ms_worst": max(r["loop_lag_p99_ms"] for r in rows),
        "status_p99_ms_median": statistics.median(r["status_p99_ms"] for r in rows),
    }
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))
    return 1 if summary["internal_errors"] or last["bad"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
