"""Prices and context windows are known before litellm is (issue 16: no cold start).

A reply that ended while litellm was still importing (seconds after a server start)
waited for the import to compute its cost: the first lean-path reply's ``done`` came
4.8-6.7 s after launch. ``prices`` reads litellm's bundled price list without importing
litellm, and must agree with litellm wherever litellm has a plain per-token price.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from r3nb.engine import prices

MODELS = [
    "openai/gpt-4o-mini",
    "gpt-4o",
    "anthropic/claude-sonnet-4-5",
    "gemini/gemini-2.5-flash",
    "mistral/mistral-small-latest",
]


@pytest.mark.parametrize("model", MODELS)
def test_prices_agree_with_litellm(model: str) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    expected = sum(litellm.cost_per_token(model=model, prompt_tokens=1234, completion_tokens=567))
    assert prices.cost(model, 1234, 567) == pytest.approx(expected)
    info = litellm.get_model_info(model)
    assert prices.context_window(model) == (info.get("max_input_tokens") or info["max_tokens"])


def test_an_unknown_model_has_no_price_rather_than_a_zero_one() -> None:
    assert prices.cost("openai/not-a-model-anyone-sells", 10, 10) is None
    assert prices.context_window("openai/not-a-model-anyone-sells") is None


def test_a_reply_cost_never_waits_for_litellm() -> None:
    """In a fresh process (litellm not imported): the usage step of a reply on a priced
    model returns its cost without importing litellm."""
    code = """
import asyncio, sys
from r3nb.engine import provider
from r3nb.engine.models import ModelRegistry
model = ModelRegistry({"m": {"model": "openai/gpt-4o-mini", "api_key": "sk-x"}}).resolve("m")
usage = asyncio.run(provider._usage(model, 1000, 500, "stop"))
assert abs(usage.cost - 0.00045) < 1e-12, usage
assert provider.context_window(model) == 128000
assert "litellm" not in sys.modules, "waited for litellm's import"
print("ok")
"""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
