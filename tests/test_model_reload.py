"""Models change without a restart (issue 14): ``c.R3nbApp.models_file`` is read at
start-up and again when it changes or when ``POST models/reload`` asks, against a real
Jupyter server and the local OpenAI-compatible provider.

A change applies whole or not at all: a file that cannot be used leaves the models as
they were and says why (health, the log, the reload route's 422); a reply streaming
during a reload finishes with the model it started with; a key variable the server
withheld from its environment at start-up still serves a model a reload adds.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from r3nb import protocol
from tests.client import Api
from tests.provider import FakeProvider
from tests.test_wire_contract import assert_shape

#: A key variable of the server's environment, read by an entry of the ``models`` trait:
#: the server withholds it from its children at start-up.
KEY_ENV = "RELOAD_TEST_WITHHELD_KEY"  # not R3NB_*: those are withheld whatever names them
KEY = "sk-reload-withheld-0123456789"
#: A key variable no entry names at start-up; a reload adds a model that names it.
LATE_ENV = "RELOAD_TEST_LATE_KEY"
LATE_KEY = "sk-reload-late-9876543210"


def write_models(path: Path, data: Any) -> None:
    """Replace the file whole (write aside, rename), as editors and config tools save."""
    aside = path.with_suffix(".tmp")
    aside.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    os.replace(aside, path)


def entry(provider: FakeProvider, model: str = "openai/fake", **extra: Any) -> dict[str, Any]:
    return {"model": model, "api_base": provider.url, "api_key": "sk-reload-test-123456", **extra}


async def until(condition: Callable[[], Awaitable[Any]], what: str, timeout: float = 15) -> Any:
    """Poll ``condition`` until it returns something truthy (the server applies a file
    change at its own next check: there is no event to await from here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := await condition():
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def model_names(api: Api) -> list[str]:
    return [m["name"] for m in (await api.ok("GET", "models"))["models"]]


@pytest.fixture
def models_path(tmp_path: Path, provider: FakeProvider) -> Path:
    path = tmp_path / "models.json"
    write_models(path, {"models": {"first": entry(provider, "openai/first")}})
    return path


@pytest.fixture
def watch_interval() -> float:
    return 0.1


@pytest.fixture
def r3nb_config(
    models_path: Path,
    watch_interval: float,
    provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv(LATE_ENV, LATE_KEY)
    keyed = {"model": "openai/keyed", "api_base": provider.url, "api_key_env": KEY_ENV}
    return {
        "models_file": str(models_path),
        "models_file_interval": watch_interval,
        "models": {"fake": entry(provider, stream_path="litellm"), "keyed": keyed},
    }


async def test_an_edited_models_file_applies_without_a_restart(
    api: Api, provider: FakeProvider, models_path: Path
) -> None:
    assert {"fake", "first", "keyed", "demo"} <= set(await model_names(api))
    health = await api.ok("GET", "health")
    assert health["models_file"]["path"] == str(models_path)
    assert health["models_file"]["error"] is None
    assert health["models_revision"] == 0

    write_models(
        models_path,
        {"models": {"second": entry(provider, "openai/second")}, "default_model": "second"},
    )
    await until(lambda: _has(api, "second"), "the new model in GET models")
    models = await api.ok("GET", "models")
    assert "first" not in [m["name"] for m in models["models"]]
    assert {"fake", "keyed"} <= {m["name"] for m in models["models"]}  # the trait's stay
    assert (models["default"], models["revision"]) == ("second", 1)
    assert_shape(models, protocol.ModelsReply)

    cid = await api.conversation()
    result = await api.send(cid, "!tokens=4", model="second")
    assert result["done"]["message"]["status"] == "complete"
    assert result["done"]["message"]["model"] == "second"
    assert provider.requests[-1]["model"] == "second"
    assert "".join(d["text"] for d in result["deltas"]) == provider.replies[-1]
    default = await api.send(cid, "!tokens=2")  # no model named: the file's default
    assert default["done"]["message"]["model"] == "second"

    health = await api.ok("GET", "health")
    assert health["models_file"]["error"] is None
    assert health["models_file"]["loaded_at"] > time.time() - 60
    assert health["models_revision"] == 1
    assert_shape(health["models_file"], protocol.ModelsFileState)

    # The file's entry replaces the trait's of the same name; removing it brings it back.
    write_models(models_path, {"models": {"fake": entry(provider, "openai/from-file")}})
    await until(lambda: _model_of(api, "fake", "openai/from-file"), "the file's 'fake'")
    await api.send(cid, "!tokens=2", model="fake")
    assert provider.requests[-1]["model"] == "from-file"
    write_models(models_path, {"models": {}})
    await until(lambda: _model_of(api, "fake", "openai/fake"), "the trait's 'fake' again")


async def _has(api: Api, name: str) -> bool:
    return name in await model_names(api)


async def _model_of(api: Api, name: str, model: str) -> bool:
    listed = {m["name"]: m["model"] for m in (await api.ok("GET", "models"))["models"]}
    return listed.get(name) == model


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"models": {"broken": ', "not valid JSON"),
        ({"modles": {}}, "unknown key(s) 'modles'"),
        ({"models": {"x": {"model": "openai/x", "litellm_system_prompt": "hi"}}},
         "'litellm_system_prompt', which the OpenAI chat API does not define"),
        ({"models": {"x": {"api_base": "http://127.0.0.1:9/v1"}}}, "at least a 'model' string"),
        ({"models": {}, "default_model": "nowhere"}, "default_model='nowhere' is not a configured"),
        ({"models": {"x": {"model": "openai/x", "api_key": "${RELOAD_TEST_UNSET}"}}},
         "${RELOAD_TEST_UNSET}, which is not set"),
        ({"models": {"x": {"model": "openai/x", "input_cost_per_token": {}}}}, "must be a number"),
        ("[1, 2]", "must hold a JSON object"),
    ],
)  # fmt: skip
async def test_an_invalid_file_keeps_the_models_and_health_says_why(
    api: Api, provider: FakeProvider, models_path: Path, content: Any, reason: str
) -> None:
    write_models(models_path, content)

    async def refused() -> str | None:
        error = (await api.ok("GET", "health"))["models_file"]["error"]
        return error if error and reason in error else None

    error = await until(refused, f"health to name the error ({reason})")
    assert error.startswith(str(models_path))
    assert "first" in await model_names(api)
    cid = await api.conversation()
    result = await api.send(cid, "!tokens=3", model="first")
    assert result["done"]["message"]["status"] == "complete"
    assert provider.requests[-1]["model"] == "first"
    assert (await api.ok("GET", "health"))["models_revision"] == 0

    # Fixed: applied, and the error is gone.
    write_models(models_path, {"models": {"third": entry(provider, "openai/third")}})
    await until(lambda: _has(api, "third"), "the fixed file")
    assert (await api.ok("GET", "health"))["models_file"]["error"] is None


@pytest.mark.parametrize("watch_interval", [0.0])  # no watcher: only the route reloads
async def test_the_reload_route_applies_the_file_or_says_why_not(
    api: Api, provider: FakeProvider, models_path: Path, watch_interval: float
) -> None:
    write_models(models_path, {"models": {"routed": entry(provider, "openai/routed")}})
    assert "routed" not in await model_names(api)  # nothing watches
    reply = await api.ok("POST", "models/reload")
    assert_shape(reply, protocol.ModelsReloadReply)
    assert reply["changed"] is True
    assert reply["revision"] == 1
    assert "routed" in [m["name"] for m in reply["models"]]
    assert reply["models_file"]["error"] is None
    assert "routed" in await model_names(api)

    again = await api.ok("POST", "models/reload", {"ignored": True})
    assert (again["changed"], again["revision"]) == (False, 1)

    write_models(models_path, '{"models": ')
    status, body = await api.call("POST", "models/reload")
    assert status == 422, body
    assert_shape(body, protocol.ErrorBody)
    assert "not valid JSON" in body["error"]
    assert str(models_path) in body["error"]
    assert "routed" in await model_names(api)
    assert (await api.ok("GET", "health"))["models_file"]["error"] == body["error"]

    models_path.unlink()
    status, body = await api.call("POST", "models/reload")
    assert (status, "does not exist" in body["error"]) == (422, True)
    assert "routed" in await model_names(api)


@pytest.mark.parametrize("r3nb_config", [{}])  # the suite's usual server: no models file
async def test_reloading_without_a_models_file_is_a_409_saying_what_to_set(
    api: Api, r3nb_config: dict[str, Any]
) -> None:
    status, body = await api.call("POST", "models/reload")
    assert status == 409, body
    assert "c.R3nbApp.models_file" in body["error"]
    health = await api.ok("GET", "health")
    assert (health["models_file"], health["models_revision"]) == (None, 0)
    assert (await api.ok("GET", "models"))["revision"] == 0


@pytest.mark.parametrize("watch_interval", [0.0])
async def test_a_reply_streaming_during_a_reload_completes_with_its_original_model(
    api: Api, provider: FakeProvider, models_path: Path, watch_interval: float
) -> None:
    cid = await api.conversation()
    streaming = asyncio.create_task(api.send(cid, "!tokens=12 !gate=3", model="first"))
    await provider.await_sent(0, 3)
    # "first" now names another model, at a port where nothing listens.
    elsewhere = {"model": "openai/first-v2", "api_base": "http://127.0.0.1:9/v1", "api_key": "x"}
    write_models(models_path, {"models": {"first": elsewhere}})
    assert (await api.ok("POST", "models/reload"))["changed"] is True
    provider.release()
    result = await streaming
    message = result["done"]["message"]
    assert (message["status"], message["model"]) == ("complete", "first")
    assert message["content"] == provider.replies[0]
    assert len(provider.requests) == 1

    # The next send uses the entry as the file says now.
    write_models(models_path, {"models": {"first": entry(provider, "openai/first-v3")}})
    await api.ok("POST", "models/reload")
    again = await api.send(cid, "!tokens=2", model="first")
    assert again["done"]["message"]["status"] == "complete"
    assert provider.requests[-1]["model"] == "first-v3"


@pytest.mark.parametrize("watch_interval", [0.0])
async def test_a_withheld_key_variable_still_serves_a_model_a_reload_adds(
    api: Api, provider: FakeProvider, models_path: Path, watch_interval: float
) -> None:
    # Read at start-up for the trait's "keyed" model, then removed from the environment
    # every kernel inherits; LATE_ENV was named by nothing, so it is still there.
    assert KEY_ENV not in os.environ
    assert os.environ.get(LATE_ENV) == LATE_KEY
    reloaded = {
        "again": {"model": "openai/again", "api_base": provider.url, "api_key_env": KEY_ENV},
        "late": {"model": "openai/late", "api_base": provider.url, "api_key_env": LATE_ENV},
        "spliced": entry(provider, "openai/spliced", api_key="${" + KEY_ENV + "}"),
    }
    write_models(models_path, {"models": reloaded})
    reply = await api.ok("POST", "models/reload")
    ready = {m["name"]: (m["ready"], m["reason"]) for m in reply["models"]}
    assert ready["again"] == ready["late"] == ready["spliced"] == (True, None)
    assert LATE_ENV not in os.environ  # withheld from kernels started from now on

    cid = await api.conversation()
    for name, key in [("again", KEY), ("late", LATE_KEY), ("spliced", KEY), ("keyed", KEY)]:
        result = await api.send(cid, "!tokens=2", model=name)
        assert result["done"]["message"]["status"] == "complete", (name, result["done"])
        assert provider.authorizations[-1] == f"Bearer {key}", name
    # A reload once more (nothing changed): the withheld values are still found.
    assert (await api.ok("POST", "models/reload"))["changed"] is False
    await api.send(cid, "!tokens=2", model="late")
    assert provider.authorizations[-1] == f"Bearer {LATE_KEY}"


def test_a_file_unusable_at_start_up_leaves_the_trait_models_and_says_why(
    tmp_path: Path,
) -> None:
    """What the server starts with when its file is broken (the same ``load_blocking``
    ``R3nbApp`` calls): the ``models`` trait alone, the reason kept for health."""
    from r3nb.engine.model_file import ModelsFile
    from r3nb.engine.models import ModelSource, WithheldEnvironment

    broken = tmp_path / "broken.json"
    write_models(broken, {"models": {"y": {"model": "openai/y"}}, "default_model": "z"})
    fake = {"model": "openai/fake", "api_base": "http://127.0.0.1:9/v1", "api_key": "sk-x-12345"}
    trait = ModelSource({"fake": fake}, "y")  # the trait's default is one of the file's
    loaded = ModelsFile(str(broken), trait, WithheldEnvironment())
    registry = loaded.load_blocking()
    assert (registry.names(), registry.default) == (["demo", "fake"], "fake")
    assert loaded.error is not None
    assert "default_model='z' is not a configured model" in loaded.error
    assert loaded.loaded_at is None
