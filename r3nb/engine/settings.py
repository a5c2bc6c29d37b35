"""The engine's settings, each declared once: name, type, default and what it does.

Three readers, one declaration:

- the Jupyter server extension and the hub service expose each as a configurable trait
  (``c.R3nbApp.<name>``; ``traits()`` builds them from here, help text included);
- embedded mode (no server: plain IPython, VS Code) reads the same names from the
  ``R3nbApp`` section of the Jupyter server config files a person already has
  (``jupyter_server_config.py`` / ``.json`` on ``jupyter --paths``), then from
  ``R3NB_<NAME>`` environment variables, which win (``from_environment``);
- the README's settings table is checked against this module by a test.

A new setting is one field here (plus its use); nothing else lists them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Where embedded mode finds settings in a Jupyter config file: ``c.R3nbApp.<name>``.
CONFIG_SECTION = "R3nbApp"
#: Embedded mode's environment variables: ``R3NB_SNAPSHOT_INTERVAL`` and so on.
ENV_PREFIX = "R3NB_"


def _setting(default: Any, help: str) -> Any:
    """A field with its help text (shown by ``--help-all`` and in the README)."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """What the engine is told at start-up. ``db_path`` has no default here: the server
    and embedded mode each choose theirs (``default_db_path``, ``embedded_db_path``)."""

    db_path: str = _setting(
        "",
        "Where conversations live: a DuckDB file (':memory:' keeps nothing), or a "
        "postgresql:// URL (the hub service).",
    )
    snapshot_interval: float = _setting(
        2.0,
        "Seconds between flushes of a streaming reply's partial text to the DB; also "
        "how often other kernels' panels see it.",
    )
    stale_after: float = _setting(
        300.0,
        "A 'streaming' row untouched this many seconds and owned by no live task is "
        "marked 'error' by the sweeper.",
    )
    cleanup_interval: float = _setting(60.0, "Seconds between sweeps for stale streams.")
    rate_limit_per_minute: float = _setting(
        20.0,
        "Messages a person may send per minute, and separately new conversations per "
        "minute (token buckets); 0 disables.",
    )
    max_prompt_chars: int = _setting(
        100_000, "Largest prompt (with attached notebook context), in characters."
    )
    max_concurrent_streams: int = _setting(
        4, "Replies one person may have streaming at once; 0 disables."
    )
    first_token_timeout: float = _setting(
        120.0, "Seconds to wait for a provider's first token before failing."
    )
    idle_timeout: float = _setting(
        120.0, "Seconds a provider may go silent mid-reply before it fails."
    )
    max_duration: float = _setting(
        3600.0, "Seconds a reply may stream in all before it fails (its text is kept)."
    )
    budgets: dict[str, float] = _setting(  # noqa: RUF009 (a field with a default_factory)
        {},
        'Daily budgets per person: {"tokens_per_day": N, "cost_per_day": USD}. When '
        "one runs out, that person gets 429 until midnight UTC. None by default.",
    )
    model_groups: dict[str, list[str]] = _setting(  # noqa: RUF009 (a default_factory field)
        {},
        'Models only some groups may use: {"gpt-4o": ["teachers"]}. Admins may use every '
        "model; a model not named here is open to everyone. On a hub, groups are "
        "JupyterHub groups; a single-user server knows none (only its admins pass).",
    )
    models_file_interval: float = _setting(
        2.0,
        "Seconds between checks of models_file for a change (0: only on POST models/reload).",
    )


FIELDS = tuple(dataclasses.fields(Settings))
NAMES = tuple(f.name for f in FIELDS)


def defaults() -> dict[str, Any]:
    """Each setting's default value."""
    return {f.name: getattr(Settings(), f.name) for f in FIELDS}


def help_text(name: str) -> str:
    return str(next(f for f in FIELDS if f.name == name).metadata["help"])


def traits() -> dict[str, Any]:
    """A configurable traitlets trait per setting (``db_path`` excepted: each app
    documents its own default), for an application class body::

        class R3nbApp(ExtensionApp):
            locals().update(settings.traits())
    """
    from traitlets import Dict, Float, Int, Unicode  # the kernel side never needs them

    kinds = {float: Float, int: Int, str: Unicode, dict: Dict}
    made: dict[str, Any] = {}
    for f, default in zip(FIELDS, defaults().values(), strict=True):
        if f.name == "db_path":
            continue
        kind = kinds[type(default)]
        made[f.name] = kind(default, help=f.metadata["help"]).tag(config=True)
    return made


def from_values(values: Mapping[str, Any], where: str) -> Settings:
    """``Settings`` from names → values, each converted to its declared type.
    ``ValueError`` naming ``where`` (a variable or a config file) and the setting."""
    chosen: dict[str, Any] = {}
    base = defaults()
    for name, value in values.items():
        if name not in base:
            continue
        kind = type(base[name])
        try:
            if kind is dict:
                parsed = json.loads(value) if isinstance(value, str) else dict(value)
                if not isinstance(parsed, dict):
                    raise ValueError("not a JSON object")
                chosen[name] = parsed
            elif kind is str:
                chosen[name] = str(value)
            else:
                chosen[name] = kind(value)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"{where}: {name} must be {kind.__name__} ({help_text(name)}); got {value!r}"
            ) from e
    return Settings(**chosen)


def from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """Embedded mode's settings: the ``R3nbApp`` section of the Jupyter server config
    files, then ``R3NB_<NAME>`` variables, which win. ``ValueError`` naming the file or
    the variable that holds a bad value."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for path, section in _config_sections():
        chosen = {k: v for k, v in section.items() if k in NAMES and k != "db_path"}
        from_values(chosen, f"{path} (c.{CONFIG_SECTION})")  # say which file is wrong
        values.update(chosen)
    for name in NAMES:
        variable = ENV_PREFIX + name.upper()
        if variable in environ and name != "db_path":  # the file is R3NB_DB's business
            from_values({name: environ[variable]}, variable)
            values[name] = environ[variable]
    return from_values(values, "r3nb settings")


def _config_sections() -> list[tuple[str, dict[str, Any]]]:
    """``c.R3nbApp`` of each ``jupyter_server_config.{json,py}`` on the config path,
    lowest priority first (as ``jupyter server`` merges them)."""
    from jupyter_core.paths import jupyter_config_path
    from traitlets.config.loader import (
        ConfigFileNotFound,
        JSONFileConfigLoader,
        PyFileConfigLoader,
    )

    found: list[tuple[str, dict[str, Any]]] = []
    for directory in reversed(jupyter_config_path()):
        for loader in (JSONFileConfigLoader, PyFileConfigLoader):
            suffix = ".json" if loader is JSONFileConfigLoader else ".py"
            name = "jupyter_server_config" + suffix
            if not os.path.isfile(os.path.join(directory, name)):
                continue
            try:
                config = loader(name, path=directory).load_config()
            except ConfigFileNotFound:
                continue
            except Exception as e:  # a config file that would stop a server too
                where = os.path.join(directory, name)
                raise ValueError(f"{where} cannot be read: {type(e).__name__}: {e}") from e
            if CONFIG_SECTION in config:
                found.append((os.path.join(directory, name), dict(config[CONFIG_SECTION])))
    return found
