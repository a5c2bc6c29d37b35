"""Real parts: a real Jupyter server (pytest-jupyter), a real DuckDB file, and a local
OpenAI-compatible SSE provider that litellm reaches through its ordinary path."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from r3nb.engine import provider as provider_module
from tests.client import Api
from tests.provider import FakeProvider
from tests.servers import SERVER_EXTENSIONS

pytest_plugins = [
    "pytest_jupyter.jupyter_server",
    "tests.kernels",
    "tests.shared_lab",
    "tests.pg",  # pg_cluster (one per worker, started on first use) and pg_url
]

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
#: A key that must never show up in a response, a log or the DB.
PROVIDER_KEY = "sk-test-r3nb-provider-key-0123456789"


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as p:
        yield p


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "r3nb.duckdb"


@pytest.fixture
def r3nb_config() -> dict[str, Any]:
    """Per-test overrides of R3nbApp traits (override this fixture in a test module)."""
    return {}


@pytest.fixture(scope="session")
def provider_worker() -> None:
    """One provider worker (litellm's import: ~7 s of CPU) for every in-process test
    server of this process, started by the first test that runs one: each server uses
    it instead of starting its own (not its owner, none stops it; it exits with this
    process). A process that runs no server (xdist's controller, the fast tier) starts
    none."""
    provider_module.start_worker()


@pytest.fixture
def jp_server_config(
    provider_worker: None, provider: FakeProvider, db_path: Path, r3nb_config: dict[str, Any]
) -> Config:
    r3nb: dict[str, Any] = {
        "db_path": str(db_path),
        "snapshot_interval": 0.3,
        "models": {
            # litellm's ordinary path to the local provider (most tests) ...
            "fake": {
                "model": "openai/fake",
                "api_base": provider.url,
                "api_key": PROVIDER_KEY,
                "stream_path": "litellm",
            },
            # ... and r3nb's lean OpenAI-compatible reader, the default for openai/ models.
            "lean": {"model": "openai/fake", "api_base": provider.url, "api_key": PROVIDER_KEY},
        },
        "default_model": "fake",
        "rate_limit_per_minute": 1000,
        "max_concurrent_streams": 100,
    }
    r3nb.update(r3nb_config)
    return Config({"ServerApp": {"jpserver_extensions": SERVER_EXTENSIONS}, "R3nbApp": r3nb})


@pytest.fixture
def api(
    jp_fetch: Any,
    jp_http_port: int,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    jp_asyncio_loop: Any,
) -> Iterator[Api]:
    """An HTTP client for r3nb's API on the real server socket (SSE included)."""
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}r3nb/api/"
    client = Api(base, headers=dict(jp_auth_header))
    yield client
    jp_asyncio_loop.run_until_complete(client.aclose())


@pytest.fixture(params=["fake", "lean"])
def model(request: pytest.FixtureRequest) -> str:
    """Both stream paths, for tests whose promise must hold on either."""
    return str(request.param)


@pytest.fixture
def engine(jp_serverapp: Any) -> Any:
    return jp_serverapp.web_app.settings["r3nb_engine"]


#: Fixtures that need nothing but this process (pytest-jupyter's autouse ones start
#: nothing by themselves): a test using only these is "fast".
_FAST_FIXTURES = {
    "request",
    "monkeypatch",
    "capsys",
    "recwarn",
    "jp_asyncio_loop",
    "jp_server_cleanup",
}


#: Modules that drive a real Chromium.
_BROWSER_MODULES = ("test_browser", "test_hub_browser")


def _scope(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return "browser" if Path(module).name.startswith(_BROWSER_MODULES) else module


#: Work units by measured duration, longest first (a fresh-clone run, 2026-12-03): a
#: worker takes the next unit when its own is nearly done, so the long ones go first and
#: the short ones fill the end (with alphabetical order a 45 s unit came last while the
#: other worker sat idle). Units not named here follow, in collection order.
_LONGEST_FIRST = (
    "browser",
    "tests/test_hub_service.py",
    "tests/test_hub_outages.py",
    "tests/test_hardening.py",
    "tests/test_js_suite.py",
    "tests/test_worker.py",
    "tests/test_kernel_server.py",
    "tests/test_trust.py",
    "tests/test_dialects.py",
    "tests/test_auth_matrix.py",
    "tests/test_fuzz.py",
    "tests/test_hub.py",
    "tests/test_faults.py",
    "tests/test_kernel_embedded.py",
    "tests/test_pg_processes.py",
    "tests/test_kernel_rules.py",
    "tests/test_api_contract.py",
    "tests/test_model_reload.py",
    "tests/test_store_append.py",
)


def _rank(scope: str) -> int:
    return _LONGEST_FIRST.index(scope) if scope in _LONGEST_FIRST else len(_LONGEST_FIRST)


class _LongestFirst(OrderedDict[str, Any]):
    """xdist's queue of work units, kept in ``_LONGEST_FIRST`` order."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        for later in [k for k in self if _rank(k) > _rank(key)]:
            self.move_to_end(later)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``make test``'s scheduler (``-n 2 --dist loadgroup``): workers take whole files (a
    module's server, lab or hub is shared by its tests), and the browser modules are one
    unit (one worker, one JupyterLab: tests/shared_lab.py), one after another, so that no
    two Chromiums + JupyterLabs compete for the two cores during their timings; units go
    longest first (``_LONGEST_FIRST``).

    A scheduler, not ``xdist_group`` marks: xdist 3.8.0's worker never applied them
    (measured: every test of a file spread over both workers, each starting the file's
    server, with marks from a conftest hook or a decorator alike)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):  # type: ignore[misc]
        def __init__(self, config: pytest.Config, log: Any) -> None:
            super().__init__(config, log)
            self.workqueue = _LongestFirst()

        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return ByFile(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the fast tier (``make test-fast``, ``-m fast``): tests that start no server,
    kernel, browser, hub or subprocess. Decided from the fixtures a test uses (every real
    part comes from a fixture or from ``tmp_path``-backed helpers), so a new test joins
    the tier it belongs to without anyone remembering to mark it."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = set(callspec.params) if callspec is not None else set()
        if set(getattr(item, "fixturenames", ())) - params <= _FAST_FIXTURES:
            item.add_marker(pytest.mark.fast)
