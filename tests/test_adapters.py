"""Stream adapters (r3nb/engine/adapters.py): r3nb's two and a third party's, by entry point.

The plugin here is a real installed distribution as far as Python can tell: a module
and a ``.dist-info`` folder with ``entry_points.txt`` on the path, which is all
``pip install`` would leave behind. The end-to-end test runs it inside a real
``jupyter server`` whose model entry says ``"stream_path": "echo"``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from r3nb.engine import adapters
from r3nb.engine.models import ModelRegistry
from tests.servers import JupyterServer

PLUGIN = '''
"""A third party's stream adapter: echoes the last prompt back, word by word."""
from r3nb.engine.adapters import REQUESTED, Usage


class Echo:
    async def stream(self, model, params, messages):
        yield REQUESTED
        words = messages[-1]["content"].split()
        for word in words:
            yield f"echo:{word} "
        yield Usage(len(messages), len(words), 0.0, "stop")

    def not_ready(self):
        return None

    async def aclose(self):
        pass


ADAPTER = Echo()
'''


def install_plugin(root: Path, name: str, target: str, source: str = PLUGIN) -> Path:
    """Lay out ``r3nb_plugin_<name>`` as pip would: the module and its dist-info."""
    module = f"r3nb_plugin_{name}"
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(source)
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{adapters.GROUP}]\n{name} = {module}:{target}\n")
    return root


@pytest.fixture
def on_path(tmp_path: Path) -> Iterator[Path]:
    """A folder on ``sys.path`` for the test's plugins, taken off again afterwards."""
    root = tmp_path / "site"
    root.mkdir()
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n.startswith("r3nb_plugin_")]:
            del sys.modules[name]
        adapters._loaded.pop("echo", None)
        adapters._loaded.pop("broken", None)


@pytest.mark.fast
def test_r3nb_declares_its_own_two_adapters_as_a_plugin_would() -> None:
    assert adapters.names()[:3] == ["auto", "lean", "litellm"]
    registry = ModelRegistry(
        {"a": {"model": "openai/x", "api_key": "k"}, "b": {"model": "anthropic/claude-x"}}
    )
    assert registry.resolve("a").adapter_name == "lean"
    assert registry.resolve("b").adapter_name == "litellm"


@pytest.mark.fast
def test_only_a_model_that_needs_litellm_has_the_server_start_litellm_at_once() -> None:
    """``wants_litellm``: the worker starts with the server, else with its first reply."""
    lean = {"model": "openai/x", "api_key": "k"}
    assert not ModelRegistry({"a": lean}).wants_litellm()  # the demo beside it waits
    assert ModelRegistry({"a": lean, "b": {"model": "anthropic/claude-x"}}).wants_litellm()
    assert ModelRegistry({"a": {**lean, "stream_path": "litellm"}}).wants_litellm()
    assert ModelRegistry().wants_litellm()  # nothing configured: the demo is the default
    assert ModelRegistry({"a": lean}, "demo").wants_litellm()
    assert not ModelRegistry({"demo": lean}, "demo").wants_litellm()  # a configured "demo"


@pytest.mark.fast
def test_an_unknown_stream_path_names_what_is_installed() -> None:
    with pytest.raises(ValueError, match=r"'nope'.*auto, lean, litellm.*r3nb\.adapters"):
        ModelRegistry({"a": {"model": "openai/x", "api_key": "k", "stream_path": "nope"}})


@pytest.mark.fast
async def test_a_plugin_is_known_by_metadata_and_imported_at_first_use(on_path: Path) -> None:
    install_plugin(on_path, "echo", "ADAPTER")
    registry = ModelRegistry({"e": {"model": "echo/x", "stream_path": "echo"}})
    assert "r3nb_plugin_echo" not in sys.modules  # checking the entry imported nothing
    adapter = adapters.get(registry.resolve("e").adapter_name)
    items = [i async for i in adapter.stream(registry.resolve("e"), {}, [
        {"role": "user", "content": "hello there"}])]  # fmt: skip
    assert items[0] is adapters.REQUESTED
    assert items[1:3] == ["echo:hello ", "echo:there "]
    assert items[3] == adapters.Usage(1, 2, 0.0, "stop")


@pytest.mark.fast
def test_a_broken_plugin_is_a_clear_error_not_a_crash(on_path: Path) -> None:
    install_plugin(on_path, "broken", "ADAPTER", "raise ImportError('needs libfoo')\n")
    with pytest.raises(adapters.UnknownAdapter, match=r"'broken'.*could not be loaded.*libfoo"):
        adapters.get("broken")


@pytest.mark.fast
def test_a_plugin_cannot_take_a_builtin_name(on_path: Path) -> None:
    install_plugin(on_path, "lean", "ADAPTER")
    assert adapters.declared()["lean"] == adapters.BUILTIN["lean"]


def test_a_plugin_adapter_streams_a_reply_in_a_real_server(tmp_path: Path) -> None:
    site = install_plugin(tmp_path / "site", "echo", "ADAPTER")
    config = {
        "db_path": str(tmp_path / "r3nb.duckdb"),
        "models": {"echo": {"model": "echo/x", "stream_path": "echo"}},
        "default_model": "echo",
    }
    server = JupyterServer(tmp_path / "srv", config, extra_env={"PYTHONPATH": str(site)})
    server.start()
    try:
        with httpx.Client(base_url=server.api, headers=server.headers, timeout=30) as client:
            models = client.get("models").json()["models"]
            assert {m["name"]: m["ready"] for m in models}["echo"] is True
            cid = client.post("conversations", json={"title": "plugin"}).json()
            cid = cid["conversation"]["id"]
            with client.stream(
                "POST", f"conversations/{cid}/messages", json={"content": "one two three"}
            ) as r:
                body = r.read().decode()
            assert "event: done" in body
            reply = client.get(f"conversations/{cid}").json()["messages"][-1]
            ready = client.get("health").json()["adapters"]
    finally:
        server.stop()
    assert reply["status"] == "complete"
    assert reply["content"] == "echo:one echo:two echo:three "
    assert (reply["prompt_tokens"], reply["completion_tokens"]) == (1, 3)
    # health says, per adapter, whether a reply would start at once
    assert (ready["echo"], ready["lean"]) == (None, None)
    assert "litellm" in ready


@pytest.mark.fast
def test_r3nb_s_own_adapters_and_model_entries_need_no_scan_of_installed_packages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A starting server's first ``GET health`` asks every built-in adapter whether it
    is ready: finding them scanned every installed package's entry points on the loop
    (24 ms measured, the cold start's largest stall)."""
    from importlib import metadata

    def scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("entry points scanned")

    monkeypatch.setattr(adapters, "_loaded", {})
    monkeypatch.setattr(metadata, "entry_points", scan)
    assert adapters.get("lean") is adapters.get("lean")
    assert adapters.get("litellm") is not None
    ModelRegistry({"a": {"model": "openai/x", "api_key": "k", "stream_path": "litellm"}})
