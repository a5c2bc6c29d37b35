"""The server's side of the provider worker: starts it, multiplexes streams over its pipes.

litellm runs in a child process (``worker.py``) so that its import and its per-chunk
CPU never hold the server's GIL. Requests go out as JSON lines on the child's stdin,
answers come back on its stdout, each naming its request id. Two threads do the pipe
I/O, so no read or write ever blocks an event loop, and any loop may stream (the
server's, or an embedded engine's own): a reader thread parses each line and hands it
to the loop of the stream it belongs to; a writer thread drains a queue into stdin.

A worker that dies (killed, crashed) ends its in-flight streams with a reason ("the
provider worker stopped: …"); the next stream starts a new one. The child exits when
its stdin ends, so it never outlives this process, even one killed by SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import queue
import signal
import site
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from r3nb.errors import ProviderError

from .worker_protocol import ModelSpec

log = logging.getLogger("r3nb.provider")
STOPPED = "the provider worker stopped"
#: Seconds a stopping worker gets to exit by itself (it exits at once on stdin's end).
_STOP_GRACE = 3.0
#: Seconds a cancelled stream waits for the text the worker still had for it.
_DRAIN_LIMIT = 1.0


class _Stream:
    """One request's answers, delivered to the loop that awaits them."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def deliver(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody listens
            self.loop.call_soon_threadsafe(self.lines.put_nowait, message)


