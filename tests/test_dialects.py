"""Every provider dialect litellm speaks with a local base URL, end to end: a real
``jupyter server`` with r3nb, talking to the suite's provider in each wire format
(tests/dialects.py): OpenAI on both stream paths, Anthropic Messages, Gemini
``streamGenerateContent``, Ollama ``/api/chat`` and ``/api/generate``. Plus the
networks around them: an HTTP(S) proxy, a private CA, Ollama's model lookup."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client import Api
from tests.dialects import DialectProvider, ForwardProxy, self_signed_ca
from tests.provider import MID_ERROR, Scenario, generated_text
from tests.servers import JupyterServer

SYSTEM = "You answer in haiku."
KEY = "sk-test-dialect-key-0123456789"
#: Variables that would make a server trust (or route) otherwise than a test says.
_NETWORK_ENV = (
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_VERIFY",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "all_proxy", "no_proxy",
)  # fmt: skip
#: model name → who the errors name.
DIALECTS = {
    "openai-lean": "the provider",
    "openai-litellm": "the provider",
    "anthropic": "Anthropic",
    "gemini": "Gemini",
    "ollama_chat": "Ollama",
    "ollama": "Ollama",
}


def entries(dp: DialectProvider, *, suffix: str = "") -> dict[str, Any]:
    common = {"system_prompt": SYSTEM}
    return {
        f"openai-lean{suffix}": {
            "model": "openai/fake", "api_base": dp.url, "api_key": KEY, "send_user": True,
            **common,
        },
        f"openai-litellm{suffix}": {
            "model": "openai/fake", "api_base": dp.url, "api_key": KEY, "send_user": True,
            "stream_path": "litellm", **common,
        },
        f"anthropic{suffix}": {
            "model": "anthropic/claude-haiku-4-5", "api_base": dp.anthropic_base,
            "api_key": KEY, "send_user": True, **common,
        },
        f"gemini{suffix}": {
            "model": "gemini/gemini-2.5-flash", "api_base": dp.gemini_base, "api_key": KEY,
            **common,
        },
        f"ollama_chat{suffix}": {"model": "ollama_chat/llama3.2", "api_base": dp.root, **common},
        f"ollama{suffix}": {"model": "ollama/llama3.2", "api_base": dp.root, **common},
    }  # fmt: skip


def server_env(monkeypatch: pytest.MonkeyPatch, **extra: str) -> dict[str, str]:
    """The server's network environment: only what the test sets. The machine's own CA
    and proxy variables are left out of what the subprocess inherits (an empty value
    is not the same as none: ``SSL_VERIFY=""`` turns litellm's checks into nonsense)."""
    for name in _NETWORK_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        if name in extra:  # both spellings, so neither shadows the other
            extra[name.lower()] = extra[name]
    return extra


def start_server(workdir: Path, models: dict[str, Any], env: dict[str, str]) -> JupyterServer:
    # A config file, not the command line: traitlets reads a dict there with Python's
    # literal syntax, where JSON's ``true`` is not a value.
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    config = {"R3nbApp": {"models": models}}
    (workdir / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
    r3nb = {
        "db_path": str(workdir / "r3nb.duckdb"),
        "snapshot_interval": 0.3,
        "default_model": next(iter(models)),
        "rate_limit_per_minute": 1000,
        "max_concurrent_streams": 100,
        "first_token_timeout": 10,
        "idle_timeout": 10,
    }
    return JupyterServer(workdir, r3nb, extra_env=env, wait_for_provider=True).start()


@pytest.fixture(scope="module")
def wrong_ollama() -> Iterator[DialectProvider]:
    """Where litellm looks for Ollama unless told (``OLLAMA_API_BASE``, by default
    localhost:11434): a slow one here, so that asking it shows in the timings."""
    with DialectProvider() as p:
        p.show_delay = 1.0
        yield p


@pytest.fixture(scope="module")
def dialects() -> Iterator[DialectProvider]:
    with DialectProvider() as p:
        yield p


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    dialects: DialectProvider,
    wrong_ollama: DialectProvider,
) -> Iterator[JupyterServer]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        env = server_env(
            monkeypatch, OLLAMA_API_BASE=wrong_ollama.root, NO_PROXY="127.0.0.1,localhost"
        )
        server = start_server(tmp_path_factory.mktemp("dialects"), entries(dialects), env)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def default_scenario(dialects: DialectProvider) -> Iterator[None]:
    yield
    dialects.scenario = Scenario()
    dialects.release()


@pytest.fixture
def api(server: JupyterServer, jp_asyncio_loop: Any) -> Iterator[Api]:
    client = Api(server.api, headers=server.headers)
    yield client
    jp_asyncio_loop.run_until_complete(client.aclose())


def dump(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False)


def system_sent(model: str, body: dict[str, Any]) -> bool:
    """The system prompt, where each dialect carries it."""
    if model.startswith(("openai", "ollama_chat")):
        return bool(body["messages"][0] == {"role": "system", "content": SYSTEM} or (
            body["messages"][0]["role"] == "system" and body["messages"][0]["content"] == SYSTEM
        ))  # fmt: skip
    if model == "anthropic":
        return body["system"] in (SYSTEM, [{"type": "text", "text": SYSTEM}])
    if model == "gemini":
        return bool(body["system_instruction"]["parts"] == [{"text": SYSTEM}])
    return SYSTEM in str(body.get("system") or body["prompt"])  # /api/generate


@pytest.mark.parametrize("model", list(DIALECTS))
async def test_a_reply_streams_in_deltas_with_usage_the_system_prompt_and_the_user(
    api: Api, dialects: DialectProvider, model: str
) -> None:
    first = len(dialects.requests)
    cid = await api.conversation()
    # Streamed, not one lump at the end: the provider holds the rest of the reply at its
    # gate until a first delta has reached the client (a pace by sleeps lumped into one
    # delta on a loaded machine).
    deltas: list[dict[str, Any]] = []
    done: dict[str, Any] = {}
    async for event, data in api.events(
        "POST",
        f"conversations/{cid}/messages",
        {"content": "!tokens=6 !gate=3 hello", "model": model},
    ):
        if event == "delta":
            deltas.append(data)
            if len(deltas) == 1:
                dialects.release()
        elif event == "done":
            done = data
    message = done["message"]
    assert message["status"] == "complete", message["error"]
    assert message["error"] is None
    assert message["content"] == generated_text(6)
    assert len(deltas) >= 2
    assert message["completion_tokens"] == 6
    assert message["prompt_tokens"] > 0
    (body,) = dialects.requests[first:]
    assert system_sent(model, body), dump(body)
    author = message["author"]
    if model.startswith("openai"):  # "send_user": true, for a gateway's accounting
        assert body["user"] == author
    elif model == "anthropic":
        assert body["metadata"] == {"user_id": author}
    else:
        assert author not in dump(body)


@pytest.mark.parametrize("model", list(DIALECTS))
async def test_the_second_turn_carries_the_first(
    api: Api, dialects: DialectProvider, model: str
) -> None:
    cid = await api.conversation()
    one = (await api.send(cid, "!tokens=3 first question", model=model))["done"]["message"]
    await api.send(cid, "!tokens=2 second question", model=model)
    body = dump(dialects.requests[-1])
    assert "first question" in body
    assert one["content"].strip() in body
    assert body.index("first question") < body.index("second question")


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (429, "is rate limiting requests (429): Quota exhausted for this key."),
        # litellm wraps Gemini's 503 as its own 503 (MidStreamFallbackError): it read as
        # "the provider's stream broke off mid-reply" before any token had come.
        (503, "is unavailable (503): Quota exhausted for this key.; retry later"),
    ],
)
@pytest.mark.parametrize("model", list(DIALECTS))
async def test_an_error_before_the_first_token_names_the_provider_and_its_words(
    api: Api, dialects: DialectProvider, model: str, status: int, says: str
) -> None:
    dialects.scenario = Scenario(error_message="Quota exhausted for this key.")
    cid = await api.conversation()
    message = (await api.send(cid, f"!fault={status}", model=model))["done"]["message"]
    assert message["status"] == "error"
    assert message["content"] == ""
    assert message["error"].startswith(DIALECTS[model]), message["error"]
    if model == "anthropic" and status == 503:
        # litellm makes Anthropic's 503 a 500 (its body's "api_error" says no more).
        assert "Quota exhausted for this key." in message["error"], message["error"]
    else:
        assert says in message["error"], message["error"]
    assert KEY not in message["error"]


