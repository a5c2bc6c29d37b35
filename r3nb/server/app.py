"""R3nbApp: the Jupyter server extension that owns r3nb's engine.

Config traits here, wiring in ``initialize_settings``, routes in ``initialize_handlers``,
cleanup in ``stop_extension`` (in reverse order of start). Nothing here relies on the
clean-shutdown hook to keep data: a JupyterHub stops servers with SIGINT and no hook
runs, so every acknowledged write is already committed and start-up recovery settles
whatever was streaming.
"""

from __future__ import annotations

import gc
import getpass
import os
import secrets
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from tornado.ioloop import IOLoop
from traitlets import Bool, Dict, List, Unicode, default

from r3nb.engine import provider, settings
from r3nb.engine.core import Engine, Settings
from r3nb.engine.model_file import ModelsFile
from r3nb.engine.models import ModelRegistry, ModelSource, WithheldEnvironment
from r3nb.engine.store import default_db_path
from r3nb.engine.usage import validate_budgets
from r3nb.protocol import ENV_DEMO_DELAY, ENV_SECRET, ENV_URL

from . import documents, stop_signals
from .handlers import ROUTES
from .relay import RELAY_ROUTES, Relay, service_url_from

#: The only R3NB_* variables kernels started by this server keep: how a kernel finds and
#: authenticates to us, and the demo model's pace (a test knob, harmless). The others
#: configure embedded mode (R3NB_MODELS may hold keys) and are no business of a kernel
#: that has a server.
KERNEL_ENV = {ENV_URL, ENV_SECRET, ENV_DEMO_DELAY}


