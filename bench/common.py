"""Shared plumbing of the benchmarks: processes (provider, Jupyter server), clients, stats.

Everything runs on 127.0.0.1. The provider (``tests/provider.py``) and the Jupyter server
run as their own processes, so the client's CPU never shares a GIL with what is measured.
Processes are always stopped by their pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the tests' real-parts helpers are shared with the bench
    sys.path.insert(0, str(ROOT))

from tests.servers import JupyterServer, free_port  # noqa: E402

PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- stats


@contextlib.contextmanager
def no_client_gc_pause() -> Iterator[None]:
    """The bench client's own heap (litellm, imported for other sections: ~1M objects)
    kept out of its garbage collections while a latency is measured. A full collection
    of it stops this process for 200-250 ms (``gc.callbacks``), and whichever burst it
    lands in, r3nb's or the provider's, took it as the server's latency or the
    baseline's. Frozen objects are still freed later: ``unfreeze`` on the way out."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def pct(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def rnd(x: Any, n: int = 2) -> Any:
    if isinstance(x, float):
        return round(x, n)
    if isinstance(x, dict):
        return {k: rnd(v, n) for k, v in x.items()}
    if isinstance(x, list):
        return [rnd(v, n) for v in x]
    return x


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# --------------------------------------------------------------------------- processes


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


class Provider:
    """``python -m tests.provider`` in its own process (its own core when one is free)."""

    def __init__(self, workdir: Path, text_file: Path | None = None) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"provider-{self.port}.log"
        #: Every reply is this file's text (otherwise generated words, ``tests.provider``).
        self.text_file = text_file

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Provider:
        text = ["--text-file", str(self.text_file)] if self.text_file else []
        self.proc = subprocess.Popen(
            [PY, "-m", "tests.provider", "--port", str(self.port), "--tokens", "20", *text],
            cwd=ROOT,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/models", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"provider did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        _stop(self.proc)


def model_entries(provider_url: str) -> dict[str, Any]:
    """Two model entries on the same provider: the lean reader and litellm's path."""
    base = {"model": "openai/fake", "api_base": provider_url, "api_key": "none"}
    return {"lean": dict(base), "litellm": {**base, "stream_path": "litellm"}}


class Server(JupyterServer):
    """A real ``jupyter server`` subprocess with r3nb (and optionally the loop-lag probe):
    the tests' server, ready only once litellm's background import is done, with every
    installed server extension loaded, as a person's server has them."""

    r3nb_alone = False

    def __init__(
        self,
        workdir: Path,
        r3nb: dict[str, Any],
        *,
        probe: bool = True,
        extra_args: list[str] | None = None,
    ) -> None:
        pythonpath = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        super().__init__(
            workdir,
            r3nb,
            extra_args=extra_args,
            extra_env={"PYTHONPATH": pythonpath},  # the probe extension lives in bench/
            wait_for_provider=True,
        )
        self.probe = probe

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 90) -> Server:
        if self.probe:  # jupyter_server merges every config.d file's extensions
            conf = self.workdir / "config" / "jupyter_server_config.d"
            conf.mkdir(parents=True, exist_ok=True)
            (conf / "bench-looplag.json").write_text(
                json.dumps({"ServerApp": {"jpserver_extensions": {"bench.looplag": True}}})
            )
        super().start(timeout)
        return self

    def stop(self) -> None:
        _stop(self.proc)

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(self.api + "health", headers=self.headers, timeout=10).json())

    def looplag(self, reset: bool = False) -> dict[str, Any] | None:
        if not self.probe:
            return None
        r = httpx.get(
            self.url + "bench/looplag",
            params={"reset": "1" if reset else "0"},
            headers=self.headers,
            timeout=10,
        )
        return dict(r.json()) if r.status_code == 200 else None


# --------------------------------------------------------------------------- clients


def client(base: str, headers: dict[str, str] | None = None, n: int = 100) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base,
        headers=headers or {},
        timeout=httpx.Timeout(120.0, connect=30.0, pool=120.0),
        limits=httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10),
    )


@dataclass
class StreamResult:
    """One reply as a client saw it."""

    t_post: float
    t_start: float | None = None  # the ``start`` event: the send admitted and durable
    t_first: float | None = None  # first non-empty delta
    t_done: float | None = None
    text: str = ""
    events: int = 0
    bytes: int = 0
    status: str | None = None
    message_id: str | None = None
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (t, length) per delta
    error: str | None = None


class _Frames:
    """r3nb's SSE as a client reads it (cheap parse: split on blank lines), fed the
    pieces each network read brought, whichever HTTP client read them."""

    def __init__(self, res: StreamResult, timeline: bool) -> None:
        self.res = res
        self.timeline = timeline
        self.parts: list[str] = []
        self.length = 0
        self.buf = b""

    def feed(self, piece: bytes) -> None:
        res = self.res
        res.bytes += len(piece)
        self.buf += piece
        if b"\n\n" not in self.buf:
            return
        *frames, self.buf = self.buf.split(b"\n\n")
        now = time.perf_counter()
        for frame in frames:
            if not frame.startswith(b"event: "):
                continue
            nl = frame.index(b"\n")
            name = frame[7:nl]
            data = json.loads(frame[nl + 7 :])
            res.events += 1
            if name == b"delta":
                text = data["text"]
                if data["offset"] != self.length:
                    res.error = f"offset {data['offset']} != {self.length}"
                self.parts.append(text)
                self.length += len(text)
                if res.t_first is None and text:
                    res.t_first = now
                if self.timeline:
                    res.timeline.append((now, self.length))
            elif name == b"start":
                res.t_start = now
                res.message_id = data["assistant_message"]["id"]
            elif name == b"done":
                res.t_done = now
                res.status = data["message"]["status"]
                if data["message"]["content"] != "".join(self.parts):
                    res.error = "done.content differs from the deltas"

    def close(self) -> StreamResult:
        self.res.text = "".join(self.parts)
        return self.res