@pytest.mark.parametrize("model", ["openai-lean", "openai-litellm", "ollama_chat", "ollama"])
async def test_an_error_line_mid_stream_keeps_the_text_and_the_providers_words(
    api: Api, model: str
) -> None:
    """A provider that fails after some tokens says so in the stream (Ollama streams
    ``{"error": "…"}``): litellm's Ollama parsers never read it, so a cut reply was
    stored ``complete`` (``ollama_chat/``) or as "cannot reach Ollama" (``ollama/``)."""
    cid = await api.conversation()
    result = await api.send(cid, "!tokens=8 !fault=error !after=3", model=model)
    message = result["done"]["message"]
    assert message["status"] == "error", message
    assert message["content"] == generated_text(3)
    assert message["error"].startswith(DIALECTS[model]), message["error"]
    assert "mid-reply" in message["error"], message["error"]
    assert message["error"].endswith(MID_ERROR), message["error"]


async def test_anthropic_overloaded_reads_as_overloaded(
    api: Api, dialects: DialectProvider
) -> None:
    dialects.scenario = Scenario(error_message="Overloaded")
    cid = await api.conversation()
    message = (await api.send(cid, "!fault=529", model="anthropic"))["done"]["message"]
    assert message["error"] == "Anthropic is overloaded (529): Overloaded; retry later"


