"""The r3nb hub service process: configuration, the engine, the HTTP server.

Configured by its own environment and one JSON file (never by anything a user's server
sends): ``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_SERVICE_NAME``,
``JUPYTERHUB_SERVICE_URL`` and ``JUPYTERHUB_SERVICE_PREFIX`` (a hub-managed service gets
them from the hub; an external one from its admin), and ``--config FILE`` (or
``R3NB_SERVICE_CONFIG``) holding the engine settings: ``db_path`` (a DuckDB path or a
``postgresql://`` URL), ``models``, ``default_model``, ``models_file``, ``budgets``,
``rate_limit_per_minute`` and the other ``Settings`` fields. Provider keys are read from
this process's environment (``api_key_env``) or files (``api_key_file``): the only place
they exist in hub mode. Two tuning knobs, also from the environment:
``R3NB_SERVICE_TOKEN_CACHE_SECONDS`` (HubAuth's cache, 300) and
``R3NB_SERVICE_DELTA_INTERVAL`` (``pacing.py``, 0.04 s).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubAuth
from tornado import web

from r3nb.engine import provider
from r3nb.engine.core import Engine, Settings
from r3nb.engine.model_file import ModelsFile
from r3nb.engine.models import ModelRegistry, ModelSource, WithheldEnvironment
from r3nb.engine.usage import validate_budgets
from r3nb.server import documents

from .access import Guard
from .handlers import NotFoundHandler, ServiceHandler
from .identity import Identities
from .pacing import interval_from_environment
from .wire import API_PATH

_SETTINGS = {f.name for f in dataclasses.fields(Settings)}
#: HubAuth's cache of the hub's answers about tokens (seconds); while the hub cannot be
#: reached, answers older than this still stand for a while (``identity.STALE_GRACE``).
TOKEN_CACHE_SECONDS = 300
ENV_TOKEN_CACHE = "R3NB_SERVICE_TOKEN_CACHE_SECONDS"  # noqa: S105 (a variable name)
_MODEL_KEYS = {"models", "default_model", "models_file"}


class ConfigError(ValueError):
    """A configuration the service cannot start with; the message says what to fix."""


@dataclasses.dataclass
class ServiceConfig:
    name: str
    api_token: str
    api_url: str
    prefix: str
    ip: str
    port: int
    engine: dict[str, Any]
    #: Seconds between two deltas of a reply's live stream (``pacing.py``).
    delta_interval: float = 0.0
    #: How long HubAuth trusts its answer about a token before asking the hub again.
    token_cache_seconds: int = TOKEN_CACHE_SECONDS

    @classmethod
    def from_environment(
        cls, config_file: str | None, ip: str | None = None, port: int | None = None
    ) -> ServiceConfig:
        env = os.environ
        token = env.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise ConfigError("JUPYTERHUB_API_TOKEN is not set: the service's hub token")
        name = env.get("JUPYTERHUB_SERVICE_NAME", "r3nb")
        url = urlparse(env.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
        engine: dict[str, Any] = {}
        path = config_file or env.get("R3NB_SERVICE_CONFIG")
        if path:
            try:
                engine = json.loads(Path(path).read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot read the r3nb service config {path}: {e}") from e
            if not isinstance(engine, dict):
                raise ConfigError(f"{path} must hold a JSON object of settings")
            unknown = set(engine) - _SETTINGS - _MODEL_KEYS
            if unknown:
                raise ConfigError(f"{path}: unknown settings {sorted(unknown)}")
        try:
            delta_interval = interval_from_environment()
            cache = int(env.get(ENV_TOKEN_CACHE) or TOKEN_CACHE_SECONDS)
        except ValueError as e:
            raise ConfigError(f"{e} ({ENV_TOKEN_CACHE} takes whole seconds)") from e
        return cls(
            delta_interval=delta_interval,
            token_cache_seconds=max(0, cache),
            name=name,
            api_token=token,
            api_url=env.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api"),
            prefix=env.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{name}/"),
            ip=ip or url.hostname or "127.0.0.1",
            port=port or url.port or 10101,
            engine=engine,
        )


def build_engine(engine_config: dict[str, Any]) -> Engine:
    """The engine as the extension builds it, from the service's own settings."""
    environ = WithheldEnvironment()
    base = ModelSource(engine_config.get("models") or {}, engine_config.get("default_model"))
    models_file = None
    if engine_config.get("models_file"):
        models_file = ModelsFile(engine_config["models_file"], base, environ)
        registry = models_file.load_blocking()
    else:
        registry = ModelRegistry(base.models, base.default, environ=environ)
    values = {k: v for k, v in engine_config.items() if k in _SETTINGS}
    values["db_path"] = os.path.expanduser(values.get("db_path") or "r3nb-service.duckdb")
    values["budgets"] = validate_budgets(values.get("budgets") or {})
    return Engine(Settings(**values), registry, models_file=models_file)


class Service:
    """Owns what it starts (worker, engine, HTTP server) and stops it in reverse order."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.owns_worker = False
        self.engine: Engine | None = None
        self.server: Any = None

    def start(self) -> None:
        self.owns_worker = provider.start_worker(now=False)  # started as the server's is
        engine = self.engine = build_engine(self.config.engine)
        engine.open()
        engine.recover_now()
        engine.start_timers()
        hub_auth = HubAuth(
            api_token=self.config.api_token,
            api_url=self.config.api_url,
            cache_max_age=self.config.token_cache_seconds,
        )
        kwargs = {
            "engine": engine,
            "identities": Identities(hub_auth, self.config.name),
            "guard": Guard(engine),
            "delta_interval": self.config.delta_interval,
        }
        api = self.config.prefix.rstrip("/") + "/" + API_PATH
        app = web.Application(
            [(api + "?(.*)", ServiceHandler, kwargs)], default_handler_class=NotFoundHandler
        )
        self.server = app.listen(self.config.port, self.config.ip, xheaders=False)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.engine is not None:
            await self.engine.stop()
        # The replies' and watches' last events, ended just now, reach their clients.
        await documents.drain()
        if self.owns_worker:
            await provider.stop_worker()
