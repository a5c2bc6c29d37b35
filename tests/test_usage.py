"""Usage per person and daily budgets."""

from __future__ import annotations

from typing import Any

import pytest

from tests.client import Api, ApiError


@pytest.fixture
def r3nb_config() -> dict[str, Any]:
    return {"budgets": {"tokens_per_day": 50}}


async def test_token_budget_refuses_with_429_naming_it(api: Api, jp_serverapp: Any) -> None:
    cid = await api.conversation()
    first = await api.send(cid, "!tokens=30")
    second = await api.send(cid, "!tokens=30")
    spent = sum(
        r["done"]["message"]["prompt_tokens"] + r["done"]["message"]["completion_tokens"]
        for r in (first, second)
    )
    assert spent >= 50
    with pytest.raises(ApiError) as caught:
        await api.send(cid, "!tokens=1")
    assert caught.value.status == 429
    assert "daily budget reached" in caught.value.body["error"]
    assert "tokens_per_day" in caught.value.body["error"]
    assert int(caught.value.headers["Retry-After"]) > 0
    usage = await api.ok("GET", "usage")
    owner = jp_serverapp.web_app.settings["r3nb_owner"]
    assert usage["user"] == owner
    assert usage["today"]["tokens"] == spent
    assert usage["today"]["messages"] == 2
    assert usage["month"]["tokens"] >= spent
    assert owner in usage["users"]  # the owner is an admin by default


def test_budget_config_is_validated() -> None:
    from r3nb.engine.usage import validate_budgets

    assert validate_budgets({"tokens_per_day": 10}) == {"tokens_per_day": 10.0}
    with pytest.raises(ValueError, match="unknown key"):
        validate_budgets({"tokens_per_week": 1})
    with pytest.raises(ValueError, match=">= 0"):
        validate_budgets({"cost_per_day": -1})
