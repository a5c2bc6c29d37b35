"""Real kernels for the kernel-side tests, and a small way to run code in them.

``server_kernel``: started through the Jupyter server's REST API (``POST api/kernels``),
exactly as JupyterLab starts one, so it inherits ``R3NB_URL``/``R3NB_SECRET`` from the
server process. ``plain_kernel``: started by jupyter_client with an environment that has
no r3nb server, i.e. embedded mode, with its DuckDB file in the test's tmp dir.

Fixtures are synchronous (pytest-jupyter runs only test functions on its loop) and drive
the loop with ``run_until_complete``; teardown shuts every kernel down by its manager.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from jupyter_client.manager import start_new_async_kernel

#: Code run first in every test kernel: no colour codes in tracebacks.
_PRELUDE = "get_ipython().colors = 'NoColor'"


@dataclass
class Execution:
    """Everything one ``execute_request`` produced on IOPub, in order."""

    reply: dict[str, Any]
    msg_id: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] in types]

    def stream(self, name: str = "stdout") -> str:
        return "".join(
            m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == name
        )

    @property
    def stdout(self) -> str:
        return self.stream("stdout")

    @property
    def stderr(self) -> str:
        return self.stream("stderr")

    def displays(self) -> list[dict[str, Any]]:
        return self.of_type("display_data", "update_display_data")

    def error(self) -> str | None:
        errors = self.of_type("error")
        if not errors:
            return None
        content = errors[0]["content"]
        return f"{content['ename']}: {content['evalue']}\n" + "\n".join(content["traceback"])


def sent_at(message: dict[str, Any]) -> float:
    date = message["header"]["date"]
    return (date if isinstance(date, datetime) else datetime.fromisoformat(date)).timestamp()


class KernelSession:
    """A started kernel and a client on its channels."""

    def __init__(self, client: Any, kernel_id: str) -> None:
        self.client = client
        self.kernel_id = kernel_id
        #: Every IOPub message read so far, including output of background threads
        #: that arrives after its cell went idle.
        self.iopub: list[dict[str, Any]] = []

    async def execute(
        self,
        code: str,
        timeout: float = 60,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> Execution:
        """Run ``code``; collect its IOPub messages until the kernel is idle again."""
        msg_id = self.client.execute(code, store_history=False, allow_stdin=False)
        execution = Execution(reply={}, msg_id=msg_id)
        async with asyncio.timeout(timeout):
            while True:
                message = await self.client.get_iopub_msg()
                self.iopub.append(message)
                if message["parent_header"].get("msg_id") != msg_id:
                    continue
                if message["msg_type"] == "status":
                    if message["content"]["execution_state"] == "idle":
                        break
                    continue
                execution.messages.append(message)
                if on_message is not None:
                    on_message(message)
            while True:
                reply = await self.client.get_shell_msg()
                if reply["parent_header"].get("msg_id") == msg_id:
                    execution.reply = reply["content"]
                    break
        return execution

    async def ok(self, code: str, timeout: float = 60) -> Execution:
        """Run ``code`` and fail the test with the kernel's traceback if it raised."""
        execution = await self.execute(code, timeout)
        assert execution.reply.get("status") == "ok", execution.error()
        return execution

    async def json(self, expression: str) -> Any:
        """The value of a JSON-serialisable expression evaluated in the kernel."""
        out = await self.ok(f"import json as _j; print(_j.dumps({expression}))")
        return json.loads(out.stdout.strip().splitlines()[-1])


async def _wait_for_env_url(port: int) -> str:
    """``R3NB_URL`` is published by a callback on the server's loop; kernels started
    before it runs would not inherit it. Turn the loop until it has run."""
    for _ in range(1000):
        url = os.environ.get("R3NB_URL", "")
        if f":{port}/" in url:
            return url
        await asyncio.sleep(0)  # one loop iteration, not a timed wait
    raise AssertionError("the r3nb extension never published R3NB_URL")


T = TypeVar("T")

#: Kernel starts tried before a test gives up (see ``_died_at_start``).
_STARTS = 3


def _died_at_start(error: RuntimeError) -> bool:
    """jupyter_client picks a kernel's five ports free, releases them, and the kernel
    binds them: on a busy machine (two xdist workers, servers, Chromium) another process
    can take one in between, and the kernel dies at start ("Address already in use",
    seen once in CI). That is no fault of the test's: start another kernel."""
    return "died" in str(error)


async def _started(start: Callable[[], Awaitable[T]]) -> T:
    """``start()`` again, up to ``_STARTS`` times, while its kernel dies at start
    (``_died_at_start``); ``start`` shuts down a kernel that died before it raises."""
    for attempt in range(1, _STARTS + 1):
        try:
            return await start()
        except RuntimeError as e:
            if not _died_at_start(e) or attempt == _STARTS:
                raise
    raise AssertionError("unreachable")


async def start_embedded_kernel(**kwargs: Any) -> tuple[Any, Any]:
    """``start_new_async_kernel`` (which shuts down a kernel that died at start),
    started again through ``_started``."""
    return await _started(lambda: start_new_async_kernel(kernel_name="python3", **kwargs))


async def _start_server_kernel(jp_serverapp: Any, jp_fetch: Any) -> tuple[str, Any]:
    """A kernel started through the server's REST API and ready: its id and client."""
    manager = jp_serverapp.kernel_manager

    async def start() -> tuple[str, Any]:
        body = json.dumps({"name": "python3"})
        response = await jp_fetch("api", "kernels", method="POST", body=body)
        kernel_id = json.loads(response.body)["id"]
        client = manager.get_kernel(kernel_id).client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=60)
        except RuntimeError:
            client.stop_channels()
            if kernel_id in manager:
                await manager.shutdown_kernel(kernel_id, now=True)
            raise
        return kernel_id, client

    return await _started(start)


@pytest.fixture
def server_kernel(
    jp_serverapp: Any, jp_fetch: Any, jp_http_port: int, jp_asyncio_loop: Any
) -> Iterator[KernelSession]:
    loop = jp_asyncio_loop
    loop.run_until_complete(_wait_for_env_url(jp_http_port))
    kernel_id, client = loop.run_until_complete(_start_server_kernel(jp_serverapp, jp_fetch))
    manager = jp_serverapp.kernel_manager
    try:
        session = KernelSession(client, kernel_id)
        loop.run_until_complete(session.ok(_PRELUDE))
        yield session
    finally:
        client.stop_channels()
        if kernel_id in manager:
            loop.run_until_complete(manager.shutdown_kernel(kernel_id, now=True))


def embedded_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any r3nb server, plus a private store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("R3NB_")}
    env.update(
        R3NB_DB=str(tmp_path / "embedded.duckdb"),
        R3NB_DEMO_DELAY="0.001",
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    env.update(extra)
    return env


@pytest.fixture
def plain_kernel(tmp_path: Path, jp_asyncio_loop: Any) -> Iterator[KernelSession]:
    loop = jp_asyncio_loop
    manager, client = loop.run_until_complete(
        start_embedded_kernel(env=embedded_env(tmp_path), cwd=str(tmp_path))
    )
    try:
        session = KernelSession(client, "")
        loop.run_until_complete(session.ok(_PRELUDE))
        yield session
    finally:
        client.stop_channels()
        loop.run_until_complete(manager.shutdown_kernel(now=True))