class R3nbApp(ExtensionApp):
    name = "r3nb"
    load_other_extensions = True

    db_path = Unicode(
        help=settings.help_text("db_path") + " Default: <jupyter data dir>/r3nb/r3nb.duckdb."
    ).tag(config=True)
    # Every engine setting (snapshot_interval, rate limits, timeouts, budgets, …) is a
    # trait declared once in r3nb/engine/settings.py, with its default and help.
    locals().update(settings.traits())

    models = Dict(
        help='Named models: {"name": {"model": "openai/gpt-4o-mini", "api_key_env": '
        '"OPENAI_API_KEY", "api_base": ..., ...}} (litellm kwargs plus api_key_env and '
        "description). The built-in offline model 'demo' is always available."
    ).tag(config=True)
    default_model = Unicode(
        "",
        help="Model used when a request names none. Default: the first configured "
        "model, else 'demo'.",
    ).tag(config=True)
    models_file = Unicode(
        "",
        help='A JSON file {"models": {...}, "default_model": "..."} (entries as in '
        "'models'), read at start-up and again whenever it changes, without a restart. "
        "Its entries replace 'models' entries of the same name; its default_model wins. "
        "A file that cannot be used leaves the models as they were (GET health says why).",
    ).tag(config=True)
    admin_users = List(
        Unicode(),
        help="People who see everyone's usage (GET usage). Default: the server's owner.",
    ).tag(config=True)

    service_url = Unicode(
        "",
        help="Hub mode: the r3nb service's internal base URL (e.g. "
        "http://127.0.0.1:10101/services/r3nb/). Set, this server keeps no keys, no DB "
        "and no engine and relays every API call to the service. Default: $R3NB_SERVICE_URL.",
    ).tag(config=True)

    freeze_gc_at_start = Bool(
        True,
        help="Once the server has started, move the objects it holds then (its modules, "
        "JupyterLab's, r3nb's: ~100,000) out of Python's full garbage collections "
        "(gc.freeze). Each full collection scanned them all and stopped the server's "
        "loop, holding every reply's tokens and every watcher's frames: measured 54-68 ms "
        "for a just-started server's, 0.4-3 ms after (what is made later is still "
        "collected). Those objects live as long as the server anyway. False leaves the "
        "server's garbage collector as Python sets it.",
    ).tag(config=True)

    @default("db_path")
    def _default_db_path(self) -> str:
        return str(default_db_path())

    engine: Engine  # absent in relay mode
    relay: Relay | None = None
    secret: str
    _owns_worker = False

    def initialize_settings(self) -> None:
        service_url = service_url_from(self.service_url)
        if service_url:
            self.relay = Relay(service_url)
            _withhold_from_children(set(), self.log, WithheldEnvironment())
            self._share_secret(r3nb_relay=self.relay)
            self.log.info("r3nb %s: relay mode, service %s", _version(), self.relay.api_url)
            return
        # litellm runs in a worker process, never on this loop. Made here, with the
        # environment as it is before keys are withheld from children; started now only
        # when a configured model needs it (the engine's ``ModelAccess`` says).
        self._owns_worker = provider.start_worker(now=False)
        environ = WithheldEnvironment()
        base = ModelSource(self.models, self.default_model or None)
        models_file = None
        if self.models_file:
            models_file = ModelsFile(self.models_file, base, environ)
            registry = models_file.load_blocking()
        else:
            registry = ModelRegistry(base.models, base.default, environ=environ)
        _withhold_from_children(registry.secret_env_names(), self.log, environ)
        chosen = {name: getattr(self, name) for name in settings.NAMES}
        chosen["db_path"] = os.path.expanduser(chosen["db_path"])
        chosen["budgets"] = validate_budgets(chosen["budgets"])
        self.engine = Engine(Settings(**chosen), registry, models_file=models_file)
        self.engine.open()
        self.engine.recover_now()
        self.engine.start_timers()
        self._share_secret(r3nb_engine=self.engine)
        self.log.info(
            "r3nb %s: store %s, models %s (default %s)%s",
            _version(),
            self.engine.store.path,
            ", ".join(registry.names()),
            registry.default,
            f", watching {models_file.path}" if models_file else "",
        )

    def _share_secret(self, **settings: Any) -> None:
        # Kernels this server starts from now on inherit the secret; the URL follows
        # once the port is final.
        self.secret = secrets.token_urlsafe(32)
        os.environ[ENV_SECRET] = self.secret
        owner = os.environ.get("JUPYTERHUB_USER") or _os_user()
        self.settings.update(
            r3nb_secret=self.secret,
            r3nb_owner=owner,
            r3nb_admins=frozenset(self.admin_users or [owner]),
            **settings,
        )
        IOLoop.current().add_callback(self._publish_url)

    def _publish_url(self) -> None:
        assert self.serverapp is not None
        url = url_path_join(self.serverapp.connection_url, "r3nb/api/")
        os.environ[ENV_URL] = url
        self.log.debug("r3nb: kernels reach the API at %s", url)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        # Runs only when the server runs its own loop (``jupyter server``, JupyterLab,
        # jupyterhub-singleuser), never inside a host that owns the process's signals.
        if self.relay is None:  # a relay has no live replies to save
            stop_signals.install(self)
        if self.freeze_gc_at_start:
            # On the loop's next turn: every extension is loaded by then.
            IOLoop.current().add_callback(gc.freeze)

    def initialize_handlers(self) -> None:
        self.handlers.extend(RELAY_ROUTES if self.relay is not None else ROUTES)

    async def stop_extension(self) -> None:
        if self.relay is not None:
            await self.relay.close()
        else:
            await self.engine.stop()
            # The replies' and watches' last events, ended just now, reach their clients.
            await documents.drain()
        if self._owns_worker:
            await provider.stop_worker()
        for key in (ENV_URL, ENV_SECRET):
            os.environ.pop(key, None)


def _withhold_from_children(key_names: set[str], log: Any, environ: WithheldEnvironment) -> None:
    """Remove keys (read into the registry by now) and embedded-mode settings from this
    process's environment, which every kernel and terminal it starts inherits. ``environ``
    keeps their values in this process's memory: a models file reloaded later may name
    one of them.

    This is not a boundary against the kernels: they run as the same OS user and can
    read ``/proc/<server pid>/environ`` (the environment the server was started with)
    or the server's memory. It keeps keys out of ``os.environ`` in notebooks, of
    ``!env`` and of tracebacks; ``api_key_file`` keeps them out of every environment;
    hub mode (a separate service) is where keys leave users' reach.
    """
    names = key_names | {k for k in os.environ if k.startswith("R3NB_") and k not in KERNEL_ENV}
    removed = environ.withhold(names)
    if removed:
        log.info("r3nb: kernels and terminals will not inherit %s", ", ".join(removed))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "owner"


def _version() -> str:
    from r3nb import __version__

    return __version__