class _Process:
    """One worker process and the two threads that talk to it."""

    def __init__(self, env: dict[str, str]) -> None:
        # Spawned from the calling thread: on Linux the child's PR_SET_PDEATHSIG fires
        # when *this thread* ends, so callers start workers from a long-lived thread
        # (the server's main thread; ``WorkerClient.stream`` runs on the loop's thread).
        self.proc = subprocess.Popen(  # noqa: S603 (our own module, our own interpreter)
            [sys.executable, "-m", "r3nb.engine.worker", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            # Its own session: a terminal's Ctrl+C goes to the server, which ends live
            # replies through us before stopping.
            start_new_session=True,
        )
        self.ready = threading.Event()
        self.ended = threading.Event()
        self.reason: str | None = None  # why it ended, once it has
        self.stopping = False
        self.streams: dict[int, _Stream] = {}
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.lock = threading.Lock()
        self.outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        stdin, stdout = self.proc.stdin, self.proc.stdout
        threading.Thread(
            target=self._write, args=(stdin,), name="r3nb-worker-writer", daemon=True
        ).start()
        threading.Thread(
            target=self._read, args=(stdout,), name="r3nb-worker-reader", daemon=True
        ).start()

    # --- the threads ------------------------------------------------------------------

    def _write(self, stdin: IO[bytes]) -> None:
        with contextlib.suppress(OSError):
            while (data := self.outbox.get()) is not None:
                stdin.write(data)
                stdin.flush()
        with contextlib.suppress(OSError):
            stdin.close()  # the worker's signal to exit

    def _read(self, stdout: IO[bytes]) -> None:
        failed: str | None = None
        try:
            for raw in stdout:
                try:
                    message = json.loads(raw)
                    rid = message.get("id")
                except (ValueError, AttributeError):
                    log.warning("r3nb: the provider worker sent a line that is not ours")
                    continue
                if rid is None:
                    if message.get("op") == "ready":
                        self._wake(None)
                    elif message.get("op") == "failed":
                        failed = str(message.get("reason"))
                    continue
                with self.lock:
                    stream = self.streams.get(rid)
                if stream is not None:
                    stream.deliver(message)
        finally:
            self._ended(failed)

    def _ended(self, failed: str | None) -> None:
        code = self.proc.wait()
        if failed:
            why = failed
        elif self.stopping:
            why = "the server is stopping"
        elif code < 0:
            why = f"killed by signal {-code} ({_signal_name(-code)})"
        else:
            why = f"it exited with status {code}"
        self.reason = f"{STOPPED}: {why}"
        self.outbox.put(None)  # ends the writer thread
        with self.lock:  # under the lock: no stream opens after this without knowing
            self.ended.set()
            streams = list(self.streams.values())
            self.streams.clear()
        for stream in streams:
            stream.deliver({"stopped": self.reason})
        self._wake(self.reason)
        if not self.stopping:
            log.warning("r3nb: %s", self.reason)

    def _wake(self, error: str | None) -> None:
        if error is None:
            self.ready.set()
        with self.lock:
            waiters, self.waiters = self.waiters, []
        for loop, future in waiters:

            def settle(future: asyncio.Future[None] = future) -> None:
                if not future.done():
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(ProviderError(error))

            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle)

    # --- used from the loops ------------------------------------------------------------

    async def wait_ready(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self.lock:
            if not (self.ready.is_set() or self.ended.is_set()):
                self.waiters.append((asyncio.get_running_loop(), future))
                waiting = True
            else:
                waiting = False
        if waiting:
            await future
        if self.ended.is_set():
            raise ProviderError(self.reason or STOPPED)

    def open(self, rid: int, stream: _Stream) -> bool:
        with self.lock:
            if self.ended.is_set():
                return False
            self.streams[rid] = stream
            return True

    def close(self, rid: int) -> None:
        with self.lock:
            self.streams.pop(rid, None)

    def send(self, message: dict[str, Any]) -> None:
        self.outbox.put(json.dumps(message, ensure_ascii=False).encode() + b"\n")

    def stop(self) -> None:
        """Close stdin (the worker exits), then wait; SIGKILL if it lingers."""
        self.stopping = True
        self.outbox.put(None)
        if not self.ready.is_set():
            self.proc.kill()  # still importing: it reads stdin only once ready
        try:
            self.proc.wait(timeout=_STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.ended.wait(timeout=_STOP_GRACE)


class WorkerClient:
    """The provider worker as this process sees it: one live child at a time, started
    on demand, restarted after it dies."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = _worker_env(env)
        self._process: _Process | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the worker unless one is running (idempotent; never waits for it)."""
        self._current()

    @property
    def started(self) -> bool:
        """Whether a worker was ever started (``start`` or a first stream)."""
        return self._process is not None

    @property
    def ready(self) -> bool:
        process = self._process
        return process is not None and process.ready.is_set() and not process.ended.is_set()

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None or process.ended.is_set() else process.proc.pid

    async def wait_ready(self) -> None:
        await self._current().wait_ready()

    def _current(self) -> _Process:
        with self._lock:
            if self._process is None or self._process.ended.is_set():
                try:
                    self._process = _Process(self.env)
                except OSError as e:
                    raise ProviderError(f"cannot start the provider worker: {e}") from e
            return self._process

    async def stream(
        self, model: ModelSpec, messages: list[dict[str, Any]], demo_delay: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """The worker's answers to one stream request, up to and including its ``end``
        or ``error``; a stopped worker is a ``ProviderError``. Leaving early (cancelled,
        or the consumer stops) cancels the request in the worker, which closes the
        provider's connection."""
        process = self._current()
        await process.wait_ready()
        rid = next(self._ids)
        stream = _Stream()
        if not process.open(rid, stream):
            raise ProviderError(process.reason or STOPPED)
        finished = False
        try:
            process.send({"op": "stream", "id": rid, "model": model, "messages": messages,
                          "demo_delay": demo_delay})  # fmt: skip
            while True:
                message = await stream.lines.get()
                if "stopped" in message:
                    finished = True
                    raise ProviderError(message["stopped"])
                finished = "end" in message or "error" in message
                yield message
                if finished:
                    return
        except asyncio.CancelledError:
            # Stopped (or a deadline): the text the provider had sent by now is in the
            # pipe or in the worker; the reply keeps it. Bounded: a worker that does
            # not answer loses only its own text.
            process.send({"op": "cancel", "id": rid})
            finished = True
            async for message in _drain(stream):
                yield message
            raise
        finally:
            process.close(rid)
            if not finished:  # the consumer stopped iterating
                process.send({"op": "cancel", "id": rid})

    def stop(self) -> None:
        """Stop the worker and wait for it to exit (blocking: call off the loop)."""
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            process.stop()


async def _drain(stream: _Stream) -> AsyncIterator[dict[str, Any]]:
    """A cancelled stream's text lines, until the worker confirms (or ``_DRAIN_LIMIT``)."""
    deadline = asyncio.get_running_loop().time() + _DRAIN_LIMIT
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            message = await asyncio.wait_for(stream.lines.get(), left)
        except TimeoutError:
            return
        if "text" in message:
            yield message
        elif "requested" not in message:  # cancelled, ended, failed or stopped
            return


def _worker_env(env: dict[str, str]) -> dict[str, str]:
    """The environment the worker starts with: the server's as given (proxies, CA
    bundles, provider settings litellm reads itself), r3nb importable, the price list
    local."""
    env = dict(env)
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    root = str(Path(__file__).resolve().parents[2])
    if root not in site.getsitepackages():  # a source checkout: may not be installed
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"
