"""The context sent to a model fits its window (issue 13): the newest turns that fit,
the system prompt and the new question always, and the person told what was left out."""

from __future__ import annotations

from typing import Any

import pytest

from r3nb.engine.context import fit
from tests.client import Api
from tests.provider import FakeProvider, small_context_config


def _turn(role: str, chars: int) -> dict[str, Any]:
    return {"role": role, "content": "x" * chars}


def test_fit_keeps_the_newest_turns_the_system_prompt_and_the_question() -> None:
    system, question = {"role": "system", "content": "be brief"}, _turn("user", 40)
    history = [_turn("user", 400), _turn("assistant", 4000), _turn("user", 40),
               _turn("assistant", 400)]  # fmt: skip
    everything = [system, *history, question]
    assert fit(everything, None, None).messages == everything  # window unknown: all sent
    fitted = fit(everything, 1000, 256)
    assert fitted.messages == [system, history[2], history[3], question]
    assert fitted.left_out == 2
    tiny = fit(everything, 300, 256)
    assert tiny.messages == [system, question]
    assert tiny.left_out == 4


def test_fit_never_starts_the_history_with_an_answer() -> None:
    history = [_turn("user", 40), _turn("assistant", 2000), _turn("assistant", 40)]
    fitted = fit([*history, _turn("user", 10)], 600, 256)
    assert [m["role"] for m in fitted.messages] == ["user"]


@pytest.fixture
def r3nb_config(provider: FakeProvider) -> dict[str, Any]:
    return small_context_config(provider)


async def test_a_long_conversation_sends_what_fits_and_says_what_it_left_out(
    api: Api, provider: FakeProvider
) -> None:
    cid = await api.conversation()
    await api.send(cid, "!tokens=2 " + "long question " * 150)  # ~2,100 characters
    await api.send(cid, "!tokens=2 a short one")
    result = await api.send(cid, "!tokens=2 and the last")
    sent = provider.requests[-1]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        "!tokens=2 a short one",
        "!tokens=2 and the last",
    ]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert result["start"]["context_left_out"] == 2
    first = provider.requests[0]["messages"]
    assert len(first) == 1  # nothing left out when everything fits