async def r3nb_send(
    http: httpx.AsyncClient, cid: str, content: str, model: str, *, timeline: bool = False
) -> StreamResult:
    """POST a message and read its SSE to ``done``."""
    frames = _Frames(StreamResult(t_post=time.perf_counter()), timeline)
    body = json.dumps({"content": content, "model": model})
    try:
        async with http.stream("POST", f"conversations/{cid}/messages", content=body) as r:
            if r.status_code >= 300:
                frames.res.error = f"{r.status_code}: {(await r.aread())[:200]!r}"
                return frames.res
            async for piece in r.aiter_raw():
                frames.feed(piece)
    except httpx.HTTPError as e:
        frames.res.error = f"{type(e).__name__}: {e}"
    return frames.close()


# --------------------------------------------------------------------------- many at once


def aio_client(headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    """A client for fifty streams at once from one process. Not httpx there: its pool
    walks every connection for every request that starts or ends (httpcore 1.0), and at
    fifty streams the bench's own client spent ~1 s of CPU per burst in that walk,
    which showed up as the server's latency (profiled). Both sides of a side-by-side
    figure use this client."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        headers=headers or {},
        timeout=aiohttp.ClientTimeout(total=120.0, connect=30.0),
    )


async def aio_r3nb_send(
    http: aiohttp.ClientSession, api: str, cid: str, content: str, model: str
) -> StreamResult:
    """``r3nb_send`` through ``aio_client``; ``api`` is the server's r3nb API base."""
    frames = _Frames(StreamResult(t_post=time.perf_counter()), False)
    body = json.dumps({"content": content, "model": model})
    try:
        async with http.post(f"{api}conversations/{cid}/messages", data=body) as r:
            if r.status >= 300:
                frames.res.error = f"{r.status}: {(await r.read())[:200]!r}"
                return frames.res
            async for piece in r.content.iter_any():
                frames.feed(piece)
    except aiohttp.ClientError as e:
        frames.res.error = f"{type(e).__name__}: {e}"
    return frames.close()


def _direct_body(content: str) -> dict[str, Any]:
    """A streamed chat request straight to the provider, usage included."""
    return {
        "model": "fake",
        "messages": [{"role": "user", "content": content}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def aio_direct(http: aiohttp.ClientSession, provider_url: str, content: str) -> StreamResult:
    """The same prompt straight to the provider through ``aio_client`` (json per chunk)."""
    res = StreamResult(t_post=time.perf_counter())
    parts: list[str] = []
    body = _direct_body(content)
    try:
        async with http.post(provider_url + "/chat/completions", json=body) as r:
            rest = b""
            async for piece in r.content.iter_any():
                lines = (rest + piece).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    res.events += 1
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            if res.t_first is None:
                                res.t_first = time.perf_counter()
                            parts.append(text)
        res.t_done = time.perf_counter()
        res.status = "complete"
    except aiohttp.ClientError as e:
        res.error = f"{type(e).__name__}: {e}"
    res.text = "".join(parts)
    return res


async def new_conversation(http: httpx.AsyncClient, title: str = "bench") -> str:
    r = await http.post("conversations", content=json.dumps({"title": title}))
    r.raise_for_status()
    return str(r.json()["conversation"]["id"])


# --------------------------------------------------------------------------- baselines


_litellm: Any = None


def litellm_module() -> Any:
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        litellm.disable_streaming_logging = True  # the same knobs r3nb sets
        litellm.telemetry = False
        _litellm = litellm
    return _litellm


async def litellm_stream(
    provider_url: str, content: str, *, timeline: bool = False
) -> StreamResult:
    """The ceiling: ``litellm.acompletion(stream=True)`` on the same provider."""
    litellm = litellm_module()
    res = StreamResult(t_post=time.perf_counter())
    parts: list[str] = []
    length = 0
    try:
        response = await litellm.acompletion(
            model="openai/fake",
            api_base=provider_url,
            api_key="none",
            messages=[{"role": "user", "content": content}],
            stream=True,
            max_retries=0,
            stream_options={"include_usage": True},
        )
        async for chunk in response:
            res.events += 1
            if chunk.choices:
                text = chunk.choices[0].delta.content
                if text:
                    now = time.perf_counter()
                    if res.t_first is None:
                        res.t_first = now
                    parts.append(text)
                    length += len(text)
                    if timeline:
                        res.timeline.append((now, length))
        res.t_done = time.perf_counter()
        res.status = "complete"
    except Exception as e:
        res.error = f"{type(e).__name__}: {str(e)[:200]}"
    res.text = "".join(parts)
    return res


async def httpx_stream(
    http: httpx.AsyncClient, provider_url: str, content: str, *, timeline: bool = False
) -> StreamResult:
    """Context: the same SSE read with raw httpx and json.loads per chunk."""
    res = StreamResult(t_post=time.perf_counter())
    parts: list[str] = []
    length = 0
    body = _direct_body(content)
    try:
        async with http.stream("POST", provider_url + "/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                res.events += 1
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        now = time.perf_counter()
                        if res.t_first is None:
                            res.t_first = now
                        parts.append(text)
                        length += len(text)
                        if timeline:
                            res.timeline.append((now, length))
        res.t_done = time.perf_counter()
        res.status = "complete"
    except httpx.HTTPError as e:
        res.error = f"{type(e).__name__}: {e}"
    res.text = "".join(parts)
    return res


def run(coro: Any) -> Any:
    return asyncio.run(coro)
