"""A real JupyterHub for tests: hub + configurable-http-proxy (npm) + single-user servers.

Everything lives in one run folder (config, sqlite db, cookie secret, pid files, logs,
homes, per-server Jupyter dirs and DuckDB files) and listens on 127.0.0.1 only.

    hub = Hub(run_dir, provider_url).start()
    try:
        alice = hub.token("alice")                    # a fresh hub API token
        hub.start_servers(("alice", ""))              # alice's default server, ready
        hub.share("alice", "bob")                     # with alice's own token
        hub.relay_token("alice")                      # scopes of alice's server's own token
        hub.stop_hub()                                # the hub alone (a restart's first half)
        hub.server_url("alice")                       # http://127.0.0.1:PORT/user/alice/
    finally:
        hub.stop()                                    # every process, by pid, even on failure

Browser tests can reuse it: ``hub.url`` (log in at ``hub.url + "/hub/login"`` with any
allowed user and ``hub.password``), ``hub.token``, ``hub.start_servers``, ``hub.share``.

Per-server r3nb settings: every single-user server gets ``--R3nbApp.<trait>=…`` for the
defaults below (``db_path`` = ``<run>/<user>[-<server>].duckdb``, the fake provider as
model ``fake``, ``snapshot_interval=0.3``) merged with ``hub.configure(user, server, **traits)``.
The hub's ``pre_spawn_hook`` reads those from ``<run>/servers.json`` at each spawn, so a
restart picks up new settings.

Hub mode (issue 18): ``Hub(..., service=ServicePlan(db_path, engine={...}, env={...}))``
registers an external r3nb service (``python -m r3nb.service``, started by
``hub.start_service()`` before ``hub.start()``: a hub waits up to 30 s for an external
service it cannot reach, stopped by ``hub.stop_service()``; more processes of it on the
same store by ``hub.start_service_process()``, each on its own port), adds
``access:services!service=r3nb`` to users (``extra_user_scopes``) and to server tokens
(``Spawner.server_token_scopes``), and spawns every single-user server in relay mode
(``R3NB_SERVICE_URL`` in its environment, no models, no keys).

Process hygiene: the hub is started in a session of its own, and every process of the
run (hub, proxy, single-user servers, kernels) carries ``R3NB_HUB_RUN=<run folder>`` in its
environment; ``stop()`` asks the hub to stop (it stops servers and proxy), then kills by
pid whatever still carries the marker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import R3NB_ALONE_ARG, free_port

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
#: Where ``npm install --prefix tests/.hub-node configurable-http-proxy@5`` puts the proxy.
CHP_DEFAULT = REPO / "tests" / ".hub-node" / "node_modules" / ".bin" / "configurable-http-proxy"
USERS = ("alice", "bob", "carol")
SERVICE = "r3nb-tests"
MARKER = "R3NB_HUB_RUN"


def proxy_command() -> Path | None:
    """The npm configurable-http-proxy (not the PyPI port: it buffers whole responses,
    so SSE would arrive all at once)."""
    env = os.environ.get("R3NB_CHP")
    for candidate in (Path(env) if env else None, CHP_DEFAULT):
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_hub() -> None:
    """Skip the calling module when no real hub can run here; under CI that is a broken
    setup (the Makefile installs every part), so it fails instead of skipping."""
    why = missing()
    if why is None:
        return
    if os.environ.get("CI"):
        raise RuntimeError(f"no real JupyterHub here: {why}")
    pytest.skip(f"no real JupyterHub here: {why}", allow_module_level=True)


def missing() -> str | None:
    """Why a real hub cannot run here, or None."""
    if importlib.util.find_spec("jupyterhub") is None or not (VENV_BIN / "jupyterhub").exists():
        return "jupyterhub is not installed (pip install 'jupyterhub>=5,<7')"
    if not (VENV_BIN / "jupyterhub-singleuser").exists():
        return "jupyterhub-singleuser is not installed next to the test interpreter"
    if proxy_command() is None:
        return (
            "the npm configurable-http-proxy is not installed "
            "(npm install --prefix tests/.hub-node configurable-http-proxy@5)"
        )
    return None


_CONFIG = """\
# Written by tests/hub.py: a throwaway local hub for tests.
import json, os

