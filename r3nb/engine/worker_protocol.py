"""The JSON lines between the Jupyter server and its provider worker, declared once.

The server (``worker_client``) writes one request per line on the worker's stdin; the
worker (``worker``) answers on its stdout, every line naming the request it belongs to,
so any number of replies stream at once and nothing is matched by order. A model
travels with its key already resolved (``ModelConfig.call_params``): the worker needs
no key in its environment and reads no key file.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from .models import ModelConfig


class ModelSpec(TypedDict):
    """How one stream request names its model: what the worker's litellm call, its
    error text and its cost need, nothing else."""

    name: str
    params: dict[str, Any]
    cost_per_token: list[float] | None
    max_context_tokens: int | None


class StreamRequest(TypedDict):
    op: Literal["stream"]
    id: int
    model: ModelSpec
    messages: list[dict[str, Any]]
    #: The demo model's pace, as the server's environment says at the time of the call.
    demo_delay: str | None


class CancelRequest(TypedDict):
    op: Literal["cancel"]
    id: int


class Ending(TypedDict):
    """How a stream ended: token counts, cost (None: unknown, not zero), the provider's
    finish reason, and the model's context window when litellm knows it (an Ollama
    model's, learnt from its ``/api/show``, is known nowhere else)."""

    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    finish_reason: str | None
    context_window: int | None


# Worker → server, one JSON object per line:
#   {"op": "ready"}                      litellm imported and warmed up: send requests
#   {"op": "failed", "reason": str}      it could not start (the worker then exits)
#   {"id": n, "requested": true}         the provider is being called now (deadlines start)
#   {"id": n, "text": str}               text deltas (all those at hand, coalesced)
#   {"id": n, "end": Ending}             the stream finished
#   {"id": n, "error": str}              it failed: a reason a person can act on
#   {"id": n, "cancelled": true}         cancelled as asked, after every text line it had


def spec(model: ModelConfig, params: dict[str, Any]) -> ModelSpec:
    """``model`` as the worker needs it, with ``params`` (the resolved call parameters)."""
    cost = list(model.cost_per_token) if model.cost_per_token is not None else None
    return {
        "name": model.name,
        "params": params,
        "cost_per_token": cost,
        "max_context_tokens": model.max_context_tokens,
    }


def model_from(spec: ModelSpec) -> ModelConfig:
    cost = spec["cost_per_token"]
    return ModelConfig(
        name=spec["name"],
        params=spec["params"],
        cost_per_token=(float(cost[0]), float(cost[1])) if cost else None,
        max_context_tokens=spec["max_context_tokens"],
        stream_path="litellm",
    )
