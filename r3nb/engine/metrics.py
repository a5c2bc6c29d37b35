"""Event-loop lag, measured where it happens.

The Jupyter server's loop serves every kernel websocket and file save on the server:
if streaming ever starves it, people notice before any counter does. A timer that
should fire every ``interval`` records how late it fires; health reports p50/p99/max
over the last minute.
"""

from __future__ import annotations

import time
from collections import deque

from tornado.ioloop import PeriodicCallback


class LoopLag:
    def __init__(self, interval: float = 0.1, window: float = 60.0) -> None:
        self.interval = interval
        self.samples: deque[float] = deque(maxlen=max(1, int(window / interval)))
        self._expected = 0.0
        self._callback: PeriodicCallback | None = None

    def _tick(self) -> None:
        now = time.monotonic()
        if self._expected:
            self.samples.append(max(0.0, now - self._expected))
        self._expected = now + self.interval

    def start(self) -> None:
        if self._callback is None:
            self._callback = PeriodicCallback(self._tick, self.interval * 1000)
            self._callback.start()

    def stop(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def report(self) -> dict[str, float | int]:
        """Milliseconds late: p50, p99 and max over the window."""
        if not self.samples:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "samples": 0}
        ordered = sorted(self.samples)

        def pick(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return {
            "p50_ms": round(pick(0.5) * 1000, 2),
            "p99_ms": round(pick(0.99) * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2),
            "samples": len(ordered),
        }