RUN = {run!r}
c = get_config()  # noqa: F821

c.JupyterHub.bind_url = "http://127.0.0.1:{proxy_port}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///" + os.path.join(RUN, "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(RUN, "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = os.path.join(RUN, "hub.pid")
c.JupyterHub.allow_named_servers = True
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
# POST …/server answers 202 at once instead of holding the request up to 10 s.
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}

c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = os.path.join(RUN, "proxy.pid")
c.ConfigurableHTTPProxy.should_start = True

c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allowed_users = set({users!r})

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(RUN, "home", "{{username}}")
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.Spawner.default_url = "/lab"

c.JupyterHub.services = [{{"name": {service!r}, "api_token": {service_token!r}}}]
c.JupyterHub.load_roles = [
    {{
        "name": "r3nb-tests-service",
        "scopes": ["admin:users", "admin:servers", "tokens", "read:users", "list:users"],
        "services": [{service!r}],
    }},
    {{"name": "r3nb-sharers", "scopes": ["shares!user", "read:users:name"], "users": {sharers!r}}},
]

BASE_ARGS = {base_args!r}
BASE_ENV = {base_env!r}


# Test-only speed-up: the hub polls a starting server (and a stopping process) with
# exponential backoff, up to 5 s between probes, so a server up after 4 s is noticed
# after ~7 s; poll every 0.05-0.25 s instead. Patched where it is looked up: in
# jupyterhub.utils (wait_for_http_server) and jupyterhub.spawner (wait_for_death).
import jupyterhub.spawner as _hub_spawner
import jupyterhub.utils as _hub_utils

_backoff = _hub_utils.exponential_backoff


async def _quick_backoff(*args, **kwargs):
    kwargs.update(start_wait=0.05, scale_factor=1.3, max_wait=0.25)
    return await _backoff(*args, **kwargs)


_hub_utils.exponential_backoff = _quick_backoff
_hub_spawner.exponential_backoff = _quick_backoff


def _pre_spawn(spawner):
    user, server = spawner.user.name, spawner.name or ""
    slug = user + ("-" + server if server else "")
    folder = os.path.join(RUN, "servers", slug)
    env = dict(BASE_ENV)
    for sub in ("config", "runtime", "data"):
        path = os.path.join(folder, sub)
        os.makedirs(path, exist_ok=True)
        env["JUPYTER_" + sub.upper() + "_DIR"] = path
    with open(os.path.join(RUN, "servers.json")) as f:
        overrides = json.load(f).get(user + "/" + server, {{}})
    traits = {{"db_path": os.path.join(RUN, slug + ".duckdb")}}
    traits.update({r3nb!r})
    traits.update(overrides)
    spawner.args = list(BASE_ARGS) + [
        "--R3nbApp.%s=%s" % (k, v if isinstance(v, str) else json.dumps(v))
        for k, v in traits.items()
    ]
    spawner.environment = env


