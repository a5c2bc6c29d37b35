"""A tiny Jupyter server extension for the benchmarks: samples the server's event-loop lag.

Enabled only by ``bench/run.py`` (``--ServerApp.jpserver_extensions={"bench.looplag": true}``
with the repo on ``PYTHONPATH``). A task sleeps ``PERIOD`` and records how late it woke
up; ``GET /bench/looplag?reset=1`` returns percentiles (ms) and starts a new window.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from tornado import web

PERIOD = 0.01
_samples: list[float] = []
_tasks: set[asyncio.Future[None]] = set()


async def _sampler() -> None:
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(PERIOD)
        _samples.append((loop.time() - t - PERIOD) * 1000)
        if len(_samples) > 200_000:
            del _samples[:100_000]


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))]


class LoopLagHandler(JupyterHandler):
    @web.authenticated
    def get(self) -> None:
        xs = list(_samples)
        if self.get_argument("reset", "0") == "1":
            _samples.clear()
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "n": len(xs),
                    "p50_ms": _pct(xs, 50),
                    "p99_ms": _pct(xs, 99),
                    "max_ms": max(xs) if xs else None,
                    "period_ms": PERIOD * 1000,
                }
            )
        )


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "bench.looplag"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    serverapp.web_app.add_handlers(".*$", [(r"/bench/looplag", LoopLagHandler)])
    from tornado.ioloop import IOLoop

    def start() -> None:
        _tasks.add(asyncio.ensure_future(_sampler()))

    IOLoop.current().add_callback(start)
    serverapp.log.info("bench.looplag: sampling event-loop lag every %g ms", PERIOD * 1000)
