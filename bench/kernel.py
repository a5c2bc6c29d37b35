"""Kernel side: ``%load_ext r3nb`` cost, and ``%%chat`` under a 5,000 tokens/s provider.

The kernel is started through the server's REST API (so it inherits R3NB_URL/SECRET) and
driven over the server's kernel websocket, as a browser does: IOPub's rate limits
(~1,000 msgs/s, 1 MB/s) are enforced there, and their "IOPub … rate exceeded" notice is
what a person would see.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.provider import generated_text

from .common import Server, median

_LOAD_CODE = """
import json as _j, sys as _s, time as _t
def _rss():
    with open('/proc/self/status') as f:
        return int(f.read().split('VmRSS:')[1].split()[0]) / 1024
_r0 = _rss(); _t0 = _t.perf_counter()
get_ipython().run_line_magic('load_ext', 'r3nb')
_t1 = _t.perf_counter(); _r1 = _rss()
print('BENCH' + _j.dumps({'ms': (_t1 - _t0) * 1000, 'rss_mb': _r1 - _r0,
      'litellm_imported': 'litellm' in _s.modules, 'duckdb_imported': 'duckdb' in _s.modules,
      'httpx_imported': 'httpx' in _s.modules}))
"""


class Kernel:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.session = uuid.uuid4().hex
        self.kid = ""
        self.ws: Any = None

    async def start(self) -> Kernel:
        async with httpx.AsyncClient(headers=self.server.headers, timeout=60) as http:
            r = await http.post(self.server.url + "api/kernels", json={"name": "python3"})
            r.raise_for_status()
            self.kid = r.json()["id"]
        url = f"ws://127.0.0.1:{self.server.port}/api/kernels/{self.kid}/channels"
        self.ws = await websocket_connect(
            HTTPRequest(url + f"?session_id={self.session}", headers=self.server.headers),
            max_message_size=256 * 1024 * 1024,
        )
        for _ in range(60):  # kernel_info until it answers
            try:
                await self.execute("1", timeout=5)
                return self
            except TimeoutError:
                continue
        raise TimeoutError("kernel never answered")

    async def execute(self, code: str, timeout: float = 120) -> list[tuple[float, dict[str, Any]]]:
        """Run ``code``; (arrival time, message) of every message until idle."""
        msg_id = uuid.uuid4().hex
        self.ws.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "username": "bench",
                        "session": self.session,
                        "msg_type": "execute_request",
                        "version": "5.3",
                        "date": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "buffers": [],
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                }
            )
        )
        out: list[tuple[float, dict[str, Any]]] = []
        idle = False
        async with asyncio.timeout(timeout):
            while not idle:
                raw = await self.ws.read_message()
                if raw is None:
                    raise RuntimeError("kernel websocket closed")
                if isinstance(raw, bytes):
                    continue
                msg = json.loads(raw)
                parent = (msg.get("parent_header") or {}).get("msg_id")
                if parent != msg_id and msg.get("msg_type") != "stream":
                    continue
                out.append((time.perf_counter(), msg))
                if (
                    parent == msg_id
                    and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"
                ):
                    idle = True
        return out

    async def stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.kid:
            async with httpx.AsyncClient(headers=self.server.headers, timeout=60) as http:
                await http.delete(self.server.url + f"api/kernels/{self.kid}")


def _stdout(messages: list[tuple[float, dict[str, Any]]]) -> str:
    return "".join(m["content"].get("text", "") for _, m in messages if m["msg_type"] == "stream")


async def run(server: Server, reps: int, tokens: int) -> dict[str, Any]:
    loads: list[dict[str, Any]] = []
    chat: dict[str, Any] = {}
    for i in range(reps):
        kernel = await Kernel(server).start()
        try:
            out = await kernel.execute(_LOAD_CODE)
            line = next(x for x in _stdout(out).splitlines() if x.startswith("BENCH"))
            loads.append(json.loads(line[5:]))
            if i == 0:
                chat = await _chat(kernel, tokens)
        finally:
            await kernel.stop()
    return {
        "load_ext_ms_median": median([x["ms"] for x in loads]),
        "load_ext_rss_mb_median": median([x["rss_mb"] for x in loads]),
        "load_ext_runs": loads,
        "load_ext_target": "< 300 ms",
        "load_ext_pass": (median([x["ms"] for x in loads]) or 1e9) < 300,
        "chat": chat,
    }


async def _chat(kernel: Kernel, tokens: int) -> dict[str, Any]:
    delay = 1 / 5000  # 5,000 tokens/s
    code = f"%%chat -m lean\nbench !tokens={tokens} !delay={delay:g}"
    t0 = time.perf_counter()
    out = await kernel.execute(code, timeout=max(120, tokens * delay * 10))
    t1 = time.perf_counter()
    displays = [t for t, m in out if m["msg_type"] in ("display_data", "update_display_data")]
    exceeded = [
        m["content"].get("text", "")[:80]
        for _, m in out
        if m["msg_type"] == "stream" and "rate exceeded" in m["content"].get("text", "")
    ]
    per_second = 0
    j = 0
    for i, t in enumerate(displays):  # the busiest one-second window
        while displays[j] < t - 1.0:
            j += 1
        per_second = max(per_second, i - j + 1)
    final = ""
    for _, m in out:
        if m["msg_type"] in ("display_data", "update_display_data"):
            data = m["content"].get("data", {})
            final = data.get("text/markdown") or data.get("text/plain") or final
    expected = generated_text(tokens)
    bytes_iopub = sum(
        len(json.dumps(m["content"]))
        for _, m in out
        if m["msg_type"] in ("display_data", "update_display_data")
    )
    return {
        "tokens": tokens,
        "provider_tokens_per_s": 5000,
        "wall_s": t1 - t0,
        "display_messages": len(displays),
        "max_display_messages_in_1s": per_second,
        "iopub_display_bytes": bytes_iopub,
        "rate_exceeded_notices": exceeded,
        "final_output_has_whole_reply": expected.strip()[-200:] in final,
        "errors": [m["content"].get("ename") for _, m in out if m["msg_type"] == "error"],
        "target": "no 'IOPub message rate exceeded', ≤ 30 display updates/s",
        "pass": not exceeded and per_second <= 30,
    }
