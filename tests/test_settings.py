"""Settings are declared once (r3nb/engine/settings.py) and read the same way everywhere:
the server's traits, embedded mode (Jupyter config files, then R3NB_<NAME>), the README."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from r3nb.engine import settings
from r3nb.kernel.embedded import EmbeddedClient
from r3nb.server.app import R3nbApp

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Jupyter config dir of the test's own, and no R3NB_* settings inherited."""
    folder = tmp_path / "jupyter-config"
    folder.mkdir()
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(folder))
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(folder))
    for name in settings.NAMES:
        monkeypatch.delenv(settings.ENV_PREFIX + name.upper(), raising=False)
    return folder


@pytest.mark.fast
def test_the_server_has_one_trait_per_setting_with_its_default_and_help() -> None:
    app = R3nbApp()
    for name, default in settings.defaults().items():
        trait = app.traits()[name]
        assert trait.metadata.get("config") is True, name
        assert trait.help == settings.help_text(name) or name == "db_path", name
        if name != "db_path":  # the server's default file lives in its data dir
            assert getattr(app, name) == default, name


@pytest.mark.fast
def test_the_readme_table_lists_every_setting_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| `?([^|`]*)`? \|", README.read_text(), re.M))
    for name, default in settings.defaults().items():
        assert name in rows, f"README's settings table lacks {name}"
        if name != "db_path":
            written = rows[name]
            assert (json.loads(written) if written[:1] in "{[" else float(written)) == default


@pytest.mark.fast
def test_embedded_mode_reads_the_server_config_file_and_the_environment_wins(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (config_dir / "jupyter_server_config.json").write_text(
        json.dumps({"R3nbApp": {"max_duration": 30, "snapshot_interval": 0.5, "models": {}}})
    )
    (config_dir / "jupyter_server_config.py").write_text("c.R3nbApp.idle_timeout = 7\n")
    chosen = settings.from_environment({"R3NB_SNAPSHOT_INTERVAL": "0.25"})
    assert (chosen.max_duration, chosen.snapshot_interval, chosen.idle_timeout) == (30, 0.25, 7)
    assert chosen.budgets == {}
    budgets = settings.from_environment({"R3NB_BUDGETS": '{"tokens_per_day": 10}'})
    assert budgets.budgets == {"tokens_per_day": 10}


@pytest.mark.fast
def test_a_bad_value_names_where_it_was_written(config_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"R3NB_MAX_DURATION: max_duration must be float"):
        settings.from_environment({"R3NB_MAX_DURATION": "an hour"})
    (config_dir / "jupyter_server_config.json").write_text(
        json.dumps({"R3nbApp": {"max_concurrent_streams": "many"}})
    )
    with pytest.raises(ValueError, match=r"jupyter_server_config\.json.*max_concurrent"):
        settings.from_environment({})
    (config_dir / "jupyter_server_config.json").unlink()
    (config_dir / "jupyter_server_config.py").write_text("c.R3nbApp.idle_timeout = (\n")
    with pytest.raises(ValueError, match=r"jupyter_server_config\.py cannot be read"):
        settings.from_environment({})


@pytest.fixture
def embedded(
    config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmbeddedClient]:
    monkeypatch.setenv("R3NB_MAX_DURATION", "42")
    (config_dir / "jupyter_server_config.json").write_text(
        json.dumps({"R3nbApp": {"rate_limit_per_minute": 3}})
    )
    client = EmbeddedClient(str(tmp_path / "embedded.duckdb"))
    try:
        yield client
    finally:
        client.close()


def test_an_embedded_engine_runs_with_those_settings(embedded: EmbeddedClient) -> None:
    chosen = embedded.engine.settings
    assert (chosen.max_duration, chosen.rate_limit_per_minute) == (42, 3)
    assert embedded.engine.hub.max_duration == 42
