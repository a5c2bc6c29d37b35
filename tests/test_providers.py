"""Providers as they really are (issue 14): a system prompt is a system message on both
stream paths, the lean reader sends only what the OpenAI API defines, errors read as
the provider's own words with their status, and a stream that never says why it ended
is an error that keeps its text."""

from __future__ import annotations

from typing import Any

import pytest

from r3nb.engine import failures
from r3nb.engine.models import ModelConfig, ModelRegistry
from r3nb.engine.provider import describe_failure
from tests.client import Api
from tests.provider import FakeProvider, Scenario

SYSTEM = "You answer in haiku."


@pytest.fixture
def r3nb_config(provider: FakeProvider) -> dict[str, Any]:
    base = {"model": "openai/fake", "api_base": provider.url, "api_key": "sk-test-x-123456"}
    return {
        "models": {
            "fake": {**base, "stream_path": "litellm", "system_prompt": SYSTEM},
            "lean": {
                **base,
                "system_prompt": SYSTEM,
                "temperature": 0.2,
                "extra_body": {"top_k": 5},
            },
        },
    }


async def test_system_prompt_is_a_system_message_on_both_paths(
    api: Api, provider: FakeProvider, model: str
) -> None:
    cid = await api.conversation()
    await api.send(cid, "!tokens=2 first", model=model)
    await api.send(cid, "!tokens=2 second", model=model)
    for body in provider.requests:
        assert body["messages"][0] == {"role": "system", "content": SYSTEM}
        assert [m["role"] for m in body["messages"][1:]][-1] == "user"
        assert "system_prompt" not in body
        assert "litellm_system_prompt" not in body
    # A conversation's own system prompt wins; an empty one gives the model's back.
    await api.ok("PATCH", f"conversations/{cid}", {"system_prompt": "Answer in French."})
    await api.send(cid, "!tokens=2 third", model=model)
    assert provider.requests[-1]["messages"][0]["content"] == "Answer in French."
    header = (await api.ok("GET", f"conversations/{cid}"))["conversation"]
    assert header["system_prompt"] == "Answer in French."
    await api.ok("PATCH", f"conversations/{cid}", {"system_prompt": ""})
    await api.send(cid, "!tokens=2 fourth", model=model)
    assert provider.requests[-1]["messages"][0]["content"] == SYSTEM
    assert [m["content"] for m in provider.requests[-1]["messages"] if m["role"] == "user"][
        -1
    ].endswith("fourth")


