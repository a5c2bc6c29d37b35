"""The model registry: names a person picks, mapped to litellm call parameters.

No litellm import here: the registry is consulted on every request and by the kernel
side, and ``import litellm`` costs seconds.

Keys: an entry names where its key lives, never the key in clear in shared config when
avoidable. ``api_key_file`` (read at each call, so a rotated key needs no restart; it
must not be readable by group or others) keeps the key out of every process
environment. ``api_key_env`` is read when the registry is built: the server then
removes the variable from its own environment (``secret_env_names``) so the kernels and
terminals it starts do not inherit it, and keeps its value in memory
(``WithheldEnvironment``), where a registry built again later (a models file reloaded)
still finds it. Keys are never part of what ``public()`` returns, and every key value is
registered with ``redact`` so no error text can carry one.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r3nb.errors import BadRequest

from . import adapters, redact

#: litellm model string of the built-in offline model (a CustomLLM in provider.py).
DEMO_PROVIDER = "r3nb-demo"
DEMO_MODEL = f"{DEMO_PROVIDER}/demo"

#: Keys of a model entry that are ours, not litellm's.
_OWN_KEYS = {
    "api_key_env", "api_key_file", "description", "input_cost_per_token",
    "output_cost_per_token", "stream_path", "system_prompt", "max_context_tokens",
    "send_user", "vision",
}  # fmt: skip
#: What r3nb's lean reader may put in an OpenAI chat-completions body: the fields the
#: OpenAI API defines for a streamed text reply. Anything else a provider wants goes in
#: an explicit ``extra_body``; an unknown key is refused at start-up (it used to be sent
#: as a stray body field, silently: ``litellm_system_prompt`` reached no model).
OPENAI_BODY_KEYS = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
    "presence_penalty", "frequency_penalty", "logit_bias", "user", "response_format",
    "reasoning_effort", "service_tier", "metadata", "store", "verbosity", "n",
})  # fmt: skip
#: Keys of an entry that configure the lean reader's call rather than the body.
LEAN_CALL_KEYS = frozenset({
    "model", "api_base", "base_url", "api_key", "headers", "extra_headers", "timeout",
    "stream_timeout", "max_retries", "custom_llm_provider", "organization", "extra_body",
})  # fmt: skip
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Never echoed to a client, whatever the entry says.
_SECRET_KEYS = {"api_key", "api_key_env", "headers", "extra_headers", "aws_secret_access_key"}
#: The variable litellm itself would read for a provider when an entry names no key.
#: r3nb reads it instead (as if it were the entry's ``api_key_env``), so the server can
#: keep it from the kernels it starts.
PROVIDER_KEY_ENV = {
    "openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY",
    "azure": "AZURE_API_KEY", "mistral": "MISTRAL_API_KEY", "groq": "GROQ_API_KEY",
    "cohere": "COHERE_API_KEY", "deepseek": "DEEPSEEK_API_KEY", "xai": "XAI_API_KEY",
    "openrouter": "OPENROUTER_API_KEY", "together_ai": "TOGETHERAI_API_KEY",
    "fireworks_ai": "FIREWORKS_AI_API_KEY", "perplexity": "PERPLEXITYAI_API_KEY",
}  # fmt: skip


@dataclass(frozen=True)
class ModelConfig:
    name: str
    params: dict[str, Any]  # litellm kwargs: model, api_base, api_key, ...
    description: str = ""
    api_key_env: str | None = None
    cost_per_token: tuple[float, float] | None = None  # (input, output) overrides
    stream_path: str = "auto"
    api_key_file: str | None = None
    #: Sent as the first message of every call (a conversation may set its own).
    system_prompt: str = ""
    #: The context window in tokens, when the entry says (else litellm's model info).
    max_context_tokens: int | None = None
    #: Send the person's name as the OpenAI ``user`` field (a gateway attributes spend).
    send_user: bool = False
    #: Whether the model takes images (None: as litellm's model info says; ``images.py``).
    vision: bool | None = None
    #: The value of ``api_key_env`` as read when the registry was built (never printed).
    env_key: str | None = field(default=None, repr=False, compare=False)

    @property
    def adapter_name(self) -> str:
        """The stream adapter that fetches this model's replies (``adapters.py``).
        ``auto``: r3nb's lean OpenAI-compatible reader for ``openai/…`` (see
        openai_stream.py for the measured reasons), litellm for everything else."""
        if self.stream_path == adapters.AUTO:
            return "lean" if self.litellm_model.startswith("openai/") else "litellm"
        return self.stream_path

    @property
    def litellm_model(self) -> str:
        return str(self.params["model"])

    def for_person(self, name: str | None) -> ModelConfig:
        """This model as called for ``name``: with ``user`` set when the entry opts in
        (``"send_user": true``), so a gateway such as LiteLLM Proxy can attribute spend."""
        if not self.send_user or not name:
            return self
        return dataclasses.replace(self, params={**self.params, "user": name})

    def call_params(self) -> dict[str, Any]:
        """kwargs for ``litellm.acompletion``, with the key from wherever it lives.
        ``ValueError`` saying what to do when the model has no usable key."""
        params = dict(self.params)
        if "api_key" not in params:
            key = self._key()
            if key:
                params["api_key"] = key
        return params

    def _key(self) -> str | None:
        if self.api_key_file:
            try:
                return read_key_file(self.api_key_file)
            except (OSError, ValueError) as e:
                raise ValueError(f"model {self.name!r} cannot use its key file: {e}") from e
        if self.api_key_env and not self.env_key:
            raise ValueError(
                f"model {self.name!r} needs an API key: set the environment variable "
                f"{self.api_key_env} for the Jupyter server and restart it, or give the "
                "model an 'api_key_file' (read at each call: no restart)"
            )
        return self.env_key

    def missing_key_reason(self) -> str | None:
        """Why this model cannot be called for lack of a key; None when it can."""
        try:
            self.call_params()
        except ValueError as e:
            return str(e)
        return None

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.litellm_model,
            "description": self.description,
        }


def _interpolate(value: Any, where: str, environ: Mapping[str, str]) -> Any:
    """``${NAME}`` in any string of an entry becomes that environment variable of the
    server (config files can then be shared without the values in them)."""
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            found = environ.get(match.group(1))
            if found is None:
                raise ValueError(f"{where} uses ${{{match.group(1)}}}, which is not set")
            return found

        return _ENV_REF.sub(lookup, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{where}[{k!r}]", environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, where, environ) for v in value]
    return value


def _check_lean_keys(where: str, config: ModelConfig) -> None:
    unknown = sorted(set(config.params) - OPENAI_BODY_KEYS - LEAN_CALL_KEYS)
    if unknown:
        raise ValueError(
            f"{where} has {', '.join(map(repr, unknown))}, which the "
            "OpenAI chat API does not define. Use 'system_prompt' for a system prompt, put "
            "provider-specific fields in 'extra_body': {...}, or set "
            "'stream_path': 'litellm' to let litellm interpret them."
        )
    if "extra_body" in config.params and not isinstance(config.params["extra_body"], dict):
        raise ValueError(f"{where}['extra_body'] must be a dict")


def _cost(entry: dict[str, Any], where: str) -> tuple[float, float] | None:
    if "input_cost_per_token" not in entry and "output_cost_per_token" not in entry:
        return None
    prices = []
    for key in ("input_cost_per_token", "output_cost_per_token"):
        try:
            prices.append(float(entry.get(key, 0.0)))
        except (TypeError, ValueError):
            raise ValueError(f"{where}[{key!r}] must be a number (US dollars per token)") from None
    return prices[0], prices[1]


def _parse(
    name: str, entry: Any, environ: Mapping[str, str], where: str | None = None
) -> ModelConfig:
    """One entry as a ``ModelConfig``; ``ValueError`` naming ``where`` (the entry, as the
    person wrote it: ``c.R3nbApp.models['gpt']`` or a models file's path) and the fix."""
    where = where or f"c.R3nbApp.models[{name!r}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
        raise ValueError(
            f"{where} must be a dict with at least a 'model' string "
            "(a litellm model name such as 'openai/gpt-4o-mini')"
        )
    entry = _interpolate(entry, where, environ)
    system_prompt = entry.get("system_prompt", "")
    if not isinstance(system_prompt, str):
        raise ValueError(f"{where}['system_prompt'] must be a string")
    params = {k: v for k, v in entry.items() if k not in _OWN_KEYS}
    cost = _cost(entry, where)
    key_file = entry.get("api_key_file")
    if key_file is not None and not isinstance(key_file, str):
        raise ValueError(f"{where}['api_key_file'] must be a path string")
    key_env = entry.get("api_key_env")
    if key_env is not None and not isinstance(key_env, str):
        raise ValueError(f"{where}['api_key_env'] must be the name of an environment variable")
    # Only for the provider's own endpoint: a model at another api_base (a local server,
    # a gateway) must not be sent the provider's key unless its entry names it.
    if (
        key_env is None
        and key_file is None
        and not ({"api_key", "api_base", "base_url"} & set(entry))
    ):
        implicit = PROVIDER_KEY_ENV.get(str(entry["model"]).split("/", 1)[0])
        key_env = implicit if implicit and implicit in environ else None
    env_key = environ.get(key_env) if key_env else None
    for secret in (entry.get("api_key"), env_key):
        if isinstance(secret, str):
            redact.remember(secret)
    stream_path = str(entry.get("stream_path", adapters.AUTO))
    # A plugin's name is looked up among installed packages (a scan of every one's
    # entry points); r3nb's own and ``auto`` need no scan.
    builtin = stream_path == adapters.AUTO or stream_path in adapters.BUILTIN
    if not builtin and stream_path not in (known := adapters.names()):
        raise ValueError(
            f"{where}['stream_path'] is {stream_path!r}; installed stream adapters: "
            f"{', '.join(known)} (a plugin adds one through the 'r3nb.adapters' entry point)"
        )
    send_user = entry.get("send_user", False)
    if not isinstance(send_user, bool):
        raise ValueError(f"{where}['send_user'] must be true or false")
    vision = entry.get("vision")
    if vision is not None and not isinstance(vision, bool):
        raise ValueError(f"{where}['vision'] must be true or false")
    window = entry.get("max_context_tokens")
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int) or window < 256
    ):
        raise ValueError(f"{where}['max_context_tokens'] must be an integer ≥ 256")
    config = ModelConfig(
        send_user=send_user,
        vision=vision,
        max_context_tokens=window,
        system_prompt=system_prompt,
        stream_path=stream_path,
        name=name,
        params=params,
        description=str(entry.get("description", "")),
        api_key_env=key_env,
        cost_per_token=cost,
        api_key_file=os.path.expanduser(key_file) if key_file else None,
        env_key=env_key,
    )
    if config.adapter_name == "lean":
        _check_lean_keys(where, config)
    return config