@pytest.mark.parametrize("model", list(DIALECTS))
async def test_an_error_after_the_first_token_keeps_the_text(
    api: Api, dialects: DialectProvider, model: str
) -> None:
    cid = await api.conversation()
    result = await api.send(cid, "!tokens=12 !fault=drop !after=4", model=model)
    message = result["done"]["message"]
    assert message["status"] == "error"
    assert message["content"] == generated_text(4)
    assert message["content"] == "".join(d["text"] for d in result["deltas"])
    assert message["error"]


@pytest.mark.parametrize("model", list(DIALECTS))
async def test_a_reply_cut_at_the_token_limit_is_complete_and_says_so(api: Api, model: str) -> None:
    cid = await api.conversation()
    message = (await api.send(cid, "!tokens=5 !finish=length", model=model))["done"]["message"]
    assert message["status"] == "complete"  # its text stays in the conversation
    assert message["content"] == generated_text(5)
    assert "cut at the model's output limit" in message["error"]


@pytest.mark.parametrize("model", list(DIALECTS))
async def test_a_stream_without_a_finish_reason_is_an_error_that_keeps_its_text(
    api: Api, model: str
) -> None:
    cid = await api.conversation()
    message = (await api.send(cid, "!tokens=5 !finish=none", model=model))["done"]["message"]
    assert message["status"] == "error"
    assert "ended early" in message["error"]
    assert message["content"] == generated_text(5)


@pytest.mark.parametrize("model", list(DIALECTS))
async def test_stop_closes_the_provider_connection(
    api: Api, dialects: DialectProvider, model: str
) -> None:
    cid = await api.conversation()
    index = len(dialects.requests)
    events = api.events(
        "POST", f"conversations/{cid}/messages", {"content": "!tokens=30 !gate=3", "model": model}
    )
    mid = None
    async for event, data in events:
        if event == "start":
            mid = data["assistant_message"]["id"]
            break
    assert mid is not None
    await dialects.await_sent(index, 3)
    stopped = (await api.ok("POST", f"messages/{mid}/cancel"))["message"]
    assert stopped["status"] == "cancelled"
    assert stopped["content"] == generated_text(3)
    assert await dialects.await_outcome(index) == "disconnected"
    await events.aclose()


