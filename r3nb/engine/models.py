"""The model registry: names a person picks, mapped to litellm call parameters.

No litellm import here: the registry is consulted on every request and by the kernel
side, and ``import litellm`` costs seconds. Keys are resolved at call time from
``api_key_env`` so a rotated key needs no restart, and are never part of what
``public()`` returns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from r3nb.errors import BadRequest

#: litellm model string of the built-in offline model (a CustomLLM in provider.py).
DEMO_PROVIDER = "r3nb-demo"
DEMO_MODEL = f"{DEMO_PROVIDER}/demo"

#: Keys of a model entry that are ours, not litellm's.
_OWN_KEYS = {
    "api_key_env", "description", "input_cost_per_token", "output_cost_per_token", "stream_path",
}  # fmt: skip
STREAM_PATHS = ("auto", "lean", "litellm")
#: Never echoed to a client, whatever the entry says.
_SECRET_KEYS = {"api_key", "api_key_env", "headers", "extra_headers", "aws_secret_access_key"}


@dataclass(frozen=True)
class ModelConfig:
    name: str
    params: dict[str, Any]  # litellm kwargs: model, api_base, api_key, ...
    description: str = ""
    api_key_env: str | None = None
    cost_per_token: tuple[float, float] | None = None  # (input, output) overrides
    stream_path: str = "auto"

    @property
    def lean(self) -> bool:
        """Stream with r3nb's lean OpenAI-compatible reader instead of litellm's wrapper
        (see openai_stream.py for the measured reasons). ``auto``: for ``openai/…``."""
        if self.stream_path == "auto":
            return self.litellm_model.startswith("openai/")
        return self.stream_path == "lean"

    @property
    def litellm_model(self) -> str:
        return str(self.params["model"])

    @property
    def is_demo(self) -> bool:
        return self.litellm_model.startswith(DEMO_PROVIDER + "/")

    def call_params(self) -> dict[str, Any]:
        """kwargs for ``litellm.acompletion``; reads the key from the environment now."""
        params = dict(self.params)
        if self.api_key_env and "api_key" not in params:
            key = os.environ.get(self.api_key_env)
            if key:
                params["api_key"] = key
        return params

    def missing_key_reason(self) -> str | None:
        if (
            self.api_key_env
            and "api_key" not in self.params
            and not os.environ.get(self.api_key_env)
        ):
            return (
                f"model {self.name!r} needs an API key: set the environment variable "
                f"{self.api_key_env} for the Jupyter server and restart it"
            )
        return None

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.litellm_model,
            "description": self.description,
        }


def _parse(name: str, entry: Any) -> ModelConfig:
    if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
        raise ValueError(
            f"c.R3nbApp.models[{name!r}] must be a dict with at least a 'model' string "
            "(a litellm model name such as 'openai/gpt-4o-mini')"
        )
    params = {k: v for k, v in entry.items() if k not in _OWN_KEYS}
    cost = None
    if "input_cost_per_token" in entry or "output_cost_per_token" in entry:
        cost = (
            float(entry.get("input_cost_per_token", 0.0)),
            float(entry.get("output_cost_per_token", 0.0)),
        )
    stream_path = str(entry.get("stream_path", "auto"))
    if stream_path not in STREAM_PATHS:
        raise ValueError(
            f"c.R3nbApp.models[{name!r}]['stream_path'] must be one of {', '.join(STREAM_PATHS)}"
        )
    return ModelConfig(
        stream_path=stream_path,
        name=name,
        params=params,
        description=str(entry.get("description", "")),
        api_key_env=entry.get("api_key_env"),
        cost_per_token=cost,
    )


DEMO = ModelConfig(
    name="demo",
    params={"model": DEMO_MODEL},
    description="Offline demo model: no key, no network. Explains r3nb, answers from the prompt.",
    cost_per_token=(0.0, 0.0),
)


class ModelRegistry:
    """Configured models plus the built-in ``demo``; a configured ``demo`` wins."""

    def __init__(self, models: dict[str, Any] | None = None, default: str | None = None) -> None:
        self._models: dict[str, ModelConfig] = {"demo": DEMO}
        for name, entry in (models or {}).items():
            self._models[str(name)] = _parse(str(name), entry)
        if default and default not in self._models:
            raise ValueError(
                f"c.R3nbApp.default_model={default!r} is not a configured model; "
                f"known: {', '.join(sorted(self._models))}"
            )
        configured = [n for n in (models or {}) if n != "demo"]
        self.default = default or (configured[0] if configured else "demo")

    def names(self) -> list[str]:
        return sorted(self._models)

    def resolve(self, name: str | None) -> ModelConfig:
        if name is None or name == "":
            return self._models[self.default]
        model = self._models.get(name)
        if model is None:
            raise BadRequest(f"unknown model {name!r}; known models: {', '.join(self.names())}")
        return model

    def public(self) -> dict[str, Any]:
        return {
            "models": [self._models[n].public() for n in self.names()],
            "default": self.default,
        }
