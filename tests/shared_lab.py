"""One JupyterLab for every real-browser module (a pytest plugin: ``tests/conftest.py``).

Starting JupyterLab with r3nb costs 25-50 s on two busy cores (most of it waiting for
litellm's import), and the browser modules run one after another on one xdist worker
(``tests/conftest.py``): one session-wide lab instead of one per module saves minutes of
a suite that must stay under ten. A plugin, not a module's own fixture, because a
session fixture imported into several modules would be a separate fixture (and a
separate lab) in each.

What the modules share is made harmless: each module uses notebooks and workspaces of
its own names and conversations it creates; each test sets the provider's scenario
(``lab_provider``); and each module shuts down the kernels it started
(``JupyterLab.shutdown_kernels`` from its ``lab`` fixture), so one module's kernels never
compete with the next one's timings.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.hostile_corpus import EVIL, PWN
from tests.lab import JupyterLab, running_lab
from tests.provider import FakeProvider

#: The observer cadence of the shared lab (``snapshot_interval``): short enough that the
#: browser tests see several snapshots of a few-second reply, long enough that an
#: observer's steps stay clearly fewer than the sender's.
SNAPSHOT_INTERVAL = 0.5
#: What model ``broken`` says (one line: the engine keeps the first line of a reason).
HOSTILE_ERROR = (
    f'<img src=x onerror="{PWN}"><script>{PWN}</script> '
    f"[x](javascript:{PWN}) ![leak]({EVIL}/err.png)"
)


class _FailingProvider(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint whose every answer is a 400 with a hostile message
    (model ``broken``)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps(
            {"error": {"message": HOSTILE_ERROR, "type": "invalid_request_error", "code": None}}
        ).encode()
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def failing_provider() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FailingProvider)
    thread = threading.Thread(target=server.serve_forever, name="failing-provider", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def lab_provider(shared_provider: FakeProvider) -> FakeProvider:
    """A browser module's provider: the shared lab's (each test sets its scenario)."""
    return shared_provider


@pytest.fixture(scope="module")
def lab(shared_lab: JupyterLab) -> Iterator[JupyterLab]:
    """A browser module's JupyterLab: the session's, with the kernels the module started
    shut down after it (module scope: one teardown per module using it)."""
    yield shared_lab
    shared_lab.shutdown_kernels()


@pytest.fixture(scope="session")
def shared_provider() -> Iterator[FakeProvider]:
    """The provider behind models ``fake`` and ``fake2`` of the shared lab."""
    with FakeProvider() as p:
        yield p


@pytest.fixture(scope="session")
def shared_lab(
    tmp_path_factory: pytest.TempPathFactory, shared_provider: FakeProvider, failing_provider: str
) -> Iterator[JupyterLab]:
    """The one JupyterLab of the browser modules: models ``fake`` (the default), ``fake2``
    (the same provider, for the model picker), ``broken`` (every call a hostile 400),
    ``small`` (the same provider, a 300-token context window) and ``eyes`` (the same
    provider, taking images)."""
    fake2 = {"model": "openai/fake2", "api_base": shared_provider.url, "api_key": "sk-x"}
    broken = {"model": "openai/broken", "api_base": failing_provider, "api_key": "sk-x"}
    # The same provider with a small context window: older turns are left out to fit it.
    small = {
        "model": "openai/small", "api_base": shared_provider.url, "api_key": "sk-x",
        "max_context_tokens": 300, "max_tokens": 100,
    }  # fmt: skip
    # The same provider, as a model that takes images (attached plots, pasted images):
    # litellm's model info says gpt-4o does (an entry's "vision": true would say so too,
    # but a JSON true does not survive the command line's --R3nbApp.models=…).
    eyes = {"model": "openai/gpt-4o", "api_base": shared_provider.url, "api_key": "sk-x"}
    with running_lab(
        tmp_path_factory.mktemp("lab"),
        shared_provider.url,
        models={"fake2": fake2, "broken": broken, "small": small, "eyes": eyes},
        snapshot_interval=SNAPSHOT_INTERVAL,
    ) as server:
        yield server