def read_key_file(path: str) -> str:
    """The key in ``path`` (surrounding whitespace stripped). ``ValueError`` when the
    file is readable by group or others, as ssh refuses such a private key: a key that
    every local user can read is not the admin's any more."""
    file = Path(path)
    mode = file.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    key = file.read_text(encoding="utf-8").strip()
    if not key:
        raise ValueError(f"{path} is empty")
    redact.remember(key)
    return key


DEMO = ModelConfig(
    name="demo",
    params={"model": DEMO_MODEL},
    description="Offline demo model: no key, no network. Explains r3nb, answers from the prompt.",
    cost_per_token=(0.0, 0.0),
)


@dataclass(frozen=True)
class ModelSource:
    """Model entries from one place, and how messages name that place."""

    models: Mapping[str, Any]
    default: str | None = None
    #: An entry is named ``f"{label}[{name!r}]"`` in messages.
    label: str = "c.R3nbApp.models"
    default_label: str = "c.R3nbApp.default_model"


class WithheldEnvironment(Mapping[str, str]):
    """The server's environment as r3nb reads it: ``os.environ``, then the variables r3nb
    removed from it so that kernels and terminals do not inherit them.

    The removed values stay here, in this process's memory, so a registry built again
    while the server runs (a models file reloaded) still finds a key variable that was
    withheld at start-up. A variable set after the server started is in neither: no
    process can see a change to another's environment."""

    def __init__(self) -> None:
        self._withheld: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        found = os.environ.get(name)
        return found if found is not None else self._withheld[name]

    def __iter__(self) -> Iterator[str]:
        return iter(set(os.environ) | set(self._withheld))

    def __len__(self) -> int:
        return len(set(os.environ) | set(self._withheld))

    def withhold(self, names: Iterable[str]) -> list[str]:
        """Move ``names`` out of ``os.environ`` into memory; the names that were there."""
        removed = []
        for name in sorted(set(names)):
            value = os.environ.get(name)
            if value is None:
                continue
            self._withheld[name] = value  # kept before it leaves: no moment without it
            del os.environ[name]
            removed.append(name)
        return removed