c.Spawner.pre_spawn_hook = _pre_spawn
"""

#: Appended to the config in hub mode: the r3nb service, external (started by the tests).
_SERVICE_CONFIG = """
c.JupyterHub.services.append(
    {{"name": {name!r}, "url": {url!r}, "api_token": {token!r}, "display": False}}
)
c.JupyterHub.services.extend({managed!r})
_R3NB_SCOPES = ["access:services!service=" + s["name"] for s in c.JupyterHub.services[1:]]
c.JupyterHub.extra_user_scopes = set(_R3NB_SCOPES)
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", *_R3NB_SCOPES]
c.JupyterHub.load_groups = {groups!r}
"""


@dataclasses.dataclass
class ServicePlan:
    """The r3nb hub service of a test hub: its store location (a DuckDB path today, a
    ``postgresql://`` URL once that backend lands), engine settings, and the environment
    only it gets (provider keys)."""

    db_path: str
    engine: dict[str, Any] = dataclasses.field(default_factory=dict)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    name: str = "r3nb"
    groups: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: Also register a second r3nb service under this name, *managed* (the hub starts it
    #: with ``command``, gives it its token and URL, and restarts it if it dies), with the
    #: same settings on its own store. ``hub.managed_service_url``; a server uses it with
    #: ``hub.configure(user, server, service_url=hub.managed_service_url)``.
    managed: str | None = None

    @property
    def managed_db_path(self) -> str:
        """A PostgreSQL database can be shared by two services; a DuckDB file cannot."""
        if self.db_path.startswith(("postgresql://", "postgres://")):
            return self.db_path
        return self.db_path.removesuffix(".duckdb") + "-managed.duckdb"


@dataclasses.dataclass
class ServiceProcess:
    """One more process of the r3nb service (``Hub.start_service_process``)."""

    proc: subprocess.Popen[bytes]
    port: int
    #: Its base URL, as ``Hub.service_url`` is the first process's.
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL (a crash: no shutdown hook runs, nothing is flushed); return once reaped."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(timeout=10)


class HubError(RuntimeError):
    pass


class Hub:
    """A running JupyterHub (see the module docstring)."""

    def __init__(
        self,
        run_dir: Path,
        provider_url: str,
        *,
        users: Iterable[str] = USERS,
        sharers: Iterable[str] = ("alice",),
        r3nb: dict[str, Any] | None = None,
        token_cache_seconds: int = 1,
        service: ServicePlan | None = None,
        lab: bool = False,
    ) -> None:
        self.run = Path(run_dir)
        #: JupyterLab in the single-user servers (a browser test's); else r3nb alone
        #: (``SERVER_EXTENSIONS``, beside JupyterHub's own single-user extension).
        self.lab = lab
        self.users = tuple(users)
        self.sharers = list(sharers)
        self.password = "r3nb-hub-" + secrets.token_hex(6)
        self.service_token = secrets.token_hex(24)
        self.proxy_port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.token_cache_seconds = token_cache_seconds
        self.r3nb: dict[str, Any] = {
            "models": {
                "fake": {"model": "openai/fake", "api_base": provider_url, "api_key": "sk-x"}
            },
            "default_model": "fake",
            "snapshot_interval": 0.3,
            **(r3nb or {}),
        }
        self.plan = service
        self.service_port = free_port() if service else 0
        self.managed_port = free_port() if service and service.managed else 0
        self.service_api_token = secrets.token_hex(24)
        self.service_proc: subprocess.Popen[bytes] | None = None
        #: More processes of the same service (``start_service_process``).
        self.service_processes: list[ServiceProcess] = []
        if service is not None:  # relay mode: the servers hold no models and no keys
            self.r3nb = dict(r3nb or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.run / "hub.log"
        self._servers: dict[str, dict[str, Any]] = {}
        self._client = httpx.Client(timeout=httpx.Timeout(30.0))

    # --- addresses ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The public (proxy) URL, no trailing slash: log in at ``url + '/hub/login'``."""
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def api(self) -> str:
        return self.url + "/hub/api/"

    def server_url(self, user: str, server: str = "") -> str:
        """A single-user server's URL through the proxy, with a trailing slash."""
        return f"{self.url}/user/{user}/" + (f"{server}/" if server else "")

    @property
    def service_url(self) -> str:
        """The r3nb service's internal base URL (what relays call, not the proxy)."""
        assert self.plan is not None, "this hub has no r3nb service"
        return f"http://127.0.0.1:{self.service_port}/services/{self.plan.name}/"

    @property
    def managed_service_url(self) -> str:
        """The hub-managed r3nb service's internal base URL (``ServicePlan.managed``)."""
        assert self.plan is not None, "this hub has no r3nb service"
        assert self.plan.managed, "this hub has no managed r3nb service"
        return f"http://127.0.0.1:{self.managed_port}/services/{self.plan.managed}/"

    def r3nb_api(self, user: str, server: str = "") -> str:
        return self.server_url(user, server) + "r3nb/api/"

    def db_path(self, user: str, server: str = "") -> Path:
        return self.run / ((user + ("-" + server if server else "")) + ".duckdb")

    def jupyter_dir(self, user: str, server: str = "", kind: str = "config") -> Path:
        """The server's ``JUPYTER_<KIND>_DIR`` (``kind`` = config, runtime or data), as the
        hub's pre-spawn hook sets it. Files written there before the spawn are read by the
        server: ``jupyter_server_config.json`` for server/LabApp options, and (JupyterLab's
        defaults) ``lab/user-settings`` and ``lab/workspaces``."""
        slug = user + ("-" + server if server else "")
        return self.run / "servers" / slug / kind

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"token {token}"}

    # --- lifecycle ---------------------------------------------------------------------

    def _write_config(self) -> Path:
        self.run.mkdir(parents=True, exist_ok=True)
        (self.run / "servers.json").write_text(json.dumps(self._servers))
        base_args = [f"--HubOAuth.cache_max_age={self.token_cache_seconds}"]
        if os.geteuid() == 0:
            base_args.append("--ServerApp.allow_root=True")  # once: twice is an error
        if not self.lab:
            base_args.append(R3NB_ALONE_ARG)
        base_env = {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "VIRTUAL_ENV": str(VENV_BIN.parent),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PYTHONDONTWRITEBYTECODE": "1",
            MARKER: str(self.run),
        }
        if self.plan is not None:
            base_env["R3NB_SERVICE_URL"] = self.service_url
        chp = proxy_command()
        assert chp is not None, missing()
        path = self.run / "jupyterhub_config.py"
        path.write_text(
            _CONFIG.format(
                run=str(self.run),
                proxy_port=self.proxy_port,
                hub_port=self.hub_port,
                proxy_api_port=self.proxy_api_port,
                chp=str(chp),
                password=self.password,
                users=list(self.users),
                sharers=self.sharers,
                singleuser=str(VENV_BIN / "jupyterhub-singleuser"),
                service=SERVICE,
                service_token=self.service_token,
                base_args=base_args,
                base_env=base_env,
                r3nb=self.r3nb,
            )
            + self._service_config()
        )
        return path

    def _service_config(self) -> str:
        if self.plan is None:
            return ""
        plan = self.plan
        managed = []
        if plan.managed:
            config = self.run / "r3nb-service-managed.json"
            config.write_text(json.dumps({**plan.engine, "db_path": plan.managed_db_path}))
            managed.append(
                {
                    "name": plan.managed,
                    "url": f"http://127.0.0.1:{self.managed_port}",
                    "command": [sys.executable, "-m", "r3nb.service", "--config", str(config)],
                    "cwd": str(REPO),
                    "environment": {
                        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                        "PYTHONDONTWRITEBYTECODE": "1",
                        MARKER: str(self.run),
                        **plan.env,
                    },
                    "display": False,
                }
            )
        return _SERVICE_CONFIG.format(
            name=plan.name,
            url=f"http://127.0.0.1:{self.service_port}",
            token=self.service_api_token,
            managed=managed,
            groups={g: {"users": users} for g, users in plan.groups.items()},
        )

    # --- the r3nb service (hub mode) ---------------------------------------------------

    def start_service(self, timeout: float = 60) -> subprocess.Popen[bytes]:
        """Start the external r3nb service (before ``start()``); return when it answers."""
        proc = self._launch_service(self.service_port, self.run / "service.log")
        self.service_proc = proc
        try:
            self._await_service(proc, self.service_url, self.service_log, timeout)
        except BaseException:
            self.stop_service()
            raise
        return proc

    def start_service_process(self, port: int | None = None, timeout: float = 60) -> ServiceProcess:
        """One more process of the external r3nb service (after ``start_service()``), as
        an admin runs several behind one URL: the same name, token, settings and store,
        on its own ``port`` (a free one by default; pass a killed process's port to start
        it again). The hub needs no word of it: every process checks tokens the same way.
        Stopped by ``stop_service_process`` or, at the latest, by ``stop()``."""
        assert self.plan is not None, "this hub has no r3nb service"
        port = port or free_port()
        log = self.run / f"service-{port}.log"
        url = f"http://127.0.0.1:{port}/services/{self.plan.name}/"
        process = ServiceProcess(self._launch_service(port, log), port, url, log)
        self.service_processes.append(process)
        try:
            self._await_service(process.proc, process.url, lambda: _tail(process.log), timeout)
        except BaseException:
            self.stop_service_process(process)
            raise
        return process

    def stop_service_process(self, process: ServiceProcess) -> None:
        """SIGTERM one of ``start_service_process``'s processes, SIGKILL after 20 s."""
        _terminate(process.proc)
        with contextlib.suppress(ValueError):
            self.service_processes.remove(process)

    def stop_service_processes(self) -> None:
        """Stop every process ``start_service_process`` started (a killed one is reaped)."""
        for process in list(self.service_processes):
            self.stop_service_process(process)

    def _launch_service(self, port: int, log_path: Path) -> subprocess.Popen[bytes]:
        plan = self.plan
        assert plan is not None, "this hub has no r3nb service"
        config = self.run / "r3nb-service.json"
        config.write_text(json.dumps({"db_path": plan.db_path, **plan.engine}))
        env = {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PYTHONDONTWRITEBYTECODE": "1",
            "JUPYTERHUB_API_TOKEN": self.service_api_token,
            "JUPYTERHUB_API_URL": f"http://127.0.0.1:{self.hub_port}/hub/api",
            "JUPYTERHUB_SERVICE_NAME": plan.name,
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
            "JUPYTERHUB_SERVICE_PREFIX": f"/services/{plan.name}/",
            MARKER: str(self.run),
            **plan.env,
        }
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "r3nb.service", "--config", str(config)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _await_service(
        self, proc: subprocess.Popen[bytes], url: str, log: Callable[[], str], timeout: float
    ) -> None:
        """Until the service at ``url`` answers (``log()``: its log's tail, for errors)."""

        def answers() -> bool:
            if proc.poll() is not None:
                raise HubError(f"r3nb-service exited ({proc.returncode}):\n{log()}")
            return self._probe(url + "r3nb/api/health") == 401  # up, and closed

        self._wait_until(answers, timeout, f"the r3nb service at {url} to answer")

    def stop_service(self) -> None:
        """SIGTERM the service (it ends live replies whole), SIGKILL after 20 s."""
        proc, self.service_proc = self.service_proc, None
        if proc is not None:
            _terminate(proc)

    def service_log(self, tail: int = 6000) -> str:
        return _tail(self.run / "service.log", tail)

    def start(self, timeout: float = 60) -> Hub:
        config = self._write_config()
        env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            MARKER: str(self.run),
        }
        env.pop("JUPYTERHUB_API_TOKEN", None)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "jupyterhub"), "-f", str(config)],
            cwd=self.run,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: signals stay ours to send
        )
        log.close()
        try:
            self._wait_until(
                lambda: self._probe(self.api) == 200, timeout, "the hub to answer /hub/api/"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop_hub(self, timeout: float = 20) -> None:
        """Stop the hub process alone (SIGTERM; it stops its proxy): what a hub restart's
        first half does to the r3nb service, which keeps running."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def _probe(self, url: str, headers: dict[str, str] | None = None) -> int | None:
        try:
            return self._client.get(url, headers=headers, timeout=2).status_code
        except httpx.HTTPError:
            return None

    def _wait_until(self, check: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise HubError(f"jupyterhub exited ({self.proc.returncode}):\n{self.log()}")
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}\n{self.log()}")
            time.sleep(0.1)  # polling a state we cannot subscribe to

    def stop(self) -> None:
        """Stop the hub (it stops its servers and the proxy), then kill by pid anything
        of this run still alive: proxy, single-user servers, kernels. Never raises."""
        with contextlib.suppress(Exception):
            self.stop_service_processes()
        with contextlib.suppress(Exception):
            self.stop_service()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        pids = self.leftover_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            if pids:
                time.sleep(0.05)  # waiting for exits of processes that are not our children
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._client.close()

    def leftover_pids(self) -> list[int]:
        """Live processes of this run (marker in their environment), ours excluded."""
        marker = f"{MARKER}={self.run}".encode()
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0") and _alive(int(entry.name)):
                out.append(int(entry.name))
        return out

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    # --- hub REST API ------------------------------------------------------------------

    def request(
        self, method: str, path: str, *, token: str | None = None, body: Any = None
    ) -> httpx.Response:
        """A hub API call (``path`` relative to ``/hub/api/``), as the service by default."""
        return self._client.request(
            method,
            self.api + path.lstrip("/"),
            headers=self.auth(token or self.service_token),
            content=json.dumps(body) if body is not None else None,
        )

    def _ok(self, method: str, path: str, **kw: Any) -> Any:
        r = self.request(method, path, **kw)
        if r.status_code >= 300:
            raise HubError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    def token(self, user: str, note: str = "r3nb tests", expires_in: int = 3600) -> str:
        """A fresh API token of ``user`` (it inherits the user's permissions, shares too)."""
        data = self._ok(
            "POST", f"users/{user}/tokens", body={"note": note, "expires_in": expires_in}
        )
        return str(data["token"])

    def relay_token(self, user: str, server: str = "", note: str = "r3nb relay") -> str:
        """A token with the scopes of ``user``'s server ``server``'s own token (what a
        spawner gives it: that server, and the r3nb service): lets a test or benchmark
        act as a relay without spawning the server."""
        assert self.plan is not None, "this hub has no r3nb service"
        scopes = [
            f"access:servers!server={user}/{server}",
            f"access:services!service={self.plan.name}",
        ]
        data = self._ok(
            "POST",
            f"users/{user}/tokens",
            body={"note": note, "expires_in": 3600, "scopes": scopes},
        )
        return str(data["token"])

    def user_model(self, user: str) -> dict[str, Any]:
        return dict(self._ok("GET", f"users/{user}"))

    def configure(self, user: str, server: str = "", **traits: Any) -> None:
        """R3nbApp traits for ``user``'s server ``server`` from its next spawn on."""
        self._servers[f"{user}/{server}"] = traits
        (self.run / "servers.json").write_text(json.dumps(self._servers))

    def start_servers(self, *servers: tuple[str, str], timeout: float = 90) -> None:
        """Start (user, server_name) servers concurrently; return when all are ready and
        r3nb answers through the proxy."""
        for user, server in servers:
            path = f"users/{user}/servers/{server}" if server else f"users/{user}/server"
            r = self.request("POST", path)
            if r.status_code not in (201, 202, 400):  # 400: already running
                raise HubError(f"POST {path}: {r.status_code} {r.text}")
        for user, server in servers:
            self._wait_until(
                lambda u=user, s=server: self._server(u, s).get("ready"),
                timeout,
                f"{user}/{server} to be ready",
            )
        owner_tokens = {user: self.token(user, "readiness") for user, _ in servers}
        for user, server in servers:
            url = self.r3nb_api(user, server) + "health"
            headers = self.auth(owner_tokens[user])
            self._wait_until(
                lambda u=url, h=headers: self._probe(u, h) == 200,
                timeout,
                f"r3nb health on {user}/{server}",
            )

    def _server(self, user: str, server: str = "") -> dict[str, Any]:
        return dict(self.user_model(user).get("servers", {}).get(server) or {})

    def server_running(self, user: str, server: str = "") -> bool:
        return bool(self._server(user, server).get("ready"))

    def stop_server(self, user: str, server: str = "", timeout: float = 60) -> None:
        """Stop from the hub (the spawner sends SIGINT: no extension shutdown hook runs);
        return when the hub reports it gone."""
        path = f"users/{user}/servers/{server}" if server else f"users/{user}/server"
        r = self.request("DELETE", path)
        if r.status_code not in (202, 204, 400):
            raise HubError(f"DELETE {path}: {r.status_code} {r.text}")
        self._wait_until(
            lambda: not self._server(user, server), timeout, f"{user}/{server} to stop"
        )

    def share(
        self, owner: str, with_user: str, server: str = "", *, token: str | None = None
    ) -> dict[str, Any]:
        """``owner`` shares a server with ``with_user`` (with the owner's own token)."""
        return dict(
            self._ok(
                "POST",
                f"shares/{owner}/{server}",
                token=token or self.token(owner, "share"),
                body={"user": with_user},
            )
        )

    def revoke(
        self, owner: str, with_user: str, server: str = "", *, token: str | None = None
    ) -> None:
        """``owner`` revokes ``with_user``'s share (PATCH; DELETE would revoke all)."""
        self._ok(
            "PATCH",
            f"shares/{owner}/{server}",
            token=token or self.token(owner, "revoke"),
            body={"user": with_user},
        )


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a service process (it ends live replies whole), SIGKILL after 20 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _tail(path: Path, tail: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-tail:]
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