async def test_ollama_is_looked_up_once_at_its_own_base_and_answers_promptly(
    api: Api, dialects: DialectProvider, wrong_ollama: DialectProvider
) -> None:
    """litellm asked ``/api/show`` twice per reply at OLLAMA_API_BASE (localhost:11434
    by default), never at the entry's base; each answer here takes 1 s."""

    async def first_token(model: str) -> float:
        cid = await api.conversation()
        start = time.monotonic()
        async for event, _ in api.events(
            "POST", f"conversations/{cid}/messages", {"content": "!tokens=3", "model": model}
        ):
            if event == "delta":
                return time.monotonic() - start
        raise AssertionError("no delta")

    async with httpx.AsyncClient() as direct:

        async def direct_first_token() -> float:
            start = time.monotonic()
            body = {"model": "llama3.2", "messages": [{"role": "user", "content": "!tokens=3"}]}
            async with direct.stream("POST", dialects.root + "/api/chat", json=body) as r:
                async for _ in r.aiter_lines():
                    return time.monotonic() - start
            raise AssertionError("no line")

        for model in ("ollama_chat", "ollama"):
            await first_token(model)  # the first reply may look the model up
            shows = len(dialects.shows)
            via_r3nb = statistics.median([await first_token(model) for _ in range(3)])
            direct_call = statistics.median([await direct_first_token() for _ in range(3)])
            assert len(dialects.shows) == shows  # no lookup per reply
            assert via_r3nb - direct_call < 0.35, (model, via_r3nb, direct_call)
    assert len(dialects.shows) <= 2  # at most once per model, at its own base
    assert wrong_ollama.shows == []


async def test_models_the_server_describes_itself(api: Api) -> None:
    report = {m["name"]: m for m in (await api.ok("GET", "models"))["models"]}
    assert all(report[name]["ready"] for name in DIALECTS), report


# --------------------------------------------------------------------------- gateways


async def test_a_proxy_and_a_private_ca_are_honoured_on_every_path(
    tmp_path: Path, dialects: DialectProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every provider call goes through HTTP(S)_PROXY (NO_PROXY empty: 127.0.0.1 is
    proxied too), and a provider whose certificate a private CA signed is trusted when
    REQUESTS_CA_BUNDLE names that CA (litellm and httpx read only SSL_CERT_FILE, which
    worked before; one server start is ~10 s, so this test checks the variable that
    did not)."""
    ca, context = self_signed_ca(tmp_path)
    with DialectProvider(ssl_options=context) as tls, ForwardProxy() as proxy:
        models = {**entries(dialects), **entries(tls, suffix="-tls")}
        env = server_env(
            monkeypatch,
            HTTP_PROXY=proxy.url,
            HTTPS_PROXY=proxy.url,
            NO_PROXY="",
            REQUESTS_CA_BUNDLE=str(ca),
        )
        server = start_server(tmp_path, models, env)
        api = Api(server.api, headers=server.headers)
        try:
            for name in models:
                cid = await api.conversation()
                done = (await api.send(cid, "!tokens=3", model=name))["done"]["message"]
                assert done["status"] == "complete", (name, done["error"])
        finally:
            await api.aclose()
            server.stop()
        plain = [line for line in proxy.requests if not line.startswith("CONNECT")]
        for path in ("/v1/chat/completions", "/anthropic/v1/messages",
                     ":streamGenerateContent", "/api/chat", "/api/generate"):  # fmt: skip
            assert any(path in line for line in plain), (path, proxy.requests)
        assert f"CONNECT 127.0.0.1:{tls.port}" in proxy.requests[-1] or any(
            line == f"CONNECT 127.0.0.1:{tls.port}" for line in proxy.requests
        )
        assert len(tls.requests) == len(DIALECTS)
        assert not any("11434" in line for line in proxy.requests)


async def test_an_untrusted_certificate_is_a_clear_error_on_every_path(
    provider_worker: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from r3nb.engine import openai_stream
    from r3nb.engine import provider as provider_module
    from r3nb.engine.models import ModelRegistry
    from r3nb.errors import ProviderError

    for name in _NETWORK_ENV:
        monkeypatch.delenv(name, raising=False)
    openai_stream.tls_context.cache_clear()
    _, context = self_signed_ca(tmp_path)
    try:
        with DialectProvider(ssl_options=context) as tls:
            registry = ModelRegistry(entries(tls))
            await provider_module.load()
            for name in DIALECTS:
                with pytest.raises(ProviderError) as caught:
                    async for _ in provider_module.stream_reply(
                        registry.resolve(name), [{"role": "user", "content": "hi"}]
                    ):
                        pass
                reason = caught.value.reason
                assert reason.startswith(f"cannot reach {DIALECTS[name]} at https://"), reason
                assert "certificate not trusted" in reason, reason
                assert "SSL_CERT_FILE" in reason, reason
            assert tls.requests == []
    finally:
        openai_stream.tls_context.cache_clear()
        await openai_stream.aclose()