class ModelRegistry:
    """Configured models plus the built-in ``demo``; a configured ``demo`` wins.

    ``layers`` add entries from other sources (a models file) after ``models``: an entry
    of a later layer replaces one of the same name, and a later layer's default wins."""

    def __init__(
        self,
        models: Mapping[str, Any] | None = None,
        default: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        layers: Sequence[ModelSource] = (),
    ) -> None:
        env = os.environ if environ is None else environ
        self._models: dict[str, ModelConfig] = {"demo": DEMO}
        configured: list[str] = []
        default_label = "c.R3nbApp.default_model"
        for source in (ModelSource(models or {}, default), *layers):
            for raw_name, entry in source.models.items():
                name = str(raw_name)
                self._models[name] = _parse(name, entry, env, f"{source.label}[{name!r}]")
                if name != "demo" and name not in configured:
                    configured.append(name)
            if source.default:
                default, default_label = source.default, source.default_label
        if default and default not in self._models:
            raise ValueError(
                f"{default_label}={default!r} is not a configured model; "
                f"known: {', '.join(sorted(self._models))}"
            )
        self.default = default or (configured[0] if configured else "demo")

    def names(self) -> list[str]:
        return sorted(self._models)

    def same_as(self, other: ModelRegistry) -> bool:
        """The same models, configured alike, and the same default."""
        return self.default == other.default and self._models == other._models

    def wants_litellm(self) -> bool:
        """Whether a model here needs litellm (``provider.need_litellm``): a configured
        entry on the litellm path, or the default. The built-in demo alone, beside
        configured models, does not: its first reply waits for litellm instead."""
        return any(
            model.adapter_name == "litellm"
            for name, model in self._models.items()
            if model is not DEMO or name == self.default
        )

    def secret_env_names(self) -> set[str]:
        """Environment variables holding keys of configured models: the server removes
        them from its environment once read, so child processes cannot inherit them."""
        return {m.api_key_env for m in self._models.values() if m.api_key_env}

    def get(self, name: str) -> ModelConfig | None:
        return self._models.get(name)

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
