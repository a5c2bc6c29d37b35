"""litellm runs in the server's provider worker, never in the server (issue 14/16).

Real ``jupyter server`` subprocesses: the worker is their child process, which these
tests find, kill and watch in ``/proc``. Whether a process imported litellm is recorded
by a ``sitecustomize`` on the servers' ``PYTHONPATH`` (it runs in every Python process
started with that environment: the server and its worker), one file per process id.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.client import Api
from tests.provider import FakeProvider, generated_text
from tests.servers import JupyterServer

SITECUSTOMIZE = """
import os, sys

def _record():
    with open(os.path.join({folder!r}, str(os.getpid())), "a") as f:
        f.write("litellm\\n")

class _WatchLitellm:
    \"\"\"Records litellm's execution (not a lookup: importlib.util.find_spec is no import).\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name != "litellm":
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else finder.find_spec(name, path, target)
            if spec is not None:
                run = spec.loader.exec_module
                def exec_module(module):
                    _record()
                    return run(module)
                spec.loader.exec_module = exec_module
                return spec
        return None

sys.meta_path.insert(0, _WatchLitellm())
"""


def worker_pids(server_pid: int) -> list[int]:
    """Live provider workers whose parent is ``server_pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == server_pid and b"r3nb.engine.worker" in cmdline and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # another process's state: nothing to await


def start(
    workdir: Path,
    provider: FakeProvider,
    *,
    ready: bool = True,
    stream_path: str = "litellm",
) -> JupyterServer:
    imports = workdir / "imports"
    site = workdir / "site"
    imports.mkdir(parents=True)
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(folder=str(imports)))
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    models = {
        "fake": {"model": "openai/fake", "api_base": provider.url, "api_key": "sk-test-worker-0123",
                 "stream_path": stream_path},
    }  # fmt: skip
    config = {"db_path": str(workdir / "r3nb.duckdb"), "models": models, "snapshot_interval": 0.3}
    server = JupyterServer(
        workdir / "srv", config, extra_env={"PYTHONPATH": path}, wait_for_provider=ready
    )
    return server.start()


@pytest.fixture(scope="module")
def module_provider() -> Iterator[FakeProvider]:
    with FakeProvider() as p:
        yield p


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, module_provider: FakeProvider
) -> Iterator[JupyterServer]:
    server = start(tmp_path_factory.mktemp("worker"), module_provider)
    yield server
    server.stop()


@pytest.fixture
def api(server: JupyterServer, jp_asyncio_loop: Any) -> Iterator[Api]:
    client = Api(server.api, headers=server.headers)
    yield client
    jp_asyncio_loop.run_until_complete(client.aclose())


async def test_litellm_replies_never_import_litellm_into_the_server(
    api: Api, server: JupyterServer
) -> None:
    cid = await api.conversation()
    done = (await api.send(cid, "!tokens=5"))["done"]["message"]
    assert done["status"] == "complete", done["error"]
    assert done["content"] == generated_text(5)
    assert server.proc is not None
    (worker,) = worker_pids(server.proc.pid)
    imported = {int(p.name) for p in (server.workdir.parent / "imports").iterdir()}
    assert worker in imported  # the watch works: the worker imported litellm ...
    assert server.proc.pid not in imported  # ... and the server never did


async def test_a_worker_killed_mid_reply_keeps_the_text_and_the_next_reply_works(
    api: Api, server: JupyterServer, module_provider: FakeProvider
) -> None:
    assert server.proc is not None
    (worker,) = worker_pids(server.proc.pid)
    cid = await api.conversation()
    shown = ""
    message: dict[str, Any] = {}
    events = api.events("POST", f"conversations/{cid}/messages", {"content": "!tokens=30 !gate=3"})
    async for event, data in events:
        if event == "delta":
            shown += data["text"]
            if shown == generated_text(3):  # all the provider sent before its gate
                os.kill(worker, signal.SIGKILL)
        elif event == "done":
            message = data["message"]
            break
    await events.aclose()
    module_provider.release()
    assert message["status"] == "error"
    assert message["content"] == generated_text(3)
    assert message["error"] == "the provider worker stopped: killed by signal 9 (SIGKILL)"

    again = (await api.send(cid, "!tokens=4"))["done"]["message"]  # a new worker starts
    assert again["status"] == "complete", again["error"]
    assert again["content"] == generated_text(4)
    (replacement,) = worker_pids(server.proc.pid)
    assert replacement != worker


async def test_without_a_model_that_needs_litellm_the_worker_starts_with_the_first_reply_that_does(
    tmp_path: Path, provider: FakeProvider
) -> None:
    """A server whose configured models all use the lean reader pays nothing for litellm
    (its import: ~7 s of CPU and ~200 MB in the worker) until a reply needs it: the
    built-in demo's first reply starts the worker and waits for it. Then the server is
    killed with its worker ready (a SIGKILL while it imports: the test below)."""
    server = start(tmp_path, provider, stream_path="lean")
    assert server.proc is not None
    pid = server.proc.pid
    api = Api(server.api, headers=server.headers)
    try:
        health = await api.ok("GET", "health")
        assert (health["litellm"], health["provider_loaded"]) == ("on first use", False)
        assert "first reply that needs it" in health["adapters"]["litellm"]
        cid = await api.conversation()
        lean = (await api.send(cid, "!tokens=5"))["done"]["message"]
        assert (lean["status"], lean["content"]) == ("complete", generated_text(5))
        assert worker_pids(pid) == []

        demo = (await api.send(cid, "what are you?", model="demo"))["done"]["message"]
        assert demo["status"] == "complete", demo["error"]
        assert demo["content"]
        assert demo["model"] == "demo"
        (worker,) = worker_pids(pid)
        assert (await api.ok("GET", "health"))["litellm"] == "ready"
        imported = {int(p.name) for p in (tmp_path / "imports").iterdir()}
        assert imported == {worker}  # the server itself never imported litellm

        server.kill()
        wait_until(lambda: not alive(worker), 10, "the worker to exit with its server")
    finally:
        await api.aclose()
        server.stop()


def test_a_server_killed_by_sigkill_while_its_worker_imports_leaves_no_worker(
    tmp_path: Path, provider: FakeProvider
) -> None:
    server = start(tmp_path, provider, ready=False)
    try:
        assert server.proc is not None
        pid = server.proc.pid
        wait_until(lambda: worker_pids(pid), 10, "the worker to start")
        (worker,) = worker_pids(pid)
        server.kill()
        wait_until(lambda: not alive(worker), 10, "the worker to exit with its server")
    finally:
        server.stop()


def test_a_stopped_server_stops_its_worker(server: JupyterServer) -> None:
    """The module's server, stopped: this test runs last in the module (a server start
    with litellm loaded is the costly part of each test here)."""
    assert server.proc is not None
    (worker,) = worker_pids(server.proc.pid)
    server.stop()  # SIGTERM: jupyter_server's orderly stop, the extension's hook
    assert server.proc.returncode is not None
    wait_until(lambda: not alive(worker), 10, "the worker to exit")
