"""Real ``jupyter server`` subprocesses for tests that kill or restart a server.

Each server gets its own config/runtime/data dirs, a free port on 127.0.0.1 and a
token, and is always stopped by pid (SIGKILL as a last resort), even when a test fails.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

#: Ports handed out below Linux's ephemeral range (32768-60999): a port the kernel
#: picked for ``bind(0)`` can be taken again by any outgoing connection before the
#: server binds it (CI lost a run to exactly that), one from here cannot.
_PORTS = range(20000, 32000)
_given: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now, never handed out before by this process."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.choice(_PORTS)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError("no free port in 20000-32000 on 127.0.0.1")


#: Test servers run r3nb alone: the environment's other server extensions (JupyterLab,
#: Notebook 7, LSP, terminals), which r3nb's API does not use, would otherwise load into
#: every one (measured: a subprocess server's start 2.9 → 1.6 s, 2.1 → 1.6 s of CPU; an
#: in-process one's, ~0.1 s of each test's setup). Browser tests start JupyterLab itself.
SERVER_EXTENSIONS = {
    "r3nb": True,
    **dict.fromkeys(
        ("jupyterlab", "notebook", "notebook_shim", "jupyter_lsp", "jupyter_server_terminals"),
        False,
    ),
}


#: ``SERVER_EXTENSIONS`` on a server's command line (Python's literal syntax: traitlets
#: reads a dict there so, where JSON's ``true`` is not a value).
R3NB_ALONE_ARG = f"--ServerApp.jpserver_extensions={SERVER_EXTENSIONS!r}"


def provider_settled(health: dict[str, Any]) -> bool:
    """Whether a server's health says no litellm import is running in the background
    (loaded, or left for the first reply that needs it): until then it holds a CPU and,
    in-process, the GIL, which timings and memory figures must not include."""
    return bool(health.get("provider_loaded")) or health.get("litellm") == "on first use"


class _PortTaken(RuntimeError):
    """The server could not bind its port: someone took it after ``free_port``."""


class JupyterServer:
    #: Only r3nb's server extension (``SERVER_EXTENSIONS``); the benchmarks keep every
    #: extension installed, as a person's server has them.
    r3nb_alone = True

    def __init__(
        self,
        workdir: Path,
        r3nb: dict[str, Any],
        *,
        port: int | None = None,
        extra_args: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        wait_for_provider: bool = False,
    ) -> None:
        self.workdir = workdir
        self.r3nb = r3nb
        self.extra_args = extra_args or []
        self.extra_env = extra_env or {}
        #: Ready only once litellm's background import is done (benchmarks: its GIL
        #: use would otherwise land in the first measurements).
        self.wait_for_provider = wait_for_provider
        self._own_port = port is None
        self.port = port or free_port()
        self.token = "r3nb-test-token-" + os.urandom(6).hex()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"server-{self.port}-{time.monotonic_ns()}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def api(self) -> str:
        return self.url + "r3nb/api/"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def start(self, timeout: float = 60) -> JupyterServer:
        """Start and wait for health; a port taken meanwhile (another xdist worker's
        pick) means a new port and another try, when the test did not fix the port."""
        for _ in range(4):
            try:
                return self._start(timeout)
            except _PortTaken:
                if not self._own_port:
                    raise
                self.port = free_port()
        return self._start(timeout)

    def _start(self, timeout: float) -> JupyterServer:
        for sub in ("config", "runtime", "data", "root"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.workdir / "config"),
            "JUPYTER_RUNTIME_DIR": str(self.workdir / "runtime"),
            "JUPYTER_DATA_DIR": str(self.workdir / "data"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            **self.extra_env,
        }
        args = [
            sys.executable, "-m", "jupyter_server",
            f"--ServerApp.port={self.port}", "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port_retries=0", "--ServerApp.allow_root=True",
            "--ServerApp.open_browser=False", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.workdir / 'root'}",
        ]  # fmt: skip
        if self.r3nb_alone:
            args.append(R3NB_ALONE_ARG)
        for key, value in self.r3nb.items():
            args.append(
                f"--R3nbApp.{key}={json.dumps(value) if not isinstance(value, str) else value}"
            )
        args += self.extra_args
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args, env=env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log_text = self.log_path.read_text(errors="replace")
                if f"port {self.port} is not available" in log_text:
                    raise _PortTaken(log_text[-3000:])
                raise RuntimeError(f"jupyter server exited: {self.log_path.read_text()[-3000:]}")
            try:
                r = httpx.get(self.api + "health", headers=self.headers, timeout=2)
                if r.status_code == 200 and (
                    not self.wait_for_provider or provider_settled(r.json())
                ):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # polling a port that is not up yet: nothing to await
        self.stop()
        raise TimeoutError(f"jupyter server not ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no flush; what a crash looks like."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