async def test_the_lean_path_sends_only_openai_fields_and_extra_body(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    await api.send(cid, "!tokens=2", model="lean")
    body = provider.requests[-1]
    assert body["temperature"] == 0.2
    assert body["top_k"] == 5
    assert set(body) <= {"model", "messages", "stream", "stream_options", "temperature", "top_k"}


def test_unknown_keys_on_the_lean_path_are_refused_at_start_up() -> None:
    entry = {"model": "openai/gpt-4o-mini", "litellm_system_prompt": "be brief"}
    with pytest.raises(ValueError, match=r"litellm_system_prompt.*OpenAI chat API") as e:
        ModelRegistry({"gpt": entry})
    assert "system_prompt" in str(e.value)
    assert "extra_body" in str(e.value)
    # litellm's path interprets its own keys: allowed there.
    ModelRegistry({"gpt": {**entry, "stream_path": "litellm"}})


def test_entries_interpolate_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R3NB_TEST_GATEWAY", "http://127.0.0.1:9/v1")
    registry = ModelRegistry({"gw": {"model": "openai/m", "api_base": "${R3NB_TEST_GATEWAY}"}})
    assert registry.resolve("gw").params["api_base"] == "http://127.0.0.1:9/v1"
    with pytest.raises(ValueError, match=r"\$\{R3NB_TEST_MISSING\}.*not set"):
        ModelRegistry({"gw": {"model": "openai/m", "api_base": "${R3NB_TEST_MISSING}"}})


@pytest.mark.parametrize(
    ("fault", "words", "expected"),
    [
        ("429", "Rate limit exceeded.", "is rate limiting requests (429): Rate limit exceeded."),
        ("529", "Overloaded", "is overloaded (529): Overloaded"),
        ("500", "upstream melted", "failed (500): upstream melted"),
    ],
)
async def test_errors_carry_the_status_and_the_providers_own_words(
    api: Api, provider: FakeProvider, model: str, fault: str, words: str, expected: str
) -> None:
    provider.scenario = Scenario(error_message=words)
    cid = await api.conversation()
    message = (await api.send(cid, f"!fault={fault}", model=model))["done"]["message"]
    assert message["status"] == "error"
    assert expected in message["error"], message["error"]


async def test_a_stream_without_a_finish_reason_is_an_error_that_keeps_its_text(
    api: Api, provider: FakeProvider, model: str
) -> None:
    cid = await api.conversation()
    result = await api.send(cid, "!tokens=6 !finish=none", model=model)
    message = result["done"]["message"]
    assert message["status"] == "error"
    assert "ended early" in message["error"]
    assert message["content"] == provider.replies[0]
    assert message["content"] == "".join(d["text"] for d in result["deltas"])


def test_wrapped_errors_before_the_first_token_read_as_their_cause() -> None:
    """litellm wraps a Gemini 429 before the first chunk as MidStreamFallbackError
    (status 503 unless the original had one), with the original attached."""
    import httpx
    import litellm

    body = (
        '{"error": {"code": 429, "message": "Rate limit exceeded.", '
        '"status": "RESOURCE_EXHAUSTED"}}'
    )
    original = litellm.RateLimitError(
        message=f"litellm.RateLimitError: GeminiException - {body}",
        llm_provider="gemini",
        model="gemini-2.5-flash",
        response=httpx.Response(429, request=httpx.Request("POST", "http://127.0.0.1/")),
    )
    wrapped = litellm.exceptions.MidStreamFallbackError(
        message=f"litellm.RateLimitError: GeminiException - {body}",
        model="gemini-2.5-flash",
        llm_provider="gemini",
        original_exception=original,
        is_pre_first_chunk=True,
    )
    model = ModelConfig(name="g", params={"model": "gemini/gemini-2.5-flash"})
    assert describe_failure(wrapped, model) == (
        "Gemini is rate limiting requests (429): Rate limit exceeded."
    )
    overloaded = litellm.InternalServerError(
        message='AnthropicException - {"type":"error","error":{"type":"overloaded_error",'
        '"message":"Overloaded"}}',
        llm_provider="anthropic",
        model="claude-haiku-4-5",
    )
    overloaded.status_code = 529
    claude = ModelConfig(name="c", params={"model": "anthropic/claude-haiku-4-5"})
    assert describe_failure(overloaded, claude) == (
        "Anthropic is overloaded (529): Overloaded; retry later"
    )
    assert failures.who("openai/x", "http://127.0.0.1:1/v1") == "the provider"


async def test_get_models_says_which_models_can_answer_and_why_not(
    api: Api, engine: Any, provider: FakeProvider
) -> None:
    from r3nb.engine import provider as provider_module
    from r3nb.engine.models import ModelRegistry
    from tests.servers import free_port

    await provider_module.load()  # litellm-path models are ready once it is loaded
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    engine.models = ModelRegistry(
        {
            "ok": {"model": "openai/fake", "api_base": provider.url, "api_key": "sk-ok-123456"},
            "nokey": {"model": "openai/fake", "api_base": provider.url,
                      "api_key_env": "R3NB_TEST_UNSET_KEY"},
            "down": {"model": "openai/fake", "api_base": closed, "api_key": "sk-down-123456"},
        },
        "ok",
    )  # fmt: skip
    cid = await api.conversation()
    await api.send(cid, "!tokens=2", model="down")
    report = {m["name"]: m for m in (await api.ok("GET", "models"))["models"]}
    assert report["ok"]["ready"] is True
    assert report["ok"]["reason"] is None
    assert report["nokey"]["ready"] is False
    assert "R3NB_TEST_UNSET_KEY" in report["nokey"]["reason"]
    assert report["down"]["ready"] is False
    assert "cannot reach" in report["down"]["reason"]
    assert report["demo"]["ready"] is True
